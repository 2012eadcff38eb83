"""Tests for data_pipelines.msd_layout: round trips, error messages, the real split files."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from data_pipelines import msd_layout
from data_pipelines.msd_layout import SplitIndex, audio_path, read_split, read_tag_names, write_split
from transfer_jax.config import MSD_TAGS

ANCHORS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "anchors"
MSD_SPLIT = ANCHORS / "msd_split"


def _index(n: int = 5, n_tags: int = 4, labels: bool = True) -> SplitIndex:
    ids7 = [str(36122424 + 1000 * i) for i in range(n)]
    y = (np.arange(n * n_tags).reshape(n, n_tags) % 3 == 0).astype(np.uint8) if labels else None
    return SplitIndex(msd_ids=[f"TRAAA{i:013d}" for i in range(n)], ids_7d=ids7,
                      filenames=[f"{d[0]}/{d[1]}/{d}.npy" for d in ids7], labels=y)


def test_round_trip_with_and_without_labels(tmp_path):
    idx = _index()
    write_split(tmp_path, "valid", idx)
    back = read_split(tmp_path, "valid")
    assert back.msd_ids == idx.msd_ids and back.ids_7d == idx.ids_7d
    assert back.filenames == idx.filenames and len(back) == 5
    assert back.labels.dtype == np.uint8 and np.array_equal(back.labels, idx.labels)

    write_split(tmp_path, "valid", _index(labels=False))  # removes the stale valid_y.npy
    assert read_split(tmp_path, "valid").labels is None
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_bool_labels_are_read_as_uint8(tmp_path):
    write_split(tmp_path, "test", _index())
    np.save(tmp_path / "test_y.npy", np.eye(5, 3, dtype=bool))
    assert read_split(tmp_path, "test").labels.dtype == np.uint8


@pytest.mark.parametrize("suffix", ["x_msd_id.txt", "x_7d_id.txt", "x_filename.txt"])
def test_missing_file_is_named(tmp_path, suffix):
    write_split(tmp_path, "train", _index())
    (tmp_path / f"train_{suffix}").unlink()
    with pytest.raises(FileNotFoundError, match=f"train_{suffix}"):
        read_split(tmp_path, "train")


def test_line_count_mismatch_names_file(tmp_path):
    write_split(tmp_path, "train", _index())
    path = tmp_path / "train_x_filename.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"train_x_filename\.txt: 4 lines.*has 5"):
        read_split(tmp_path, "train")


@pytest.mark.parametrize("y, problem", [
    (np.zeros((4, 3), np.uint8), "4 label rows but 5"),
    (np.zeros(5, np.uint8), "2-D"),
    (np.full((5, 3), 2, np.int64), "0/1"),
])
def test_bad_labels_name_file(tmp_path, y, problem):
    write_split(tmp_path, "valid", _index(labels=False))
    np.save(tmp_path / "valid_y.npy", y)
    with pytest.raises(ValueError, match=r"valid_y\.npy") as err:
        read_split(tmp_path, "valid")
    assert problem in str(err.value)


def test_write_split_rejects_inconsistent_index(tmp_path):
    idx = _index()
    idx.filenames = idx.filenames[:-1]
    with pytest.raises(ValueError, match="filenames has 4"):
        write_split(tmp_path, "train", idx)
    with pytest.raises(ValueError, match="unknown split"):
        read_split(tmp_path, "training")


def test_tag_names(tmp_path):
    assert read_tag_names(tmp_path) == MSD_TAGS
    msd_layout.write_lines(tmp_path / "tags.txt", ["a", "b c"])
    assert read_tag_names(tmp_path) == ("a", "b c")


def test_audio_path_prefers_mp3_then_falls_back(tmp_path):
    want = tmp_path / "3" / "6" / "36122424.clip.mp3"
    assert audio_path(tmp_path, "3/6/36122424.npy") == want  # nothing exists yet
    want.parent.mkdir(parents=True)
    wav = want.with_name("36122424.clip.wav")
    wav.write_bytes(b"")
    assert audio_path(tmp_path, "3/6/36122424.npy") == wav
    want.write_bytes(b"")
    assert audio_path(str(tmp_path), "3/6/36122424.npy") == want


@pytest.mark.skipif(not MSD_SPLIT.is_dir(), reason=f"MSD split anchors not found at {MSD_SPLIT}")
def test_real_msd_split_files():
    sizes = {"train": 201_680, "valid": 12_634, "test": 28_540}
    for split, n in sizes.items():
        idx = read_split(MSD_SPLIT, split)
        assert len(idx) == n
        assert all(len(m) == 18 and m.startswith("TR") for m in idx.msd_ids[:1000])
        for id7, fn in zip(idx.ids_7d[:1000], idx.filenames[:1000]):
            assert fn == f"{id7[0]}/{id7[1]}/{id7}.npy"
        if split == "train":
            assert idx.labels is None  # train_y.npy is not shipped
        else:
            assert idx.labels.shape == (n, len(MSD_TAGS)) and idx.labels.dtype == np.uint8
            assert 0 < idx.labels.mean() < 0.2
    assert read_tag_names(MSD_SPLIT) == MSD_TAGS
    assert audio_path("/audio", "3/6/36122424.npy") == pathlib.Path("/audio/3/6/36122424.clip.mp3")
