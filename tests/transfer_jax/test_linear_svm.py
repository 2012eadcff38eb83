"""The exact linear SVC/SVR: libsvm's optimum (to its tolerance), also where libsvm crawls."""
import time
import warnings

import numpy as np
import pytest
from sklearn.svm import SVC, SVR

from transfer_jax.linear_svm import LinearSVC, LinearSVR, solve_hinge


def _hinge_objective(w, b, X, s, c, C):
    return 0.5 * w @ w + C * np.maximum(0.0, c - s * (X @ w + b)).sum()


@pytest.mark.parametrize("C", [0.1, 2.0])
def test_svr_matches_libsvm(C):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 8))
    y = X @ rng.normal(size=8) * 0.2 + 0.3 * rng.normal(size=150)
    ours = LinearSVR(C=C).fit(X, y)
    ref = SVR(kernel="linear", C=C, tol=1e-8).fit(X, y)
    assert ours.exact_
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), atol=1e-4)


@pytest.mark.parametrize("C", [0.1, 8.0])
def test_multiclass_svc_matches_libsvm_votes(C):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(180, 6))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1] + 0.7 * rng.normal(size=180), [-0.7, 0.0, 0.7])
    ours = LinearSVC(C=C).fit(X, y)
    ref = SVC(kernel="linear", C=C, tol=1e-8).fit(X, y)
    Xt = rng.normal(size=(300, 6))
    assert ours.exact_
    assert (ours.predict(Xt) == ref.predict(Xt)).mean() > 0.99
    assert ours.decision_function(Xt).shape == (300, 6)


def test_binary_objective_not_above_libsvm():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 5))
    y = (X[:, 0] + rng.normal(size=100) > 0).astype(int)
    s = np.where(y == 0, 1.0, -1.0)
    sol = solve_hinge(X, s, np.ones(100), 2.0)
    ref = SVC(kernel="linear", C=2.0).fit(X, y)  # sklearn's sign: positive -> class 1
    theirs = _hinge_objective(-ref.coef_[0], -ref.intercept_[0], X, s, np.ones(100), 2.0)
    assert sol.exact
    assert _hinge_objective(sol.w, sol.b, X, s, np.ones(100), 2.0) <= theirs + 1e-9


def test_ill_conditioned_problem_is_fast_where_libsvm_is_not():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 20)) * 100.0  # unscaled, like the authors' MFCCs
    y = X[:, 0] / 100 * 0.3 + rng.normal(size=300) * 0.2
    t = time.perf_counter()
    ours = LinearSVR(C=32.0).fit(X, y)
    assert time.perf_counter() - t < 5.0
    assert ours.exact_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        capped = SVR(kernel="linear", C=32.0, max_iter=100_000).fit(X, y)
    assert capped.fit_status_ == 1  # libsvm has not converged after 1e5 iterations
