"""A minimal downstream evaluator: SVM grid search with k-fold CV, as in the paper.

Pipeline(scaler -> SVC/SVR) inside GridSearchCV over the paper's grid; the reported
score is `best_score_` (the CV score of the best setting, hence optimistic: the
hyper-parameters are chosen on the same folds). Folds are not shuffled by default,
like the authors' `cv=10` (StratifiedKFold for classifiers, KFold for SVR, over the
row order given). Exact reproduction of their numbers also needs scikit-learn 0.18's
fold assignment; that is not attempted here.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from transfer_jax.config import N_LAYERS

_C_VALUES: tuple[float, ...] = (0.1, 2.0, 8.0, 32.0)
# 'auto' is sklearn's 1 / n_features.
_GAMMAS: tuple[float | str, ...] = tuple(2.0**-k for k in (3, 5, 7, 9, 11, 13)) + ("auto",)

# The paper's grid, as model parameters (no pipeline prefix): 4 * 7 RBF + 4 linear = 32.
PAPER_GRID: tuple[dict[str, list], ...] = (
    {"kernel": ["rbf"], "C": list(_C_VALUES), "gamma": list(_GAMMAS)},
    {"kernel": ["linear"], "C": list(_C_VALUES)},
)

TASK_TYPES = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Outcome of one grid search.

    score: best_score_ (mean accuracy or R^2 over folds of the best setting);
    score_std: std over folds of that setting; best_params: e.g.
    {"kernel": "rbf", "C": 2.0, "gamma": 0.125}; n_splits: folds actually used.
    """

    score: float
    score_std: float
    best_params: dict[str, Any]
    n_samples: int
    n_features: int
    n_splits: int


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


def _pipeline_grid(grid: tuple[dict[str, list], ...]) -> list[dict[str, list]]:
    """Prefix model parameters with the pipeline step name ("model__C", ...)."""
    return [{f"model__{k}": list(v) for k, v in g.items()} for g in grid]


def _to_json(value: Any) -> Any:
    """numpy scalars -> Python scalars, so best_params survives json.dumps."""
    return value.item() if isinstance(value, np.generic) else value


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


def _folds(y: np.ndarray, task_type: str, n_splits: int, shuffle: bool, seed: int):
    """CV splitter, with n_splits clipped so every fold is valid.

    Classification: clipped to the smallest class count (StratifiedKFold needs each
    class in every fold); regression: clipped to the number of samples. Fewer than 2
    folds is an error.
    """
    if task_type == "classification":
        limit = int(np.unique(y, return_counts=True)[1].min())
        what = "the smallest class has"
    else:
        limit = len(y)
        what = "there are"
    k = min(n_splits, limit)
    if k < 2:
        raise ValueError(f"cannot cross-validate: {what} only {limit} sample(s); need at least 2")
    kw = {"shuffle": True, "random_state": seed} if shuffle else {"shuffle": False}
    return (StratifiedKFold if task_type == "classification" else KFold)(n_splits=k, **kw)


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
) -> ProbeResult:
    """Grid-search an SVC/SVR on features X (N, D) with targets y (N,).

    scale=True standardises features inside each training fold; scale=False matches
    the published numbers (the authors' scaler was a no-op). Folds are in row order
    unless shuffle=True (then seeded by `seed`). Scoring: accuracy or R^2.
    """
    X, y = _check_inputs(X, y, task_type)
    cv = _folds(y, task_type, n_splits, shuffle, seed)
    classification = task_type == "classification"
    pipe = Pipeline(
        [
            ("scaler", StandardScaler() if scale else "passthrough"),
            ("model", SVC() if classification else SVR()),
        ]
    )
    search = GridSearchCV(
        pipe,
        _pipeline_grid(grid),
        scoring="accuracy" if classification else "r2",
        cv=cv,
        n_jobs=n_jobs,
        refit=False,
    )
    search.fit(X, y)
    best = search.best_index_
    params = {k.removeprefix("model__"): _to_json(v) for k, v in search.best_params_.items()}
    return ProbeResult(
        score=float(search.best_score_),
        score_std=float(search.cv_results_["std_test_score"][best]),
        best_params=params,
        n_samples=int(X.shape[0]),
        n_features=int(X.shape[1]),
        n_splits=int(cv.get_n_splits()),
    )
