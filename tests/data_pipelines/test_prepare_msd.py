"""prepare_msd: shards, rejects, resumption and multi-machine splitting on a tiny MSD-layout tree."""
from __future__ import annotations

import csv
import json
import os
import sqlite3

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import msd_layout, prepare_msd
from transfer_jax import frontend
from transfer_jax.audio import fit_length, load_audio
from transfer_jax.config import FrontendConfig

CFG = FrontendConfig(n_samples=18_176)  # 71 frames: fast
N = 9
CORRUPT, MISSING, EMPTY = 2, 5, 6


@pytest.fixture
def tree(tmp_path):
    """9 clips of 1 s (mp3 and wav, 22.05/12 kHz) in the MSD layout; row 2 corrupt, 5 missing, 6 empty."""
    rng = np.random.default_rng(0)
    ids = [str(3_600_000 + 1_234 * i) for i in range(N)]
    for i, d in enumerate(ids):
        path = tmp_path / "audio" / d[0] / d[1] / f"{d}.clip.{'mp3' if i % 2 else 'wav'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i == CORRUPT:
            path.write_bytes(b"\xff\xfb not an mp3 frame" * 20)
        elif i == EMPTY:
            path.write_bytes(b"")
        elif i != MISSING:
            sr = 22_050 if i % 3 else 12_000
            mp3 = i % 2 and "MP3" in sf.available_formats()  # else WAV data, decoded by content
            sf.write(path, (0.2 * rng.standard_normal(sr)).astype(np.float32), sr, format="MP3" if mp3 else "WAV")
    y = (rng.random((N, 50)) < 0.3).astype(np.uint8)
    index = msd_layout.SplitIndex([f"TRFIX{i:013d}" for i in range(N)], ids, [f"{d[0]}/{d[1]}/{d}.npy" for d in ids], y)
    msd_layout.write_split(tmp_path / "split", "valid", index)
    return tmp_path, index


def run(tmp_path, *extra):
    return prepare_msd.main(["--split_dir", str(tmp_path / "split"), "--audio_root", str(tmp_path / "audio"),
                             "--out", str(tmp_path / "out"), "--splits", "valid", "--shard_size", "4",
                             "--workers", "1", "--batch", "4", "--n_samples", str(CFG.n_samples),
                             "--no_progress", *extra])


def read_shard(path):
    import tensorflow as tf

    out = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        f = tf.train.Example.FromString(raw).features.feature
        out.append({"row": f["row"].int64_list.value[0], "msd_id": f["msd_id"].bytes_list.value[0].decode(),
                    "mel": np.frombuffer(f["mel"].bytes_list.value[0], "<f2").reshape(96, CFG.n_frames),
                    "labels": np.frombuffer(f["labels"].bytes_list.value[0], np.uint8)})
    return out


def test_shards_rejects_and_content(tree):
    tmp_path, index = tree
    assert run(tmp_path) == 0
    out = tmp_path / "out"
    names = sorted(p.name for p in (out / "valid").iterdir())
    assert names == ["rejects.csv", "split.json"] + [f"valid-0000{k}-of-00003.{e}" for k in range(3) for e in ("json", "tfrecord")]
    records = [r for k in range(3) for r in read_shard(out / "valid" / f"valid-0000{k}-of-00003.tfrecord")]
    keep = [i for i in range(N) if i not in (CORRUPT, MISSING, EMPTY)]
    assert [r["row"] for r in records] == keep
    assert [r["msd_id"] for r in records] == [index.msd_ids[i] for i in keep]
    np.testing.assert_array_equal(np.stack([r["labels"] for r in records]), index.labels[keep])
    wave = fit_length(load_audio(msd_layout.audio_path(tmp_path / "audio", index.filenames[1])), CFG.n_samples)
    ref = np.asarray(frontend.log_mel_jit(wave[None], CFG, "clip"))[0]
    np.testing.assert_allclose(records[1]["mel"].astype(np.float32), ref, atol=0.05)  # float16 storage
    with open(out / "valid" / "rejects.csv") as f:
        rejects = list(csv.DictReader(f))
    assert [int(r["row"]) for r in rejects] == [CORRUPT, MISSING, EMPTY]
    reasons = [r["reason"] for r in rejects]
    assert "cannot decode" in reasons[0] and reasons[1] == "file not found" and "empty" in reasons[2]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_frames"] == CFG.n_frames and meta["tags"][0] == "rock" and meta["frontend"]["short_policy"] == "tile"


