"""SVM grid search over precomputed kernels: GridSearchCV's scores, computed faster.

The paper's grid has 7 RBF widths x 4 C values + 4 linear C values. GridSearchCV refits
from the raw features for each (setting, fold), evaluating every kernel entry anew in
libsvm. Here each kernel matrix is built once and shared:

- without scaling (the authors' no-op scaler), pairwise squared distances and the Gram
  matrix are computed once per feature set; each gamma's RBF kernel is
  exp(-gamma * D); each fold slices its train/test blocks once and shares them across
  the C values (`SVC(kernel='precomputed')`, same libsvm solver, same solutions);
- with scaling (a real StandardScaler fitted on each training fold), D is recomputed per
  fold from the scaled features, then shared across gammas and C values as above;
- settings whose kernel is identical (gamma='auto' = 1 / n_features = 2^-5 for a single
  32-d layer) are fitted once;
- the per-fold blocks (Gram, distances, each gamma's kernel) are written into buffers
  allocated once per grid search (`Workspace`) with the same floating-point operations,
  so the kernels are bit-identical to the plain expressions: at UrbanSound8K's size a
  fold's block is 8,732 x 7,859 (0.55 GB), and allocating fresh arrays of that size
  (page faults) took longer than computing them (measured: exp(-gamma D) 2.9 s with a
  fresh result, 0.2 s in place).

Fold scores are aggregated like scikit-learn 0.18's GridSearchCV(iid=True): weighted by
test-fold size (accuracy: total correct / N), or plainly averaged with iid=False.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import ParameterGrid
from sklearn.svm import SVC, SVR

from transfer_jax import linear_svm
from transfer_jax.folds import Folds

TASK_TYPES = ("classification", "regression")
Grid = Sequence[dict[str, list]]


@dataclasses.dataclass(frozen=True)
class GridScores:
    """Scores of every setting of a grid on every fold.

    settings: the grid in ParameterGrid order (GridSearchCV's candidate order);
    fold_scores: (n_settings, n_folds) accuracy or R^2 (NaN: not fitted, see `race`);
    fold_sizes: (n_folds,) test sizes; exact_fits: where libsvm was replaced by the exact
    linear solver (see fold_scores).
    """

    settings: list[dict[str, Any]]
    fold_scores: np.ndarray
    fold_sizes: np.ndarray
    exact_fits: np.ndarray | None = None  # (n_settings, n_folds): linear fits by the exact solver

    def mean_scores(self, iid: bool = True) -> np.ndarray:
        """Per-setting CV score: fold-size weighted (iid=True, 0.18's default) or plain mean;
        NaN for settings a race skipped (`race`)."""
        weights = self.fold_sizes if iid else None
        return np.average(self.fold_scores, axis=1, weights=weights)

    def best_index(self, iid: bool = True) -> int:
        """GridSearchCV's best_index_: the first setting with the highest score."""
        return int(np.nanargmax(self.mean_scores(iid)))

    def best_score(self, iid: bool = True) -> float:
        return float(self.mean_scores(iid)[self.best_index(iid)])

    def best_params(self, iid: bool = True) -> dict[str, Any]:
        return dict(self.settings[self.best_index(iid)])

    def best_std(self, iid: bool = True) -> float:
        """Std over folds of the best setting (GridSearchCV's std_test_score, unweighted)."""
        return float(np.std(self.fold_scores[self.best_index(iid)]))


def expand_grid(grid: Grid) -> list[dict[str, Any]]:
    """The settings of a grid (list of dicts of value lists) in GridSearchCV's order."""
    return [{k: _plain(v) for k, v in s.items()} for s in ParameterGrid(list(grid))]


def resolve_gamma(gamma: float | str, n_features: int) -> float:
    """scikit-learn's numeric gamma: 'auto' = 1 / n_features (the only string 0.18 knew)."""
    if gamma == "auto":
        return 1.0 / n_features
    if isinstance(gamma, str):
        raise ValueError(f"gamma must be a number or 'auto', got {gamma!r}")
    return float(gamma)


def kernel_key(setting: dict[str, Any], n_features: int) -> tuple[str, float | None]:
    """Settings with the same key share one kernel matrix: ('rbf', gamma) or ('linear', None)."""
    kernel = setting.get("kernel", "rbf")
    if kernel == "rbf":
        return "rbf", resolve_gamma(setting.get("gamma", "auto"), n_features)
    if kernel == "linear":
        return "linear", None
    raise ValueError(f"only 'rbf' and 'linear' kernels are supported, got {kernel!r}")


def gram(A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
    """Linear kernel A B^T (float64)."""
    return A @ (A if B is None else B).T


def squared_distances(A: np.ndarray, B: np.ndarray | None = None,
                      G: np.ndarray | None = None) -> np.ndarray:
    """Pairwise squared Euclidean distances |a|^2 + |b|^2 - 2 a.b, clipped at 0 (libsvm's formula)."""
    B = A if B is None else B
    G = gram(A, B) if G is None else G
    return np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * G, 0.0)


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """StandardScaler fitted on `train`, applied to train and others (zero-variance columns kept)."""
    mean = train.mean(0)
    std = train.std(0)
    std[std == 0.0] = 1.0
    return [(a - mean) / std for a in (train, *others)]


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def score_predictions(task_type: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy (classification) or R^2 (regression)."""
    if task_type == "classification":
        return float(np.mean(y_true == y_pred))
    return float(r2_score(y_true, y_pred))


# libsvm iterations per binary problem before a linear-kernel fit is handed to the exact
# primal solver (transfer_jax.linear_svm): a few seconds of SMO on a 1,000-sample problem.
LIBSVM_MAX_ITER = 3_000_000


def _model(task_type: str, C: float, **svm_kwargs):
    cls = SVC if task_type == "classification" else SVR
    return cls(kernel="precomputed", C=C, **svm_kwargs)


def _kernel_blocks(key: tuple[str, float | None], G: np.ndarray, D: np.ndarray | None,
                   out: np.ndarray | None = None) -> np.ndarray:
    """The kernel of a key from G or D: exp(-gamma D), in `out` when given (same values)."""
    kind, gamma = key
    if kind == "linear":
        return G
    if out is None:
        return np.exp(-gamma * D)
    np.multiply(D, -gamma, out=out)
    return np.exp(out, out=out)


class Workspace:
    """Reusable flat float64 buffers for the (rows x train) blocks of a grid search; a
    block is a C-contiguous view of a buffer's first n_rows * n_train entries."""

    def __init__(self, size: int):
        self.size = int(size)
        self._buffers: dict[str, np.ndarray] = {}

    @classmethod
    def for_folds(cls, folds: Folds) -> "Workspace":
        return cls(max((len(tr) + len(te)) * len(tr) for tr, te in folds))

    def block(self, name: str, n_rows: int, n_cols: int) -> np.ndarray:
        if n_rows * n_cols > self.size:
            raise ValueError(f"workspace of {self.size} entries cannot hold a {n_rows} x {n_cols} block")
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = np.empty(self.size)
        return buf[: n_rows * n_cols].reshape(n_rows, n_cols)


def _gather(F: np.ndarray, rows: np.ndarray, cols: np.ndarray, out: np.ndarray, chunk: int = 256) -> np.ndarray:
    """out = F[np.ix_(rows, cols)], without allocating the whole block."""
    for start in range(0, len(rows), chunk):
        np.take(F[rows[start:start + chunk]], cols, axis=1, out=out[start:start + chunk])
    return out


def _fold_blocks(Xall: np.ndarray, Xtr: np.ndarray, need_d: bool, ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """gram(Xall, Xtr) and squared_distances(Xall, Xtr, G), written into the workspace with
    the same operations in the same order (bit-identical values)."""
    n_rows, n_train = len(Xall), len(Xtr)
    G = ws.block("G", n_rows, n_train)
    np.matmul(Xall, Xtr.T, out=G)
    if not need_d:
        return G, None
    D = ws.block("D", n_rows, n_train)
    np.add((Xall * Xall).sum(1)[:, None], (Xtr * Xtr).sum(1)[None, :], out=D)
    twice = ws.block("K", n_rows, n_train)  # scratch; the kernel loop overwrites it
    np.multiply(2.0, G, out=twice)
    np.subtract(D, twice, out=D)
    np.maximum(D, 0.0, out=D)
    return G, D


def _fit_predict_linear_exact(task_type: str, C: float, X_train, y_train, X_test, svm_kwargs):
    if task_type == "classification":
        return linear_svm.LinearSVC(C=C).fit(X_train, y_train).predict(X_test)
    eps = float(svm_kwargs.get("epsilon", 0.1))
    return linear_svm.LinearSVR(C=C, epsilon=eps).fit(X_train, y_train).predict(X_test)


def _fit_predict(task_type: str, C: float, K_train, y_train, K_test, svm_kwargs, max_iter: int):
    """libsvm on a precomputed kernel; None when it stopped at max_iter (not converged)."""
    model = _model(task_type, C, max_iter=max_iter, **svm_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(K_train, y_train)
    if model.fit_status_ != 0:
        return None
    return model.predict(K_test)


def fold_scores(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                settings: list[dict[str, Any]], *, task_type: str, scale: bool = False,
                svm_kwargs: dict | None = None, full: tuple[np.ndarray, np.ndarray] | None = None,
                max_iter: int = LIBSVM_MAX_ITER, slow: dict | None = None,
                workspace: Workspace | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Score every setting trained on `train`, tested on `test`.

    Returns (scores (n_settings,), exact (n_settings,) bool: True where the linear
    kernel was solved by the exact primal solver because libsvm hit max_iter). C values
    are fitted in increasing order; once libsvm hits max_iter for a linear C, larger
    C values go to the exact solver directly (they only converge slower); `slow`
    ({kernel key: smallest such C}) carries that knowledge across folds.
    full=(G, D): Gram and squared-distance matrices over all rows, sliced instead of
    recomputed (only without scaling). workspace: buffers for the fold's blocks (shared
    by the folds of a grid search; allocated here when None).
    """
    svm_kwargs = svm_kwargs or {}
    slow = {} if slow is None else slow
    n_features = X.shape[1]
    rows = np.concatenate([train, test])
    n_train = len(train)
    ws = workspace or Workspace(len(rows) * n_train)
    keys = [kernel_key(s, n_features) for s in settings]
    need_g = any(k[0] == "linear" for k in keys)
    need_d = any(k[0] == "rbf" for k in keys)
    if full is not None and not scale:
        Xtr, Xte = X[train], X[test]
        G = _gather(full[0], rows, train, ws.block("G", len(rows), n_train)) if need_g else None
        D = _gather(full[1], rows, train, ws.block("D", len(rows), n_train)) if need_d else None
    else:
        Xtr, Xte = standardize(X[train], X[test]) if scale else (X[train], X[test])
        G, D = _fold_blocks(np.concatenate([Xtr, Xte]), Xtr, need_d, ws)
    out = np.empty(len(settings))
    exact = np.zeros(len(settings), dtype=bool)
    for key in dict.fromkeys(keys):
        K = _kernel_blocks(key, G, D, None if key[0] == "linear" else ws.block("K", len(rows), n_train))
        K_train, K_test = K[:n_train], K[n_train:]
        Cs = sorted({float(s.get("C", 1.0)) for s, k in zip(settings, keys) if k == key})
        done: dict[float, tuple[float, bool]] = {}
        for C in Cs:
            pred = None
            if not (key[0] == "linear" and C >= slow.get(key, np.inf)):
                pred = _fit_predict(task_type, C, K_train, y[train], K_test, svm_kwargs,
                                    max_iter if key[0] == "linear" else -1)
            used_exact = pred is None
            if used_exact:
                slow[key] = min(C, slow.get(key, np.inf))
                pred = _fit_predict_linear_exact(task_type, C, Xtr, y[train], Xte, svm_kwargs)
            done[C] = (score_predictions(task_type, y[test], pred), used_exact)
        for i, (s, k) in enumerate(zip(settings, keys)):
            if k == key:
                out[i], exact[i] = done[float(s.get("C", 1.0))]
    return out, exact


def grid_scores(X: np.ndarray, y: np.ndarray, folds: Folds, grid: Grid, *,
                task_type: str = "classification", scale: bool = False,
                svm_kwargs: dict | None = None, max_iter: int = LIBSVM_MAX_ITER,
                best_only: bool = False, iid: bool = True) -> GridScores:
    """Every setting of `grid` on every fold, with kernels shared as the module explains.

    best_only=True skips the (setting, fold) fits that cannot change the best setting
    (`race`): the best score, the best setting and its fold scores are those of the full
    search; the skipped entries of fold_scores are NaN. `iid` is the aggregation the best
    is taken under.
    """
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
    X = np.asarray(X, dtype=np.float64)
    settings = expand_grid(grid)
    full = None
    if not scale:
        G = gram(X)
        full = (G, squared_distances(X, X, G))
    slow: dict = {}
    ws = Workspace.for_folds(folds)

    def run(f: int, which: list[int]) -> tuple[np.ndarray, np.ndarray]:
        tr, te = folds[f]
        return fold_scores(X, y, tr, te, [settings[i] for i in which], task_type=task_type, scale=scale,
                           svm_kwargs=svm_kwargs, full=full, max_iter=max_iter, slow=slow, workspace=ws)

    sizes = np.array([len(te) for _, te in folds])
    if best_only and len(folds) > 2:
        scores, exact = race(run, settings, sizes, X.shape[1], iid=iid)
    else:
        per_fold = [run(f, list(range(len(settings)))) for f in range(len(folds))]
        scores = np.stack([p[0] for p in per_fold], axis=1)
        exact = np.stack([p[1] for p in per_fold], axis=1)
    return GridScores(settings, scores, sizes, exact)


# A setting is skipped once even perfect scores on its remaining folds could not lift it to
# the best finished score; the margin keeps float rounding from skipping a possible tie.
_RACE_MARGIN = 1e-9


def race(run, settings: list[dict[str, Any]], fold_sizes: np.ndarray, n_features: int, *,
         iid: bool = True, n_pilots: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Fold scores of a grid search, skipping fits that cannot change its best setting.

    run(fold, setting indices) -> (scores, exact) fits those settings on that fold. Fold 0
    is fitted for every setting; its `n_pilots` best settings are then fitted on every
    fold, which gives a finished score S. Fold by fold, the other settings are fitted
    while an upper bound of their final score (the folds done, 1 on the folds to come:
    accuracy and R^2 are at most 1) reaches S; the rest are left NaN. Linear-kernel
    settings are fitted as a prefix of increasing C (a smaller C whenever a larger one),
    so that libsvm's iteration cap sends the same fits to the exact solver as in the full
    search (`fold_scores`). Returns (scores, exact), (n_settings, n_folds).
    """
    n, n_folds = len(settings), len(fold_sizes)
    weights = np.asarray(fold_sizes, dtype=np.float64) if iid else np.ones(n_folds)
    weights = weights / weights.sum()
    scores = np.full((n, n_folds), np.nan)
    exact = np.zeros((n, n_folds), dtype=bool)
    linear = sorted((float(s.get("C", 1.0)), i) for i, s in enumerate(settings)
                    if kernel_key(s, n_features)[0] == "linear")

    def close(which: set[int]) -> list[int]:
        """`which` plus every linear setting of smaller C than one in it, in grid order."""
        top = max((c for c, i in linear if i in which), default=None)
        return sorted(which | {i for c, i in linear if top is not None and c <= top})

    def fit(f: int, which: list[int]) -> None:
        which = [i for i in which if np.isnan(scores[i, f])]
        if which:
            scores[which, f], exact[which, f] = run(f, which)

    fit(0, list(range(n)))
    pilots = set(np.argsort(-scores[:, 0], kind="stable")[:n_pilots].tolist())
    if any(i in pilots for _, i in linear):
        pilots |= {i for _, i in linear}  # the linear settings race together, in fold order
    for f in range(1, n_folds):
        fit(f, close(pilots))
    done = ~np.isnan(scores).any(axis=1)
    best = float((scores[done] @ weights).max())
    for f in range(1, n_folds):
        bound = np.nan_to_num(scores[:, :f], nan=1.0) @ weights[:f] + weights[f:].sum()
        alive = {i for i in range(n) if bound[i] >= best - _RACE_MARGIN}
        fit(f, close(alive))
    return scores, exact


def fit_predict(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                setting: dict[str, Any], *, task_type: str, scale: bool = False,
                svm_kwargs: dict | None = None, max_iter: int = LIBSVM_MAX_ITER) -> np.ndarray:
    """Fit one setting on `train` and predict `test` (the refit step of nested CV)."""
    Xtr, Xte = standardize(X[train], X[test]) if scale else (X[train], X[test])
    key = kernel_key(setting, X.shape[1])
    Xall = np.concatenate([Xtr, Xte])
    G = gram(Xall, Xtr)
    K = _kernel_blocks(key, G, squared_distances(Xall, Xtr, G) if key[0] == "rbf" else None)
    C = float(setting.get("C", 1.0))
    svm_kwargs = svm_kwargs or {}
    pred = _fit_predict(task_type, C, K[: len(train)], y[train], K[len(train):], svm_kwargs,
                        max_iter if key[0] == "linear" else -1)
    if pred is None:
        pred = _fit_predict_linear_exact(task_type, C, Xtr, y[train], Xte, svm_kwargs)
    return pred
