"""tf.data over prepared shards: counts, shapes, determinism, resumption, per-host split."""
from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import input_pipeline as ip
from data_pipelines import prepare_msd
from transfer_jax.config import FrontendConfig

CFG = FrontendConfig(n_samples=2048)  # 8 frames: records stay tiny
N_ROWS, SHARD = 50, 8  # 7 shards, the last of 2 rows
REJECTED = {3, 17, 18}  # rows "rejected" during preparation: absent from the shards


def mel_of(row: int) -> np.ndarray:
    return np.full((CFG.n_mels, CFG.n_frames), -row, np.float16)


def labels_of(row: int) -> np.ndarray:
    return (np.arange(50) % (row % 5 + 2) == 0).astype(np.uint8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared folder written with prepare_msd's own writer: mel of row r is all -r."""
    out = tmp_path_factory.mktemp("prepared")
    prepare_msd.check_or_write_json(out / "meta.json", prepare_msd.meta_dict(CFG, [f"t{i}" for i in range(50)], SHARD), "m")
    plans = prepare_msd.plan_shards("train", N_ROWS, SHARD)
    prepare_msd.check_or_write_json(out / "train" / "split.json", {"n_rows": N_ROWS, "n_shards": len(plans)}, "s")
    for plan in plans:
        w = prepare_msd.ShardWriter(out, plan)
        for r in range(plan.start, plan.stop):
            if r in REJECTED:
                w.reject(r, f"TR{r}", str(r), "p", "file not found")
            else:
                w.write(prepare_msd.serialize_example(mel_of(r), labels_of(r), f"TR{r}", str(r), r))
        w.commit()
    return out


def rows_of(batches) -> list[int]:
    return [int(-m[0, 0]) for mel, _ in batches for m in mel.astype(np.float32)]


def test_tensorflow_sees_no_gpu():
    assert ip.tf.config.get_visible_devices("GPU") == []


def test_counts_shapes_and_content(prepared):
    src = ip.TFRecordBatches(prepared, global_batch=4, seed=0, process_index=0, process_count=1)
    n = N_ROWS - len(REJECTED)
    assert len(src.prepared) == n and src.steps_per_epoch == n // 4 and src.n_frames == CFG.n_frames
    batches = list(src.epoch(0))
    assert len(batches) == n // 4
    mel, labels = batches[0]
    assert mel.shape == (4, CFG.n_mels, CFG.n_frames) and mel.dtype == np.float16
    assert labels.shape == (4, 50) and labels.dtype == np.float32
    rows = rows_of(batches)
    assert len(set(rows)) == len(rows) and not set(rows) & REJECTED
    for (mel, labels), r in zip(batches, rows[::4]):
        np.testing.assert_array_equal(labels[0], labels_of(r))  # labels travel with their mel


def test_deterministic_epochs_and_exact_resume(prepared):
    src = ip.TFRecordBatches(prepared, global_batch=4, seed=3, shuffle_buffer=16, process_index=0, process_count=1)
    first = rows_of(src.epoch(0))
    assert rows_of(src.epoch(0)) == first  # same (seed, epoch): same batches
    assert first != sorted(first)  # shuffled
    assert rows_of(src.epoch(1)) != first  # a new order each epoch
    assert rows_of(src.epoch(0, start=5)) == first[5 * 4:]  # resuming mid-epoch
    other = ip.TFRecordBatches(prepared, global_batch=4, seed=4, process_index=0, process_count=1)
    assert rows_of(other.epoch(0)) != first
    fast = ip.TFRecordBatches(prepared, global_batch=4, deterministic=False, process_index=0, process_count=1)
    assert len(rows_of(fast.epoch(0))) == len(first)


def test_hosts_read_disjoint_shards_that_cover_the_split(prepared):
    split = ip.open_split(prepared, "train")
    seen = []
    for host in range(3):
        part = ip.host_split(split, host, 3)
        ds = ip.make_dataset(part, 5, shuffle=False, drop_remainder=False)
        seen.append([int(r) for b in ds.as_numpy_iterator() for r in b["row"]])
    flat = sorted(r for rows in seen for r in rows)
    assert flat == [r for r in range(N_ROWS) if r not in REJECTED]  # covering, no duplicates
    assert all(not set(a) & set(b) for i, a in enumerate(seen) for b in seen[i + 1:])
    hosts = [ip.TFRecordBatches(prepared, global_batch=6, seed=0, process_index=h, process_count=3) for h in range(3)]
    steps = {h.steps_per_epoch for h in hosts}
    assert steps == {min(len(ip.host_split(split, h, 3)) // 2 for h in range(3))}  # same step count everywhere
    for h in hosts:
        got = list(h.epoch(0))
        assert len(got) == h.steps_per_epoch and all(m.shape[0] == 2 for m, _ in got)


def test_load_arrays_reads_a_split_in_order(prepared):
    mel, labels, ids = ip.load_arrays(prepared, "train", batch_size=6)
    keep = [r for r in range(N_ROWS) if r not in REJECTED]
    assert ids == [f"TR{r}" for r in keep] and mel.dtype == np.float16
    np.testing.assert_array_equal(mel[:, 0, 0].astype(np.float32), -np.asarray(keep, np.float32))
    np.testing.assert_array_equal(labels, np.stack([labels_of(r) for r in keep]))


def test_incomplete_or_foreign_folders_are_clear_errors(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json not found"):
        ip.open_split(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"valid/split.json not found"):
        ip.open_split(prepared, "valid")
    side = prepared / "train" / "train-00002-of-00007.json"
    saved = side.read_text()
    side.unlink()
    try:
        with pytest.raises(ValueError, match="1 of 7 shards are not complete"):
            ip.open_split(prepared, "train")
        assert len(ip.open_split(prepared, "train", require_complete=False).files) == 6
    finally:
        side.write_text(saved)
    with pytest.raises(ValueError, match="cannot feed 8 hosts"):
        ip.host_split(ip.open_split(prepared, "train"), 0, 8)


def write_prepared(out, cfg: FrontendConfig, n_tags: int, sizes: dict[str, int], shard: int = 16, seed: int = 0):
    """A prepared folder of learnable random data: tag j raises mel band j (train/valid/test)."""
    rng = np.random.default_rng(seed)
    prepare_msd.check_or_write_json(out / "meta.json", prepare_msd.meta_dict(cfg, [f"t{i}" for i in range(n_tags)],
                                                                            shard), "m")
    for split, n in sizes.items():
        plans = prepare_msd.plan_shards(split, n, shard)
        prepare_msd.check_or_write_json(out / split / "split.json", {"n_rows": n, "n_shards": len(plans)}, "s")
        for plan in plans:
            w = prepare_msd.ShardWriter(out, plan)
            for r in range(plan.start, plan.stop):
                y = (rng.random(n_tags) < 0.4).astype(np.uint8)
                mel = rng.uniform(-80, -40, (cfg.n_mels, cfg.n_frames))
                mel[: n_tags * 8][np.repeat(y, 8).astype(bool)] += 30
                w.write(prepare_msd.serialize_example(mel, y, f"{split}{r}", str(r), r))
            w.commit()
    return out


def test_fit_trains_from_the_stream(tmp_path, small_config):
    from transfer_jax.model import Tagger
    from transfer_jax.training_loop import FitConfig, TaggingData, fit

    fe = small_config.frontend
    root = write_prepared(tmp_path / "prepared", fe, small_config.n_classes, {"train": 64, "valid": 32})
    source = ip.TFRecordBatches(root, global_batch=16, seed=0)
    mel, labels, _ = ip.load_arrays(root, "valid")
    row = fit(Tagger(small_config, norm="train"), source, TaggingData(mel, labels), tmp_path / "run",
              FitConfig(epochs=2, batch_size=16, learning_rate=3e-3, eval_batch_size=32), progress=False)
    assert row["epoch"] == 2 and row["step"] == 2 * source.steps_per_epoch == 8
    assert 0.0 <= row["valid_roc_auc"] <= 1.0 and np.isfinite(row["train_loss"])


def test_train_tagger_trains_from_a_prepared_folder(tmp_path):
    """`--config.data.source msd_tfrecord`: the main job streams the shards (one flag)."""
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    fe = FrontendConfig(n_samples=18_176)
    prepared = write_prepared(tmp_path / "prepared", fe, 6, {"train": 48, "valid": 16, "test": 16})
    out = subprocess.run(
        [sys.executable, str(root / "experiments" / "train_tagger.py"), f"--config.workdir={tmp_path / 'run'}",
         "--config.data.source=msd_tfrecord", f"--config.data.tfrecord_dir={prepared}",
         "--config.model.pools=((2,2),(3,2),(2,2),(2,2),(4,2))", "--config.train.epochs=1",
         "--config.train.batch_size=16", "--config.train.eval_batch_size=16"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "3 steps/epoch" in out.stdout and "test (best checkpoint)" in out.stdout
    assert "using the prepared frontend (18176 samples, 71 frames)" in out.stdout
