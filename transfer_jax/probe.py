"""The downstream evaluator: SVM grid search with k-fold CV, faithful to the paper or honest.

`evaluate` is the paper's GridSearchCV: Pipeline(scaler -> SVC/SVR) over the paper's grid,
reporting `best_score_` (the CV score of the best setting, hence optimistic). With
scale=False, iid=True and the default folds it is the authors' protocol exactly: their
scaler was a no-op, their scikit-learn 0.18 built `cv=10` as StratifiedKFold (0.18's
fold assignment, `transfer_jax.folds`) or KFold, unshuffled, over the row order, and
weighted fold scores by fold size. Kernels are precomputed and shared
(`transfer_jax.kernel_grid`), so it is several times faster than GridSearchCV with the
same scores.

`heldout_evaluate` scores a fixed train / valid / test split (select on valid, refit on
train + valid, test once).

`nested_evaluate` is the honest protocol: a real StandardScaler fitted inside each
training fold, hyper-parameters chosen by an inner CV on the outer training fold only,
the outer test folds scored once; mean and std over outer folds.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from transfer_jax import folds as folds_lib
from transfer_jax import kernel_grid
from transfer_jax.config import N_LAYERS

_C_VALUES: tuple[float, ...] = (0.1, 2.0, 8.0, 32.0)
# 'auto' is sklearn's 1 / n_features.
_GAMMAS: tuple[float | str, ...] = tuple(2.0**-k for k in (3, 5, 7, 9, 11, 13)) + ("auto",)

# The paper's grid, as model parameters (no pipeline prefix): 4 * 7 RBF + 4 linear = 32.
PAPER_GRID: tuple[dict[str, list], ...] = (
    {"kernel": ["rbf"], "C": list(_C_VALUES), "gamma": list(_GAMMAS)},
    {"kernel": ["linear"], "C": list(_C_VALUES)},
)

TASK_TYPES = kernel_grid.TASK_TYPES


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Outcome of one evaluation.

    score: best_score_ (faithful: fold-size weighted when iid) or, for nested CV, the
    mean outer-fold score; score_std: std over folds (of the best setting, or of the
    outer folds); best_params: e.g. {"kernel": "rbf", "C": 2.0, "gamma": 0.125} (nested:
    the setting chosen most often); n_splits: folds actually used; fold_scores: the
    per-fold scores behind score; exact_fits: linear-kernel fits done by the exact
    solver instead of libsvm (see kernel_grid).
    """

    score: float
    score_std: float
    best_params: dict[str, Any]
    n_samples: int
    n_features: int
    n_splits: int
    fold_scores: tuple[float, ...] = ()
    exact_fits: int = 0


def layer_combinations(n_layers: int = N_LAYERS) -> list[str]:
    """All non-empty layer subsets as 1-based strings, by size then lexicographically.

    For 5 layers: ["1", ..., "5", "12", "13", ..., "45", "123", ..., "12345"] (31).
    """
    if not 1 <= n_layers <= 9:
        raise ValueError(f"single-digit layer names support 1 to 9 layers, got {n_layers}")
    digits = "".join(str(i) for i in range(1, n_layers + 1))
    return ["".join(c) for r in range(1, n_layers + 1) for c in itertools.combinations(digits, r)]


def grid_size(grid: tuple[dict[str, list], ...] = PAPER_GRID) -> int:
    """Number of settings a grid (list of dicts of value lists) spans: 32 for the paper's."""
    return sum(int(np.prod([len(v) for v in g.values()])) for g in grid)


