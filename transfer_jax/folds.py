"""Cross-validation folds as scikit-learn 0.18 made them for `GridSearchCV(cv=10)`.

The authors ran scikit-learn 0.18, where `cv=10` meant StratifiedKFold(10) without
shuffling for a classifier and KFold(10) for a regressor. 0.18's StratifiedKFold
assigned samples to folds differently from scikit-learn >= 0.22: for each class, the
class's samples (in row order) were split by KFold(n_splits) run over
`max(count, n_splits)` dummy rows, and test fold k of every class formed fold k (rows
past the class count dropped). Today's StratifiedKFold deals samples out round-robin
by sorted class instead, which changes the folds, hence the scores (Ballroom layer 1 is
3086 / 4180 = .73828 only with the old folds).

Folds are returned as lists of (train, test) index arrays, sorted, as the 0.18 splitter
yielded them; `fold_ids` gives the equivalent "test fold of each row" vector.
"""
from __future__ import annotations

import numpy as np

Folds = list[tuple[np.ndarray, np.ndarray]]


def kfold_sizes(n_samples: int, n_splits: int) -> np.ndarray:
    """KFold's fold sizes: n // k each, the first n % k folds one larger."""
    if not 2 <= n_splits <= n_samples:
        raise ValueError(f"need 2 <= n_splits <= n_samples, got n_splits={n_splits}, n_samples={n_samples}")
    sizes = np.full(n_splits, n_samples // n_splits, dtype=np.int64)
    sizes[: n_samples % n_splits] += 1
    return sizes


def kfold_ids(n_samples: int, n_splits: int) -> np.ndarray:
    """Test fold of each row for KFold(n_splits, shuffle=False): consecutive blocks."""
    return np.repeat(np.arange(n_splits), kfold_sizes(n_samples, n_splits))


def stratified_ids_018(y: np.ndarray, n_splits: int) -> np.ndarray:
    """Test fold of each row for scikit-learn 0.18's StratifiedKFold(n_splits, shuffle=False).

    Per class: KFold(n_splits) over max(count, n_splits) dummy rows, fold k's test
    positions (those < count) become fold k. A class smaller than n_splits is absent
    from its last folds (0.18 warned, then went on).
    """
    y = np.asarray(y)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if np.all(counts < n_splits):
        raise ValueError(f"n_splits={n_splits} is greater than the number of members in every class")
    ids = np.empty(len(y), dtype=np.int64)
    for c, count in enumerate(counts):
        per_class = kfold_ids(max(int(count), n_splits), n_splits)[:count]
        ids[inverse == c] = per_class
    return ids


def folds_from_ids(ids: np.ndarray) -> Folds:
    """(train, test) index pairs from a fold-id vector, fold 0 first; empty folds skipped."""
    ids = np.asarray(ids)
    out = []
    for k in np.unique(ids):
        test = np.flatnonzero(ids == k)
        out.append((np.flatnonzero(ids != k), test))
    return out


def paper_folds(y: np.ndarray, task_type: str, n_splits: int = 10) -> Folds:
    """The folds of the authors' `cv=10`: 0.18 StratifiedKFold for classification,
    KFold for regression, over the given row order (no shuffling)."""
    if task_type == "classification":
        return folds_from_ids(stratified_ids_018(y, n_splits))
    if task_type == "regression":
        return folds_from_ids(kfold_ids(len(y), n_splits))
    raise ValueError(f"task_type must be 'classification' or 'regression', got {task_type!r}")


def predefined_folds(fold_of_row: np.ndarray) -> Folds:
    """Folds from a column of fold labels (UrbanSound8K's `fold`): PredefinedSplit."""
    return folds_from_ids(np.unique(np.asarray(fold_of_row), return_inverse=True)[1])
