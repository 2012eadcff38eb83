"""The JAX ridge screen equals scikit-learn's Ridge / RidgeClassifier per combination."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from transfer_jax import linear_probe
from transfer_jax.folds import paper_folds


def _blocks(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3 * 4)) * np.repeat([1.0, 5.0, 0.2], 4)
    return X, rng


def test_block_masks():
    m = linear_probe.block_masks([2, 3], [[0], [1], [0, 1]])
    assert m.tolist() == [[1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]


def test_regression_matches_sklearn_ridge():
    X, rng = _blocks()
    y = X[:, 4] * 0.1 - X[:, 0] + rng.normal(size=len(X))
    folds = paper_folds(y, "regression", 4)
    combos = [[0], [1, 2], [0, 1, 2]]
    res = linear_probe.screen(X, y, linear_probe.block_masks([4, 4, 4], combos), folds,
                              task_type="regression", lambdas=(0.01, 1.0))
    for i, combo in enumerate(combos):
        cols = np.concatenate([np.arange(4 * b, 4 * b + 4) for b in combo])
        for k, lam in enumerate((0.01, 1.0)):
            for f, (tr, te) in enumerate(folds):
                sc = StandardScaler().fit(X[tr][:, cols])
                model = Ridge(alpha=lam * len(tr)).fit(sc.transform(X[tr][:, cols]), y[tr])
                ref = r2_score(y[te], model.predict(sc.transform(X[te][:, cols])))
                assert res.fold_scores[i, k, f] == pytest.approx(ref, abs=2e-4)


def test_classification_matches_ridge_classifier():
    X, rng = _blocks(n=150, seed=1)
    y = np.sort(np.digitize(X[:, 0] + X[:, 5] / 5 + rng.normal(size=len(X)) * 0.5, [-0.5, 0.5]))
    folds = paper_folds(y, "classification", 5)
    res = linear_probe.screen(X, y, linear_probe.block_masks([4, 4, 4], [[0, 1]]), folds,
                              lambdas=(0.1,), names=["12"])
    correct = 0
    for tr, te in folds:
        sc = StandardScaler().fit(X[tr][:, :8])
        model = RidgeClassifier(alpha=0.1 * len(tr)).fit(sc.transform(X[tr][:, :8]), y[tr])
        correct += (model.predict(sc.transform(X[te][:, :8])) == y[te]).sum()
    assert res.scores[0, 0] == pytest.approx(correct / len(y), abs=1e-6)
    name, score, lam, fold_scores = res.best()[0]
    assert name == "12" and lam == 0.1 and len(fold_scores) == 5
