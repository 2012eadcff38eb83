"""scikit-learn 0.18's cv=10 folds: hand-checked assignments, and where today's differ."""
import numpy as np
import pytest
from sklearn.model_selection import KFold, StratifiedKFold

from transfer_jax import folds


def test_kfold_ids_match_sklearn_kfold():
    ids = folds.kfold_ids(23, 4)
    for k, (_, test) in enumerate(KFold(4).split(np.zeros(23))):
        assert (np.flatnonzero(ids == k) == test).all()


def test_stratified_018_by_hand():
    y = np.array([0] * 5 + [1] * 12)
    ids = folds.stratified_ids_018(y, 3)
    # class 0: KFold(3) over 5 rows -> 2, 2, 1; class 1: 4, 4, 4, each class in row order
    assert ids.tolist() == [0, 0, 1, 1, 2] + [0] * 4 + [1] * 4 + [2] * 4


def test_small_class_padded_then_dropped():
    y = np.array([0, 0] + [1] * 6)
    ids = folds.stratified_ids_018(y, 3)
    # class 0 split over max(2, 3) = 3 dummy rows: one row each in folds 0 and 1, none in 2
    assert ids[:2].tolist() == [0, 1]
    with pytest.raises(ValueError, match="greater than the number of members"):
        folds.stratified_ids_018(np.array([0, 1, 1]), 3)


def test_interleaved_labels_follow_row_order_within_class():
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    ids = folds.stratified_ids_018(y, 2)
    assert ids[y == 0].tolist() == [0, 0, 1, 1] and ids[y == 1].tolist() == [0, 0, 1, 1]


def test_differs_from_modern_stratified_kfold_on_unbalanced_classes():
    y = np.repeat([0, 1, 2], [23, 529, 97])
    old = folds.paper_folds(y, "classification", 10)
    new = list(StratifiedKFold(10).split(np.zeros(len(y)), y))
    assert any(set(o[1]) != set(n[1]) for o, n in zip(old, new))
    assert sorted(np.concatenate([te for _, te in old]).tolist()) == list(range(len(y)))


def test_paper_folds_regression_is_plain_kfold_and_predefined():
    f = folds.paper_folds(np.linspace(0, 1, 25), "regression", 10)
    assert [len(te) for _, te in f] == [3] * 5 + [2] * 5
    p = folds.predefined_folds(np.array([3, 1, 3, 2, 1]))
    assert [te.tolist() for _, te in p] == [[1, 4], [3], [0, 2]]
    with pytest.raises(ValueError, match="task_type"):
        folds.paper_folds(np.zeros(4), "ranking")