def _check_inputs(X: np.ndarray, y: np.ndarray, task_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes, finiteness and labels; returns X (N, D) float64 and y (N,)."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"X and y lengths differ: {len(X)} rows of features vs {len(y)} targets")
    bad_rows = ~np.isfinite(X).all(axis=1)
    if bad_rows.any():
        raise ValueError(
            f"features contain NaN or inf in {int(bad_rows.sum())} of {len(X)} rows "
            f"(first bad row: {int(np.flatnonzero(bad_rows)[0])})"
        )
    if task_type == "classification":
        if len(np.unique(y)) < 2:
            raise ValueError(f"classification needs at least 2 classes, got {np.unique(y).tolist()}")
    else:
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError(f"regression targets contain NaN or inf in {int((~np.isfinite(y)).sum())} rows")
    return X, y


def n_splits_for(y: np.ndarray, task_type: str, n_splits: int) -> int:
    """n_splits clipped so that every fold is valid: to the smallest class count
    (classification) or the number of samples (regression); fewer than 2 is an error."""
    if task_type == "classification":
        limit = int(np.unique(y, return_counts=True)[1].min())
        what = "the smallest class has"
    else:
        limit = len(y)
        what = "there are"
    k = min(n_splits, limit)
    if k < 2:
        raise ValueError(f"cannot cross-validate: {what} only {limit} sample(s); need at least 2")
    return k


def make_folds(y: np.ndarray, task_type: str, n_splits: int = 10, *, shuffle: bool = False,
               seed: int = 0) -> folds_lib.Folds:
    """CV folds, n_splits clipped (`n_splits_for`). Unshuffled: the authors' (scikit-learn
    0.18 StratifiedKFold or KFold over the row order); shuffled: today's, seeded."""
    k = n_splits_for(y, task_type, n_splits)
    if not shuffle:
        return folds_lib.paper_folds(y, task_type, k)
    cls = StratifiedKFold if task_type == "classification" else KFold
    return [(tr, te) for tr, te in cls(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)]


def evaluate(
    X: np.ndarray,
    y: np.ndarray,
    *,
    task_type: str = "classification",
    scale: bool = True,
    n_splits: int = 10,
    grid: tuple[dict[str, list], ...] = PAPER_GRID,
    n_jobs: int = 1,
    seed: int = 0,
    shuffle: bool = False,
    iid: bool = True,
    folds: folds_lib.Folds | None = None,
    best_only: bool = True,
) -> ProbeResult:
    """Grid-search an SVC/SVR on features X (N, D) with targets y (N,); best_score_.

    scale=True standardises features inside each training fold; scale=False with the
    defaults (0.18 folds in row order, iid=True) is the authors' protocol. `folds`
    overrides the splitting (e.g. predefined folds). n_jobs > 1 runs folds in parallel.
    best_only skips the fits that cannot change the result (`kernel_grid.race`; same
    score, setting and fold scores; only with n_jobs=1).
    """
    X, y = _check_inputs(X, y, task_type)
    folds = folds if folds is not None else make_folds(y, task_type, n_splits, shuffle=shuffle, seed=seed)
    result = _grid(X, y, folds, grid, task_type=task_type, scale=scale, n_jobs=n_jobs,
                   best_only=best_only, iid=iid)
    best = result.best_index(iid)
    return ProbeResult(
        score=result.best_score(iid),
        score_std=result.best_std(iid),
        best_params=result.best_params(iid),
        n_samples=int(X.shape[0]),
        n_features=int(X.shape[1]),
        n_splits=len(folds),
        fold_scores=tuple(float(v) for v in result.fold_scores[best]),
        exact_fits=int(result.exact_fits.sum()),
    )


def nested_evaluate(
    X: np.ndarray,
    y: np.ndarray,
    *,
    task_type: str = "classification",
    folds: folds_lib.Folds | None = None,
    n_splits: int = 10,
    inner_splits: int = 5,
    grid: tuple[dict[str, list], ...] = PAPER_GRID,
    scale: bool = True,
    seed: int = 0,
    n_jobs: int = 1,
) -> ProbeResult:
    """Honest CV: per outer training fold, an inner shuffled CV picks the setting (mean
    inner score), which is refitted on the whole outer training fold and scored on its
    test fold once. Outer folds: `folds`, else shuffled stratified/plain KFold(n_splits)."""
    X, y = _check_inputs(X, y, task_type)
    folds = folds if folds is not None else make_folds(y, task_type, n_splits, shuffle=True, seed=seed)
    outer = _parallel(n_jobs)(
        _delayed(_nested_fold)(X, y, tr, te, task_type, inner_splits, grid, scale, seed) for tr, te in folds)
    scores = np.array([o[0] for o in outer])
    chosen = Counter(tuple(sorted(o[1].items())) for o in outer).most_common(1)[0][0]
    return ProbeResult(
        score=float(scores.mean()),
        score_std=float(scores.std()),
        best_params=dict(chosen),
        n_samples=int(X.shape[0]),
        n_features=int(X.shape[1]),
        n_splits=len(folds),
        fold_scores=tuple(float(v) for v in scores),
        exact_fits=int(sum(o[2] for o in outer)),
    )


def heldout_evaluate(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    valid: np.ndarray,
    test: np.ndarray,
    *,
    task_type: str = "classification",
    grid: tuple[dict[str, list], ...] = PAPER_GRID,
    scale: bool = True,
) -> ProbeResult:
    """Held-out protocol (a fixed train / valid / test split): every setting is fitted on
    train and scored on valid (scaler fitted on train); the best (first of the grid order
    on ties) is refitted on train + valid (scaler refitted) and scored once on test.
    score: the test score; score_std: NaN (one test set); fold_scores: (test score,)."""
    X, y = _check_inputs(X, y, task_type)
    train, valid, test = (np.asarray(a, dtype=np.int64) for a in (train, valid, test))
    for name, part in (("train", train), ("valid", valid), ("test", test)):
        if len(part) == 0:
            raise ValueError(f"held-out protocol: the {name} split is empty")
    if task_type == "classification" and len(np.unique(y[train])) < 2:
        raise ValueError("held-out protocol: the train split has fewer than 2 classes")
    search = kernel_grid.grid_scores(X, y, [(train, valid)], grid, task_type=task_type, scale=scale)
    setting = search.best_params(iid=False)
    train_valid = np.sort(np.concatenate([train, valid]))
    pred = kernel_grid.fit_predict(X, y, train_valid, test, setting, task_type=task_type, scale=scale)
    score = kernel_grid.score_predictions(task_type, y[test], pred)
    return ProbeResult(
        score=float(score),
        score_std=float("nan"),
        best_params=setting,
        n_samples=int(len(train) + len(valid) + len(test)),
        n_features=int(X.shape[1]),
        n_splits=1,
        fold_scores=(float(score),),
        exact_fits=int(search.exact_fits.sum()),
    )


def _nested_fold(X, y, train, test, task_type, inner_splits, grid, scale, seed):
    """One outer fold of nested CV: (test score, chosen setting, exact fits)."""
    inner = make_folds(y[train], task_type, inner_splits, shuffle=True, seed=seed)
    search = kernel_grid.grid_scores(X[train], y[train], inner, grid, task_type=task_type, scale=scale,
                                     best_only=True, iid=False)
    setting = search.best_params(iid=False)
    pred = kernel_grid.fit_predict(X, y, train, test, setting, task_type=task_type, scale=scale)
    return kernel_grid.score_predictions(task_type, y[test], pred), setting, int(search.exact_fits.sum())


def _grid(X, y, folds, grid, *, task_type, scale, n_jobs, best_only, iid) -> kernel_grid.GridScores:
    """kernel_grid.grid_scores, or its folds in parallel (no kernel sharing across folds)."""
    if n_jobs == 1 or len(folds) == 1:
        return kernel_grid.grid_scores(X, y, folds, grid, task_type=task_type, scale=scale,
                                       best_only=best_only, iid=iid)
    parts = _parallel(n_jobs)(
        _delayed(kernel_grid.grid_scores)(X, y, [f], grid, task_type=task_type, scale=scale) for f in folds)
    return kernel_grid.GridScores(parts[0].settings, np.concatenate([p.fold_scores for p in parts], 1),
                                  np.concatenate([p.fold_sizes for p in parts]),
                                  np.concatenate([p.exact_fits for p in parts], 1))


def _parallel(n_jobs: int):
    from joblib import Parallel

    return Parallel(n_jobs=n_jobs)


def _delayed(fn):
    from joblib import delayed

    return delayed(fn)
