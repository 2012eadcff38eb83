"""Held-out split files (GTZAN's fault-filtered split): matching, errors, the protocol."""
import numpy as np
import pytest
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from transfer_jax import probe, splits

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


def _gtzan_clips(per_genre=10):
    """A GTZAN-like list of paths in the authors' csv order (genre, then number)."""
    return [f"gtzan_genre/genres/{g}/{g}.{i:05d}.au" for g in GENRES for i in range(per_genre)]


def _write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _split_dir(tmp_path, train, valid, test, suffix="_filtered"):
    d = tmp_path / "splits"
    d.mkdir(exist_ok=True)
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        _write(d / f"{name}{suffix}.txt", lines)
    return d


def test_clip_key():
    assert splits.clip_key("blues/blues.00029.wav") == "blues.00029"
    assert splits.clip_key("/data/GTZAN/genres/Blues/BLUES.00029.au") == "blues.00029"
    assert splits.clip_key("blues.00029") == "blues.00029"  # no extension: the number stays
    assert splits.clip_key("  blues/blues.00029.wav  ") == "blues.00029"
    assert splits.clip_key("gtzan_genre/genres/blues/blues.00029.au", 2) == "blues/blues.00029"
    assert splits.clip_key(r"C:\gtzan\jazz\jazz.00054.wav") == "jazz.00054"


def test_split_files_are_matched_by_name(tmp_path):
    clips = _gtzan_clips()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(clips))
    # 40 train, 20 valid, 30 test, 10 clips in no split (the faulty ones)
    want = {"train": np.sort(order[:40]), "valid": np.sort(order[40:60]), "test": np.sort(order[60:90])}

    def lines(rows):  # the split files' spelling: genre/file.wav, in their own order
        return [f"{clips[r].split('/')[-2]}/{clips[r].split('/')[-1][:-2]}wav" for r in rng.permutation(rows)]

    d = _split_dir(tmp_path, lines(want["train"]), ["# a comment", "", *lines(want["valid"])],
                   [f"{x}\tlabel" for x in lines(want["test"])])
    split = splits.load_split_dir(d, clips)
    for name in splits.SPLITS:
        np.testing.assert_array_equal(getattr(split, name), want[name])
    assert split.sizes() == (40, 20, 30)
    (tr, va), (trva, te) = split.folds()
    np.testing.assert_array_equal(trva, np.sort(np.concatenate([want["train"], want["valid"]])))
    np.testing.assert_array_equal(te, want["test"])
    # plain names (train.txt ...) work too
    d2 = tmp_path / "plain"
    d2.mkdir()
    for name in splits.SPLITS:
        (d2 / f"{name}.txt").write_text((d / f"{name}_filtered.txt").read_text())
    np.testing.assert_array_equal(splits.load_split_dir(d2, clips).test, want["test"])


def test_duplicate_stems_match_with_the_folder(tmp_path):
    clips = [f"task/{c}/{i}.wav" for c in ("a", "b") for i in range(4)]  # 0.wav in both folders
    d = _split_dir(tmp_path, ["a/0.wav", "b/0.wav", "a/1.wav", "b/1.wav"], ["a/2.wav", "b/2.wav"],
                   ["a/3.wav", "b/3.wav"])
    split = splits.load_split_dir(d, clips)
    assert split.train.tolist() == [0, 1, 4, 5] and split.test.tolist() == [3, 7]