def test_rerun_skips_complete_shards_and_redoes_incomplete_ones(tree):
    tmp_path, _ = tree
    run(tmp_path)
    shard = lambda k: tmp_path / "out" / "valid" / f"valid-0000{k}-of-00003.tfrecord"  # noqa: E731
    done_stat = os.stat(shard(0))
    # shard 1: killed mid-write (a temp, no final, no summary); shard 2: summary lost
    good = shard(1).read_bytes()
    shard(1).rename(shard(1).with_name(shard(1).name + prepare_msd.INCOMPLETE))
    shard(1).with_suffix(".json").unlink()
    shard(2).with_suffix(".json").unlink()
    mtime2 = os.stat(shard(2)).st_mtime_ns
    run(tmp_path)
    assert os.stat(shard(0)).st_mtime_ns == done_stat.st_mtime_ns and os.stat(shard(0)).st_ino == done_stat.st_ino
    assert shard(1).read_bytes() == good and not shard(1).with_name(shard(1).name + prepare_msd.INCOMPLETE).exists()
    assert os.stat(shard(2)).st_mtime_ns != mtime2 and shard(2).with_suffix(".json").exists()


def test_tasks_split_the_shards_between_machines(tree):
    tmp_path, _ = tree
    run(tmp_path, "--task_index", "1", "--num_tasks", "2")
    files = sorted(p.name for p in (tmp_path / "out" / "valid").glob("*.tfrecord"))
    assert files == ["valid-00001-of-00003.tfrecord"]
    summary = prepare_msd.summarize_split(tmp_path / "out", prepare_msd.plan_shards("valid", N, 4))
    assert not summary["complete"] and summary["shards_complete"] == 1
    run(tmp_path, "--task_index", "0", "--num_tasks", "2")
    summary = prepare_msd.summarize_split(tmp_path / "out", prepare_msd.plan_shards("valid", N, 4))
    assert summary == {"n_shards": 3, "complete": True, "shards_complete": 3, "n_examples": 6, "n_rejects": 3}
    assert prepare_msd.task_shards(prepare_msd.plan_shards("valid", 100, 10), 2, 3)[1].index == 5


def test_other_settings_in_the_same_folder_are_refused(tree):
    tmp_path, _ = tree
    run(tmp_path)
    with pytest.raises(ValueError, match=r"meta.json: this folder was prepared with a different .*frontend"):
        prepare_msd.main(["--split_dir", str(tmp_path / "split"), "--audio_root", str(tmp_path / "audio"),
                          "--out", str(tmp_path / "out"), "--splits", "valid", "--shard_size", "4",
                          "--workers", "1", "--no_progress", "--n_samples", "20000"])


def test_labels_from_lastfm_when_no_y(tree):
    tmp_path, index = tree
    (tmp_path / "split" / "valid_y.npy").unlink()
    with pytest.raises(FileNotFoundError, match="valid_y.npy: no labels"):
        run(tmp_path)
    db = tmp_path / "lastfm_tags.db"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE tags (tag TEXT); CREATE TABLE tids (tid TEXT);"
                      "CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT);")
    con.executemany("INSERT INTO tags VALUES (?)", [(t,) for t in msd_layout.read_tag_names(tmp_path / "split")])
    con.executemany("INSERT INTO tids VALUES (?)", [(t,) for t in index.msd_ids])
    con.execute("INSERT INTO tid_tag VALUES (2, 1, 100.0)")  # track row 1: 'rock'
    con.commit()
    con.close()
    run(tmp_path, "--lastfm_db", str(db))
    records = read_shard(tmp_path / "out" / "valid" / "valid-00000-of-00003.tfrecord")
    assert records[1]["row"] == 1 and records[1]["labels"].tolist() == [1] + [0] * 49
    assert "lastfm_tags.db" in json.loads((tmp_path / "out" / "valid" / "split.json").read_text())["label_source"]


def test_worker_processes_give_the_same_shards(tree):
    tmp_path, _ = tree
    run(tmp_path)
    reference = {p.name: p.read_bytes() for p in (tmp_path / "out" / "valid").glob("*.tfrecord")}
    prepare_msd.main(["--split_dir", str(tmp_path / "split"), "--audio_root", str(tmp_path / "audio"),
                      "--out", str(tmp_path / "out2"), "--splits", "valid", "--shard_size", "4", "--workers", "2",
                      "--batch", "4", "--n_samples", str(CFG.n_samples), "--no_progress"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "out2" / "valid").glob("*.tfrecord")} == reference
