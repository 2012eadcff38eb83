"""Linear-kernel SVC/SVR solved exactly: the fits libsvm would take minutes to hours on.

On unscaled features (the authors' MFCCs reach magnitudes of 100s) libsvm's SMO needs
10^8 and more iterations for the linear kernel at C >= 2 (measured: 110 s and 2.2e8
iterations for one Ballroom MFCC fold at C = 2). This module solves the same problem,

    minimise  1/2 |w|^2 + C * sum_j max(0, c_j - s_j (x_j . w + b)),   s_j = +-1

(C-SVC: s = label, c = 1; epsilon-SVR: every sample twice, s = +1, c = y - eps and
s = -1, c = -y - eps), through its dual  min 1/2 a^T Q a - c^T a, s^T a = 0, 0 <= a <= C
with Q = (s x)(s x)^T of rank <= d: a Mehrotra interior-point method whose Newton systems
cost O(n d^2) (Woodbury, with iterative refinement), then the exact optimum from the
active set it ends on (points inside the margin at C, points on it free, the rest at 0)
via the KKT linear system, checked against every KKT condition. libsvm stops within its
tolerance (1e-3) of this optimum. Multi-class SVC is one-vs-one with libsvm's voting
(ties to the lower class index).

The solver's matrices are small (d x d, d <= a few hundred), so it runs BLAS on one
thread: with several, numpy's and scipy's OpenBLAS thread pools spin against each other
between calls (measured on a 2-core VM, one UrbanSound8K-size fit of 45 class pairs,
7,859 x 280: 25.2 s with the default threads, 6.7 s with one).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits


@dataclasses.dataclass(frozen=True)
class HingeSolution:
    """w (d,), b, and whether the KKT conditions were met exactly (else: the interior-point
    solution, accurate to its own tolerance)."""

    w: np.ndarray
    b: float
    exact: bool


def _woodbury_solver(Z: np.ndarray, D: np.ndarray, refine: int = 2):
    """x -> (D + Z Z^T)^-1 x for diagonal D > 0 and thin Z (n, d), in O(n d^2)."""
    Zd = Z / D[:, None]
    inner = np.eye(Z.shape[1]) + Z.T @ Zd
    d = 1.0 / np.sqrt(np.diag(inner))  # Jacobi scaling before factorising
    scaled = inner * d[:, None] * d[None, :]
    try:
        factor = scipy.linalg.cho_factor(scaled)
        solve_inner = lambda r: d * scipy.linalg.cho_solve(factor, d * r)  # noqa: E731
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        vals, vecs = np.linalg.eigh(scaled)
        inv = np.where(vals > vals.max() * 1e-15, 1.0 / np.maximum(vals, 1e-300), 0.0)
        solve_inner = lambda r: d * (vecs @ (inv * (vecs.T @ (d * r))))  # noqa: E731

    def solve(x: np.ndarray) -> np.ndarray:
        out = x / D - Zd @ solve_inner(Zd.T @ x)
        for _ in range(refine):  # iterative refinement: Woodbury loses digits when D spans decades
            residual = x - (D * out + Z @ (Z.T @ out))
            out = out + (residual / D - Zd @ solve_inner(Zd.T @ residual))
        return out

    return solve


def _max_step(x: np.ndarray, dx: np.ndarray) -> float:
    """Largest t <= 1 with x + t dx >= 0."""
    neg = dx < 0
    return float(min(1.0, np.min(-x[neg] / dx[neg]))) if neg.any() else 1.0


def _step(a, ua, zl, zu, da, dzl, dzu) -> float:
    """One step length for primal and dual (the QP couples them)."""
    return min(_max_step(a, da), _max_step(ua, -da), _max_step(zl, dzl), _max_step(zu, dzu))


def _dual_ipm(Z: np.ndarray, s: np.ndarray, c: np.ndarray, C: float, tol: float = 1e-10,
              max_iter: int = 200) -> tuple[np.ndarray, float]:
    """Mehrotra predictor-corrector interior point method for the dual
    min 1/2 a^T Z Z^T a - c^T a  s.t.  s^T a = 0, 0 <= a <= C.

    Returns (alpha, C - alpha, b); the upper slack is carried separately for precision."""
    n = len(c)
    a = np.full(n, C / 2)
    ua = np.full(n, C / 2)  # C - a, kept apart so that it keeps its precision near 0
    lam = 0.0
    zl = np.ones(n)
    zu = np.ones(n)
    scale = 1.0 + np.abs(c).max()
    for _ in range(max_iter):
        w = Z.T @ a
        rd = Z @ w - c + lam * s - zl + zu
        rp = float(s @ a)
        mu = float((a @ zl + ua @ zu) / (2 * n))
        size = scale + float(np.abs(Z @ w).max())
        if mu < tol * C * size and np.abs(rd).max() < tol * size and abs(rp) < tol * C * n:
            break
        D = zl / a + zu / ua
        solve = _woodbury_solver(Z, D)
        Ms = solve(s)

        def direction(sigma_mu, corr_l, corr_u):
            r = -rd + (sigma_mu - corr_l) / a - zl - (sigma_mu - corr_u) / ua + zu
            Mr = solve(r)
            dlam = (s @ Mr + rp) / (s @ Ms)
            da = Mr - Ms * dlam
            dzl = (sigma_mu - corr_l - a * zl - zl * da) / a
            dzu = (sigma_mu - corr_u - ua * zu + zu * da) / ua
            return da, dlam, dzl, dzu

        da, dlam, dzl, dzu = direction(0.0, 0.0, 0.0)
        t = _step(a, ua, zl, zu, da, dzl, dzu)
        mu_aff = ((a + t * da) @ (zl + t * dzl) + (ua - t * da) @ (zu + t * dzu)) / (2 * n)
        sigma = (mu_aff / mu) ** 3
        da, dlam, dzl, dzu = direction(sigma * mu, da * dzl, -da * dzu)
        t = 0.995 * _step(a, ua, zl, zu, da, dzl, dzu)
        if t < 1e-8:  # stalled at the limit of double precision
            break
        a = a + t * da
        ua = ua - t * da
        lam = lam + t * dlam
        zl = zl + t * dzl
        zu = zu + t * dzu
    return a, ua, lam


def _kkt_polish(alpha: np.ndarray, slack: np.ndarray, X: np.ndarray, s: np.ndarray, c: np.ndarray, C: float,
                max_rounds: int = 20) -> tuple[np.ndarray, bool]:
    """Exact optimum (w, b) from the active set of a near-optimal dual `alpha`:
    free points lie exactly on their margin, the KKT linear system gives the rest.
    Returns (v, exact); exact=False when no consistent active set was found."""
    bound = slack <= 1e-6 * C
    free = (alpha > 1e-6 * C) & ~bound
    tol = 1e-7 * max(1.0, float(np.abs(c).max()))
    for _ in range(max_rounds):
        w_bound = C * (X[bound].T @ s[bound])
        F = np.flatnonzero(free)
        if len(F):
            XF = X[F]
            n = len(F)
            A = np.zeros((n + 1, n + 1))
            A[:n, :n] = XF @ XF.T
            A[:n, n] = 1.0
            A[n, :n] = 1.0
            rhs = np.concatenate([s[F] * c[F] - XF @ w_bound, [-C * s[bound].sum()]])
            sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
            if np.abs(A @ sol - rhs).max() > 1e-8 * max(1.0, np.abs(rhs).max()):
                # more free points than the equalities allow: release the one closest to a bound
                j = F[np.argmin(np.minimum(alpha[F], slack[F]))]
                free = free.copy()
                free[j] = False
                if slack[j] < alpha[j]:
                    bound = bound.copy()
                    bound[j] = True
                continue
            beta, b = sol[:n], float(sol[n])
            a_free = s[F] * beta
            w = w_bound + XF.T @ beta
        elif s[bound].sum() != 0:  # sum_j alpha_j s_j = 0 needs a free point
            return np.zeros(X.shape[1] + 1), False
        else:
            a_free = np.zeros(0)
            w = w_bound
            b = _midpoint_bias(X @ w, s, c, bound)
            if b is None:
                return np.zeros(X.shape[1] + 1), False
        u = c - s * (X @ w + b)
        low = F[a_free < -1e-9 * C]
        high = F[a_free > C * (1 + 1e-9)]
        rest = ~free
        bad = (rest & ~bound & (u > tol)) | (rest & bound & (u < -tol))
        if not (len(low) or len(high) or bad.any()):
            return np.concatenate([w, [b]]), True
        free = free.copy()
        bound = bound.copy()
        free[low] = free[high] = False
        bound[high] = True
        free |= bad
        bound &= ~free
    return np.zeros(X.shape[1] + 1), False


def _midpoint_bias(f0: np.ndarray, s: np.ndarray, c: np.ndarray, bound: np.ndarray) -> float | None:
    """No free support vector: b is only bracketed; take the midpoint, as libsvm does."""
    # alpha = 0 needs s (f0 + b) >= c; alpha = C needs s (f0 + b) <= c.
    need = c - s * f0  # s * b >= need (alpha 0), s * b <= need (alpha C)
    lower = np.r_[need[~bound & (s > 0)], -need[bound & (s < 0)]]
    upper = np.r_[need[bound & (s > 0)], -need[~bound & (s < 0)]]
    lb = lower.max() if len(lower) else -np.inf
    ub = upper.min() if len(upper) else np.inf
    if not np.isfinite(lb) and not np.isfinite(ub):
        return None
    if not np.isfinite(lb):
        return float(ub)
    if not np.isfinite(ub):
        return float(lb)
    return float((lb + ub) / 2)


def solve_hinge(X: np.ndarray, s: np.ndarray, c: np.ndarray, C: float) -> HingeSolution:
    """Minimise 1/2 |w|^2 + C sum max(0, c - s (X w + b)) exactly (see the module doc)."""
    X = np.asarray(X, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    with threadpool_limits(limits=1, user_api="blas"):
        alpha, slack, b = _dual_ipm(s[:, None] * X, s, c, C)
        w = X.T @ (alpha * s)
        polished, exact = _kkt_polish(alpha, slack, X, s, c, C)
    if exact:
        return HingeSolution(w=polished[:-1], b=float(polished[-1]), exact=True)
    return HingeSolution(w=w, b=b, exact=False)


class LinearSVR:
    """epsilon-SVR with a linear kernel, exact optimum (sklearn-like fit / predict)."""

    def __init__(self, C: float = 1.0, epsilon: float = 0.1):
        self.C = C
        self.epsilon = epsilon

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LinearSVR":
        y = np.asarray(y, dtype=np.float64)
        n = len(y)
        s = np.r_[np.ones(n), -np.ones(n)]
        c = np.r_[y - self.epsilon, -y - self.epsilon]
        sol = solve_hinge(np.concatenate([X, X]), s, c, self.C)
        self.coef_, self.intercept_, self.exact_ = sol.w, sol.b, sol.exact
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_


class LinearSVC:
    """C-SVC with a linear kernel, exact optimum per class pair, libsvm's one-vs-one vote."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LinearSVC":
        X = np.asarray(X, dtype=np.float64)
        self.classes_, yi = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        self.pairs_, coefs, intercepts, exact = [], [], [], True
        for i in range(k):
            for j in range(i + 1, k):
                rows = (yi == i) | (yi == j)
                s = np.where(yi[rows] == i, 1.0, -1.0)
                sol = solve_hinge(X[rows], s, np.ones(len(s)), self.C)
                self.pairs_.append((i, j))
                coefs.append(sol.w)
                intercepts.append(sol.b)
                exact &= sol.exact
        self.coef_, self.intercept_, self.exact_ = np.array(coefs), np.array(intercepts), exact
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, n_pairs) one-vs-one decision values, pair (i, j) positive for class i."""
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        dec = self.decision_function(X)
        votes = np.zeros((len(dec), len(self.classes_)), dtype=np.int64)
        for p, (i, j) in enumerate(self.pairs_):
            pos = dec[:, p] > 0
            votes[pos, i] += 1
            votes[~pos, j] += 1
        return self.classes_[np.argmax(votes, axis=1)]  # first maximum, like libsvm
