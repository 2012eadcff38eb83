"""evaluate_task rows, protocols, caching, outputs; the authors' precomputed layout."""
import json

import numpy as np
import pandas as pd
import pytest

from transfer_jax import evaluation

SMALL_GRID = ({"kernel": ["rbf"], "C": [2.0], "gamma": ["auto"]}, {"kernel": ["linear"], "C": [0.1]})


def _sets(n_per_class=15, seed=0, random_seeds=(0, 1)):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n_per_class)
    conv = rng.normal(size=(len(y), 5, 32)) + y[:, None, None] * np.linspace(0, 1, 5)[None, :, None]
    mfcc = rng.normal(size=(len(y), 120)) + 0.3 * y[:, None]
    rand = {s: rng.normal(size=(len(y), 5, 32)) for s in random_seeds}
    return evaluation.FeatureSets(convnet=conv, mfcc=mfcc, random=rand), y


def test_rows_columns_and_order():
    sets, y = _sets()
    df = evaluation.evaluate_task("t", sets, y, combos=["1", "5", "12345"], protocols=["faithful", "nested"],
                                  n_splits=3, inner_splits=2, grid=SMALL_GRID)
    assert tuple(df.columns) == evaluation.COLUMNS
    one = ["convnet"] * 3 + ["random"] * 2 + ["mfcc", "mfcc+convnet"]
    assert list(df.feature) == one * 2
    assert list(df.protocol) == ["faithful"] * 7 + ["nested"] * 7
    assert list(df.layers)[:7] == ["1", "5", "12345", "12345", "12345", "", "12345"]
    faithful = df[(df.protocol == "faithful") & (df.feature == "convnet")].set_index("layers")
    assert faithful.score["5"] > 0.9  # layer 5 carries the label
    assert (df.n_splits == 3).all()
    assert all(len(f) == 3 for f in df.fold_scores)
    nested = df[df.protocol == "nested"]
    assert np.allclose(nested.score, [np.mean(f) for f in nested.fold_scores])


def test_cache_makes_a_rerun_free(tmp_path, monkeypatch):
    sets, y = _sets(random_seeds=())
    kw = dict(combos=["1", "2"], protocols=["faithful"], n_splits=3, grid=SMALL_GRID, cache_dir=tmp_path)
    first = evaluation.evaluate_task("t", sets, y, **kw)
    assert len(list((tmp_path / "t" / "faithful").glob("*.json"))) == 4

    def boom(*a, **k):
        raise AssertionError("recomputed a cached result")

    monkeypatch.setattr(evaluation, "run_job", boom)
    again = evaluation.evaluate_task("t", sets, y, **kw)
    pd.testing.assert_frame_equal(first, again)
    sets.mfcc = sets.mfcc + 1.0  # other features: other key, recomputed
    with pytest.raises(AssertionError, match="recomputed"):
        evaluation.evaluate_task("t", sets, y, **kw)


def test_parallel_equals_serial_and_ridge_rows():
    sets, y = _sets(random_seeds=(0,))
    kw = dict(combos=["1", "12"], protocols=["faithful", "ridge"], n_splits=3, grid=SMALL_GRID)
    serial = evaluation.evaluate_task("t", sets, y, n_jobs=1, **kw)
    parallel = evaluation.evaluate_task("t", sets, y, n_jobs=2, **kw)
    pd.testing.assert_frame_equal(serial, parallel)
    ridge = serial[serial.protocol == "ridge"]
    assert list(ridge.feature) == ["convnet", "convnet", "random", "mfcc", "mfcc+convnet"]
    assert all("lambda" in p for p in ridge.best_params)


def test_summary_and_outputs(tmp_path):
    sets, y = _sets()
    df = evaluation.evaluate_task("t", sets, y, combos=["1", "5", "12345"], protocols=["faithful", "nested"],
                                  n_splits=3, inner_splits=2, grid=SMALL_GRID)
    table = evaluation.write_outputs(df, tmp_path)
    assert list(table.protocol) == ["faithful", "nested"]
    assert list(table.columns) == ["task", "protocol", "best convnet", "convnet 12345", "mfcc+12345", "mfcc",
                                   "random 12345"]
    assert "±" in table.iloc[1]["convnet 12345"] and "±" not in table.iloc[0]["convnet 12345"]
    written = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert {"task", "feature", "layers", "score", "protocol", "best_params"} <= set(written.columns)
    json.loads(written.best_params[0])
    assert (tmp_path / "t.png").stat().st_size > 10_000
    assert "mfcc+12345" in (tmp_path / "summary.md").read_text()


def _write_layout(root, base, n, extra=None):
    rng = np.random.default_rng(0)
    (root / "feats").mkdir(exist_ok=True)
    (root / "csv").mkdir(exist_ok=True)
    for k in range(5):
        np.save(root / "feats" / f"{base}_layer_{k}.npy", rng.normal(size=(n, 32)).astype(np.float32))
    np.save(root / "feats" / f"{base}_mfcc.npy", rng.normal(size=(n, 120)))
    pd.DataFrame({"id": range(n), **(extra or {})}).to_csv(root / "csv" / f"{base}.csv")


def test_load_precomputed_layouts(tmp_path):
    _write_layout(tmp_path, "emoMusic", 20, {"label_arousal": np.linspace(0, 1, 20),
                                             "label_valence": np.linspace(1, 0, 20)})
    a = evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "emoMusic_a")
    v = evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "emoMusic_v")
    assert a.task_type == "regression" and a.sets.convnet.shape == (20, 5, 32) and a.sets.mfcc.shape == (20, 120)
    assert a.y[0] == 0 and v.y[0] == 1 and a.folds is None
    _write_layout(tmp_path, "urbansound", 12, {"label": [0, 1] * 6, "fold": [1, 2, 3] * 4})
    u = evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "urbansound")
    assert [te.tolist() for _, te in u.folds] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    _write_layout(tmp_path, "jamendo_vd", 6, {"label": [0, 1] * 3,
                                              "category": ["train", "valid", "test", "train", "test", "valid"]})
    j = evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "jamendo_vd")
    assert [te.tolist() for _, te in j.folds] == [[2, 4]]
    with pytest.raises(ValueError, match="unknown task"):
        evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "nope")
    with pytest.raises(FileNotFoundError, match="gtzan_genre"):
        evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "gtzan_genre")


def test_unknown_protocol():
    sets, y = _sets()
    with pytest.raises(ValueError, match="unknown protocols"):
        evaluation.evaluate_task("t", sets, y, protocols=["magic"])
