"""A JAX linear-probe screen: ridge regression / ridge classification of every layer
combination and every regularisation value at once, jitted (CPU or GPU).

Layers are blocks of columns of one feature matrix (five 32-d convnet layers, optionally
the 120-d MFCC block); a combination is a 0/1 mask over the blocks. Per fold, features are
standardised with the training rows' mean and std, the training Gram matrix is formed
once, and for each combination the masked Gram matrix is eigendecomposed once; the ridge
solution for every lambda then costs a rescaling of the eigenvalues:

    W(lambda) = V diag(1 / (s + lambda)) V^T X_m^T Y      (X_m: masked, centred features)

Masked-out columns get zero weight exactly (their rows of X^T Y are zero), so one
computation shape serves all combinations and `vmap` runs them together. Classification
regresses one-hot targets and predicts the argmax (a ridge classifier); regression
reports R^2. Fold scores are aggregated like the faithful protocol (fold-size weighted),
and the score of a combination is its best over lambda: an optimistic screen for ranking
combinations quickly, not the paper's SVM.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from transfer_jax.folds import Folds

# Ridge penalties relative to the number of training rows (standardised features).
LAMBDAS: tuple[float, ...] = tuple(10.0 ** k for k in range(-4, 3))


@dataclasses.dataclass(frozen=True)
class ScreenResult:
    """scores: (n_combos, n_lambdas) fold-size weighted CV score; fold_scores:
    (n_combos, n_lambdas, n_folds); lambdas: relative penalties (x n_train)."""

    names: list[str]
    scores: np.ndarray
    fold_scores: np.ndarray
    lambdas: tuple[float, ...]

    def best(self) -> list[tuple[str, float, float, np.ndarray]]:
        """Per combination: (name, best score, its lambda, its fold scores)."""
        idx = np.argmax(self.scores, axis=1)
        return [(n, float(self.scores[i, k]), self.lambdas[k], self.fold_scores[i, k])
                for i, (n, k) in enumerate(zip(self.names, idx))]


def block_masks(block_sizes: Sequence[int], combos: Sequence[Sequence[int]]) -> np.ndarray:
    """(n_combos, n_columns) 0/1 column masks from combinations of block indices."""
    edges = np.concatenate([[0], np.cumsum(block_sizes)])
    masks = np.zeros((len(combos), edges[-1]), dtype=np.float32)
    for i, combo in enumerate(combos):
        for b in combo:
            masks[i, edges[b]:edges[b + 1]] = 1.0
    return masks


def _padded_tests(folds: Folds) -> tuple[np.ndarray, np.ndarray]:
    """(n_folds, max_test) test indices padded with 0, and their validity mask."""
    size = max(len(te) for _, te in folds)
    idx = np.zeros((len(folds), size), dtype=np.int32)
    valid = np.zeros((len(folds), size), dtype=np.float32)
    for f, (_, te) in enumerate(folds):
        idx[f, : len(te)] = te
        valid[f, : len(te)] = 1.0
    return idx, valid


@jax.jit
def _fold_stats(X, Y, train_w):
    """Per fold (vmapped over train_w (F, N)): mean, std, standardised Gram, X^T Y, mean Y."""

    def one(w):
        n = w.sum()
        mean = (w @ X) / n
        var = (w @ (X * X)) / n - mean**2
        std = jnp.sqrt(jnp.maximum(var, 0.0))
        std = jnp.where(std > 1e-8, std, 1.0)
        y_mean = (w @ Y) / n
        Xc = (X - mean) / std
        G = (Xc * w[:, None]).T @ Xc
        B = (Xc * w[:, None]).T @ (Y - y_mean)
        return mean, std, G, B, y_mean, n

    return jax.vmap(one)(train_w)


@jax.jit
def _ridge_predictions(G, B, mean, std, y_mean, n, masks, X_test, lambdas):
    """Test predictions (F, M, L, T, K) for all folds F, masks M, lambdas L."""

    def per_fold(G, B, mean, std, y_mean, n, Xt):
        Xs = (Xt - mean) / std

        def per_mask(m):
            Gm = G * m[:, None] * m[None, :] + jnp.diag(1.0 - m)
            s, V = jnp.linalg.eigh(Gm)
            proj = V.T @ (B * m[:, None])  # (D, K)
            P = (Xs * m) @ V  # (T, D)

            def per_lambda(lam):
                return P @ (proj / (s + lam * n)[:, None]) + y_mean

            return jax.vmap(per_lambda)(lambdas)

        return jax.vmap(per_mask)(masks)

    return jax.vmap(per_fold)(G, B, mean, std, y_mean, n, X_test)


def _scores(pred, y_test, valid, task_type):
    """Fold scores (F, M, L) from predictions (F, M, L, T, K)."""
    v = valid[:, None, None, :]
    if task_type == "classification":
        correct = (jnp.argmax(pred, -1) == y_test[:, None, None, :]).astype(jnp.float32)
        return (correct * v).sum(-1) / v.sum(-1)
    yt = y_test[:, None, None, :]
    n = v.sum(-1, keepdims=True)
    mean = (yt * v).sum(-1, keepdims=True) / n
    ss_tot = (((yt - mean) ** 2) * v).sum(-1)
    ss_res = (((yt - pred[..., 0]) ** 2) * v).sum(-1)
    return 1.0 - ss_res / ss_tot


def screen(X: np.ndarray, y: np.ndarray, masks: np.ndarray, folds: Folds, *,
           task_type: str = "classification", names: Sequence[str] | None = None,
           lambdas: Sequence[float] = LAMBDAS) -> ScreenResult:
    """Ridge-probe every column mask (n_combos, D) of X (N, D) on every fold and lambda."""
    X = jnp.asarray(X, dtype=jnp.float32)
    if task_type == "classification":
        classes, yi = np.unique(y, return_inverse=True)
        Y = jax.nn.one_hot(yi, len(classes), dtype=jnp.float32)
        y_eval = yi
    else:
        Y = jnp.asarray(y, dtype=jnp.float32)[:, None]
        y_eval = np.asarray(y, dtype=np.float32)
    train_w = np.zeros((len(folds), len(y)), dtype=np.float32)
    for f, (tr, _) in enumerate(folds):
        train_w[f, tr] = 1.0
    test_idx, valid = _padded_tests(folds)
    mean, std, G, B, y_mean, n = _fold_stats(X, Y, jnp.asarray(train_w))
    pred = _ridge_predictions(G, B, mean, std, y_mean, n, jnp.asarray(masks, dtype=jnp.float32),
                              X[test_idx], jnp.asarray(lambdas, dtype=jnp.float32))
    fold_scores = np.asarray(_scores(pred, jnp.asarray(y_eval)[test_idx], jnp.asarray(valid), task_type))
    fold_scores = np.moveaxis(fold_scores, 0, -1)  # (M, L, F)
    sizes = valid.sum(1)
    scores = (fold_scores * sizes).sum(-1) / sizes.sum()
    return ScreenResult(list(names or [str(i) for i in range(len(masks))]), scores, fold_scores, tuple(lambdas))
