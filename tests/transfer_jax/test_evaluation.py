"""evaluate_task rows, protocols, caching, outputs; the authors' precomputed layout."""
import json
import re

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


def _heldout_task(seed=0):
    from transfer_jax import splits

    sets, y = _sets(n_per_class=20, seed=seed, random_seeds=())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    split = splits.HeldOutSplit(np.sort(order[:25]), np.sort(order[25:40]), np.sort(order[40:55]))  # 5 rows unused
    return evaluation.Task("t", "classification", y, sets, heldout=split), split


def test_heldout_protocol_rows_summary_and_figure(tmp_path):
    from transfer_jax import probe

    task, split = _heldout_task()
    df = evaluation.evaluate_task(task, combos=["1", "5"], protocols=["faithful", "heldout"], n_splits=3,
                                  grid=SMALL_GRID)
    assert list(df.protocol) == ["faithful"] * 4 + ["heldout"] * 4
    held = df[df.protocol == "heldout"].set_index(["feature", "layers"])
    assert (held.n_splits == 1).all() and held.score_std.isna().all()
    X = task.sets.convnet[:, 4]
    ref = probe.heldout_evaluate(X, task.y, split.train, split.valid, split.test, grid=SMALL_GRID)
    assert held.score[("convnet", "5")] == ref.score and held.best_params[("convnet", "5")] == ref.best_params
    assert held.fold_scores[("convnet", "5")] == [ref.score]
    table = evaluation.write_outputs(df, tmp_path)
    assert list(table.protocol) == ["faithful", "heldout"]
    summary = (tmp_path / "summary.md").read_text()
    assert re.search(r"^\| t +\| heldout +\| [0-9.]+ \(\d\) +\|", summary, re.M), summary
    assert "`heldout`: heldout (honest" in summary
    written = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert list(written.protocol).count("heldout") == 4
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_heldout_needs_a_split_and_keys_the_cache_on_it(tmp_path, monkeypatch):
    from transfer_jax import splits

    sets, y = _sets(random_seeds=())
    with pytest.raises(ValueError, match="heldout protocol needs a train/valid/test split"):
        evaluation.evaluate_task("t", sets, y, protocols=["heldout"], grid=SMALL_GRID)
    task, split = _heldout_task()
    kw = dict(combos=["1"], protocols=["heldout"], grid=SMALL_GRID, cache_dir=tmp_path)
    first = evaluation.evaluate_task(task, **kw)
    monkeypatch.setattr(evaluation, "run_job", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    pd.testing.assert_frame_equal(first, evaluation.evaluate_task(task, **kw))
    task.heldout = splits.HeldOutSplit(split.train, split.test, split.valid)  # valid and test swapped
    with pytest.raises(AssertionError, match="recomputed"):
        evaluation.evaluate_task(task, **kw)


def test_load_precomputed_with_split_files(tmp_path):
    genres = ["blues", "jazz", "rock"]
    paths = [f"gtzan_genre/genres/{g}/{g}.{i:05d}.au" for g in genres for i in range(6)]
    _write_layout(tmp_path, "gtzan_genre", 18, {"filepath": paths, "label": np.repeat([0, 1, 2], 6)})
    df = pd.read_csv(tmp_path / "csv" / "gtzan_genre.csv")
    df["id"] = np.repeat(genres, 6)  # as in the authors' csv: the genre, not unique
    df.to_csv(tmp_path / "csv" / "gtzan_genre.csv", index=False)
    d = tmp_path / "splits"
    d.mkdir()
    (d / "train_filtered.txt").write_text("".join(f"{g}/{g}.{i:05d}.wav\n" for g in genres for i in (0, 1, 2)))
    (d / "valid_filtered.txt").write_text("".join(f"{g}/{g}.{i:05d}.wav\n" for g in genres for i in (3,)))
    (d / "test_filtered.txt").write_text("".join(f"{g}/{g}.{i:05d}.wav\n" for g in genres for i in (4,)))
    task = evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "gtzan_genre", split_dir=d)
    assert task.heldout.train.tolist() == [0, 1, 2, 6, 7, 8, 12, 13, 14]
    assert task.heldout.valid.tolist() == [3, 9, 15] and task.heldout.test.tolist() == [4, 10, 16]
    assert task.clips == paths
    (d / "test_filtered.txt").write_text("pop/pop.00001.wav\n")
    with pytest.raises(ValueError, match="test_filtered.txt lists 1 clip"):
        evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "gtzan_genre", split_dir=d)
    df.drop(columns=["filepath"]).to_csv(tmp_path / "csv" / "gtzan_genre.csv", index=False)
    with pytest.raises(ValueError, match="no column names the clips uniquely"):
        evaluation.load_precomputed(tmp_path / "feats", tmp_path / "csv", "gtzan_genre", split_dir=d)
