"""Precomputed-kernel grid search gives GridSearchCV's scores; exact-solver fallback."""
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from transfer_jax import kernel_grid
from transfer_jax.folds import paper_folds
from transfer_jax.probe import PAPER_GRID

GRID = ({"kernel": ["rbf"], "C": [0.1, 8.0], "gamma": [2.0**-3, 2.0**-7, "auto"]},
        {"kernel": ["linear"], "C": [0.1, 2.0]})


def _data(task_type, n=90, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d)
    if task_type == "classification":  # rows sorted by class, like the authors' csvs
        y = np.digitize(X[:, 0] + rng.normal(size=n), [-1.0, 1.0])
        order = np.argsort(y, kind="stable")
        return X[order], y[order]
    return X, 0.5 * X[:, 0] - 0.2 * X[:, 1] + 0.3 * rng.normal(size=n)


@pytest.mark.parametrize("task_type", ["classification", "regression"])
@pytest.mark.parametrize("scale", [False, True])
def test_matches_gridsearchcv(task_type, scale):
    X, y = _data(task_type)
    folds = paper_folds(y, task_type, 5)
    ours = kernel_grid.grid_scores(X, y, folds, GRID, task_type=task_type, scale=scale)
    model = SVC() if task_type == "classification" else SVR()
    pipe = Pipeline([("scaler", StandardScaler() if scale else "passthrough"), ("model", model)])
    grid = [{f"model__{k}": v for k, v in g.items()} for g in GRID]
    ref = GridSearchCV(pipe, grid, cv=folds, scoring="accuracy" if task_type == "classification" else "r2")
    ref.fit(X, y)
    assert [{f"model__{k}": v for k, v in s.items()} for s in ours.settings] == ref.cv_results_["params"]
    # classification: identical; SVR: libsvm stops (tol 1e-3) a hair elsewhere when kernel
    # entries differ in the last bits, which moves R^2 by ~1e-5
    atol = 1e-12 if task_type == "classification" else 1e-3
    np.testing.assert_allclose(ours.mean_scores(iid=False), ref.cv_results_["mean_test_score"], atol=atol)
    assert ours.best_params() == {k.removeprefix("model__"): v for k, v in ref.best_params_.items()} or \
        ours.best_score() == pytest.approx(ref.best_score_)


def test_iid_weighting_is_total_correct_over_n():
    X, y = _data("classification", n=83)
    folds = paper_folds(y, "classification", 4)
    g = kernel_grid.grid_scores(X, y, folds, GRID, task_type="classification")
    sizes = np.array([len(te) for _, te in folds])
    correct = g.fold_scores * sizes
    np.testing.assert_allclose(g.mean_scores(iid=True), correct.sum(1) / len(y))
    assert g.best_score() == g.mean_scores().max()
    assert g.best_index() == int(np.flatnonzero(g.mean_scores() == g.mean_scores().max())[0])


def test_auto_gamma_shares_the_kernel_of_equal_numeric_gamma():
    X, y = _data("classification", d=32)
    grid = ({"kernel": ["rbf"], "C": [2.0], "gamma": [2.0**-5, "auto"]},)
    g = kernel_grid.grid_scores(X, y, paper_folds(y, "classification", 3), grid)
    assert g.fold_scores[0].tolist() == g.fold_scores[1].tolist()
    assert kernel_grid.resolve_gamma("auto", 32) == 2.0**-5
    with pytest.raises(ValueError, match="gamma"):
        kernel_grid.resolve_gamma("scale", 4)
    with pytest.raises(ValueError, match="kernels"):
        kernel_grid.kernel_key({"kernel": "poly"}, 4)


def test_linear_falls_back_to_exact_solver_when_libsvm_hits_max_iter():
    X, y = _data("regression", n=120)
    grid = ({"kernel": ["linear"], "C": [0.1, 2.0]},)
    folds = paper_folds(y, "regression", 4)
    converged = kernel_grid.grid_scores(X, y, folds, grid, task_type="regression")
    capped = kernel_grid.grid_scores(X, y, folds, grid, task_type="regression", max_iter=5)
    assert not converged.exact_fits.any() and capped.exact_fits.all()
    np.testing.assert_allclose(capped.fold_scores, converged.fold_scores, atol=2e-3)


def test_fit_predict_matches_sklearn():
    X, y = _data("classification")
    tr, te = paper_folds(y, "classification", 3)[0]
    setting = {"kernel": "rbf", "C": 8.0, "gamma": 2.0**-3}
    ours = kernel_grid.fit_predict(X, y, tr, te, setting, task_type="classification", scale=True)
    pipe = Pipeline([("s", StandardScaler()), ("m", SVC(**setting))]).fit(X[tr], y[tr])
    assert (ours == pipe.predict(X[te])).all()


def test_workspace_blocks_are_bit_identical_to_the_plain_expressions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 24)) * rng.uniform(0.1, 50, size=24)  # unscaled, MFCC-like spread
    train = np.sort(rng.permutation(90)[:70])
    test = np.setdiff1d(np.arange(90), train)
    rows = np.concatenate([train, test])
    ws = kernel_grid.Workspace(90 * 70)
    G, D = kernel_grid._fold_blocks(X[rows], X[train], True, ws)
    G0 = kernel_grid.gram(X[rows], X[train])
    D0 = kernel_grid.squared_distances(X[rows], X[train], G0)
    assert np.array_equal(G, G0) and np.array_equal(D, D0)
    K = kernel_grid._kernel_blocks(("rbf", 2.0**-7), G, D, ws.block("K", 90, 70))
    assert np.array_equal(K, np.exp(-(2.0**-7) * D0))
    full = kernel_grid.gram(X)
    assert np.array_equal(kernel_grid._gather(full, rows, train, np.empty((90, 70)), chunk=16), full[np.ix_(rows, train)])
    with pytest.raises(ValueError, match="cannot hold"):
        ws.block("G", 91, 70)


@pytest.mark.parametrize("task_type,max_iter,iid", [("classification", kernel_grid.LIBSVM_MAX_ITER, True),
                                                    ("classification", 30, False),
                                                    ("regression", 30, True)])
def test_race_skips_hopeless_fits_and_keeps_the_best(task_type, max_iter, iid):
    X, y = _data(task_type, n=150, d=8, seed=1)
    X = 4.0 * X  # wide features: the narrow RBF kernels (gamma 2^-3) are hopeless
    folds = paper_folds(y, task_type, 10)
    kw = dict(task_type=task_type, max_iter=max_iter, iid=iid)
    full = kernel_grid.grid_scores(X, y, folds, PAPER_GRID, **kw)
    raced = kernel_grid.grid_scores(X, y, folds, PAPER_GRID, best_only=True, **kw)
    done = ~np.isnan(raced.fold_scores)
    assert done.sum() < 0.9 * done.size  # it skipped fits
    np.testing.assert_array_equal(raced.fold_scores[done], full.fold_scores[done])
    np.testing.assert_array_equal(raced.exact_fits[done], full.exact_fits[done])
    if max_iter == 30:  # the cap sent linear fits to the exact solver, in both the same
        assert full.exact_fits.any()
    assert raced.best_index(iid) == full.best_index(iid)
    assert raced.best_score(iid) == full.best_score(iid)
    np.testing.assert_array_equal(raced.fold_scores[raced.best_index(iid)], full.fold_scores[full.best_index(iid)])
    # every setting it skipped would have finished below the best
    skipped = ~done.all(axis=1)
    assert (full.mean_scores(iid)[skipped] < full.best_score(iid)).all()