def test_split_errors_name_the_file(tmp_path):
    clips = _gtzan_clips(4)
    train, valid, test = ["blues/blues.00000.wav", "jazz/jazz.00000.wav"], ["blues/blues.00001.wav"], \
        ["jazz/jazz.00001.wav"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        splits.load_split_dir(tmp_path / "nowhere", clips)
    d = _split_dir(tmp_path, train, valid, test)
    (d / "valid_filtered.txt").unlink()
    with pytest.raises(FileNotFoundError, match="valid_filtered.txt"):
        splits.load_split_dir(d, clips)
    for lines, message in (
        (["", "  "], r"valid_filtered.txt is empty"),
        (["blues/blues.00001.wav", "pop/pop.00099.wav"],
         r"valid_filtered.txt lists 1 clip\(s\) not in the dataset.*pop.00099"),
        (["blues/blues.00001.wav", "jazz/jazz.00001.wav"],
         r"jazz.00001.*valid_filtered.txt and .*test_filtered.txt.*overlap"),
        (["blues/blues.00001.wav", "blues/blues.00001.au"], r"twice in split file .*valid_filtered.txt"),
    ):
        _write(d / "valid_filtered.txt", lines)
        with pytest.raises(ValueError, match=message):
            splits.load_split_dir(d, clips)
    with pytest.raises(ValueError, match="not unique"):
        splits.heldout_split(["x/a.wav", "x/a.wav"], splits.split_paths(d))


def test_subset_renumbers_and_counts_dropped():
    split = splits.HeldOutSplit(np.array([0, 2, 5]), np.array([1]), np.array([3, 6]))
    keep = np.array([True, True, False, True, True, True, False])  # rows 2 and 6 failed to load
    sub, dropped = split.subset(keep)
    assert dropped == 2
    assert sub.train.tolist() == [0, 4] and sub.valid.tolist() == [1] and sub.test.tolist() == [2]


def test_check_split_labels():
    y = np.array([0, 0, 1, 1, 2, 2])
    splits.check_split_labels(splits.HeldOutSplit(np.array([0, 2, 4]), np.array([1]), np.array([3, 5])), y,
                              "classification")
    with pytest.raises(ValueError, match="test split has classes absent from train: \\[2\\]"):
        splits.check_split_labels(splits.HeldOutSplit(np.array([0, 2]), np.array([1]), np.array([3, 4])), y,
                                  "classification")


def _reference(X, y, train, valid, test, grid, task_type):
    """The held-out protocol with plain scikit-learn pipelines: select on valid, refit on
    train + valid, score test. Returns (chosen setting, test score, best-on-test setting)."""
    model = SVC if task_type == "classification" else SVR
    settings = list(ParameterGrid(list(grid)))
    valid_scores = [make_pipeline(StandardScaler(), model(**s)).fit(X[train], y[train]).score(X[valid], y[valid])
                    for s in settings]
    trva = np.concatenate([train, valid])
    test_scores = [make_pipeline(StandardScaler(), model(**s)).fit(X[trva], y[trva]).score(X[test], y[test])
                   for s in settings]
    best = int(np.argmax(valid_scores))
    return settings[best], test_scores[best], settings[int(np.argmax(test_scores))]


def _data(task_type, seed=3, n=90, d=12):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 30, size=d)  # unequal scales: the scaler matters
    if task_type == "classification":
        y = (X[:, 0] / 30 + X[:, 1] + 0.8 * rng.normal(size=n) > 0).astype(int) + (X[:, 2] > 5)
    else:
        y = X[:, 0] / 30 + np.sin(X[:, 1]) + 0.3 * rng.normal(size=n)
    order = rng.permutation(n)
    return X, y, np.sort(order[:45]), np.sort(order[45:65]), np.sort(order[65:])


def test_heldout_evaluate_matches_sklearn_classification():
    X, y, train, valid, test = _data("classification")
    chosen, test_score, best_on_test = _reference(X, y, train, valid, test, probe.PAPER_GRID, "classification")
    assert chosen != best_on_test  # the fixture tells selection on valid from peeking at test
    r = probe.heldout_evaluate(X, y, train, valid, test, task_type="classification")
    assert r.best_params == chosen
    assert r.score == pytest.approx(test_score, abs=1e-12)
    assert r.n_splits == 1 and r.fold_scores == (r.score,) and np.isnan(r.score_std)


def test_heldout_evaluate_matches_sklearn_regression():
    X, y, train, valid, test = _data("regression")
    chosen, test_score, _ = _reference(X, y, train, valid, test, probe.PAPER_GRID, "regression")
    r = probe.heldout_evaluate(X, y, train, valid, test, task_type="regression")
    assert r.best_params == chosen
    assert r.score == pytest.approx(test_score, abs=1e-3)  # libsvm's tolerance (see kernel_grid)
