"""Throughput of the MSD data path on this machine (a script, not a test).

1. input pipeline: clips/s that `input_pipeline.TFRecordBatches` delivers as numpy
   batches, over a prepared folder (`--dir`), or over a generated one of paper-sized
   records (96 x 1360 float16, random values) when no folder is given;
2. preprocessing (`--prepare N`): clips/s of `prepare_msd` decoding N generated 30 s
   44.1 kHz stereo MP3 previews (like the 7digital clips) to 29 s log-mel shards.

    python benchmarks/bench_input_pipeline.py [--dir PREPARED] [--clips 2048] [--batch 32] [--prepare 32]

Generated files are read back from the page cache right after being written, so (1)
measures parsing and batching, not the disk: at 29 s a clip is 261 kB, so N clips/s
also need N x 261 kB/s of disk reads.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from data_pipelines import prepare_msd  # noqa: E402
from transfer_jax.config import MSD_TAGS, FrontendConfig  # noqa: E402


def write_random_prepared(out: pathlib.Path, n: int, shard: int, cfg: FrontendConfig) -> pathlib.Path:
    """A prepared folder of n random paper-sized records (train split) written by prepare_msd's writer."""
    rng = np.random.default_rng(0)
    prepare_msd.check_or_write_json(out / "meta.json", prepare_msd.meta_dict(cfg, MSD_TAGS, shard), "meta")
    plans = prepare_msd.plan_shards("train", n, shard)
    prepare_msd.check_or_write_json(out / "train" / "split.json", {"n_rows": n, "n_shards": len(plans)}, "split")
    mel = rng.uniform(-80, 0, (cfg.n_mels, cfg.n_frames)).astype(np.float16)
    for plan in plans:
        w = prepare_msd.ShardWriter(out, plan)
        for r in range(plan.start, plan.stop):
            mel[0, 0] = -r % 80  # records differ
            w.write(prepare_msd.serialize_example(mel, rng.random(50) < 0.1, f"TR{r}", str(r), r))
        w.commit()
    return out


def time_pipeline(root: pathlib.Path, batch: int, deterministic: bool, repeats: int,
                  shuffle_buffer: int) -> list[float]:
    """clips/s of whole epochs (shuffle-buffer fill included), one number per repeat."""
    from data_pipelines import input_pipeline as ip

    src = ip.TFRecordBatches(root, batch, deterministic=deterministic, shuffle_buffer=shuffle_buffer,
                             process_index=0, process_count=1)
    rates = []
    for e in range(repeats):
        t0, n = time.perf_counter(), 0
        for mel, _ in src.epoch(e):
            n += len(mel)
        rates.append(n / (time.perf_counter() - t0))
    return rates


def time_prepare(n: int, workers: int, tmp: pathlib.Path) -> float:
    """clips/s of prepare_msd on n generated 30 s 44.1 kHz stereo MP3 clips (pool start-up included)."""
    import soundfile as sf

    from data_pipelines import msd_layout

    rng = np.random.default_rng(1)
    ids = [str(1_000_000 + i) for i in range(n)]
    t = np.arange(30 * 44_100) / 44_100
    for i, d in enumerate(ids):
        path = tmp / "audio" / d[0] / d[1] / f"{d}.clip.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        x = 0.3 * np.sin(2 * np.pi * (220 + 10 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(path, np.stack([x, x[::-1]], 1).astype(np.float32), 44_100, format="MP3")
    index = msd_layout.SplitIndex([f"TR{i}" for i in range(n)], ids, [f"{d[0]}/{d[1]}/{d}.npy" for d in ids],
                                  (rng.random((n, 50)) < 0.1).astype(np.uint8))
    msd_layout.write_split(tmp / "split", "train", index)
    src = prepare_msd.load_source(tmp / "split", tmp / "audio", "train", MSD_TAGS)
    t0 = time.perf_counter()
    prepare_msd.prepare_split(src, tmp / "out", FrontendConfig(), shard_size=max(1, n // 4), workers=workers,
                              progress=False)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=None, help="a prepared folder (default: generate one)")
    p.add_argument("--clips", type=int, default=8192, help="generated records (261 kB each)")
    p.add_argument("--shard", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shuffle_buffer", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prepare", type=int, default=0, help="also time preprocessing of N generated MP3 clips")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(args.dir) if args.dir else write_random_prepared(
            pathlib.Path(tmp) / "prepared", args.clips, args.shard, FrontendConfig())
        for det in (True, False):
            rates = time_pipeline(root, args.batch, det, args.repeats, args.shuffle_buffer)
            print(f"input pipeline, batch {args.batch}, deterministic={det}: "
                  f"median {statistics.median(rates):,.0f} clips/s (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
        if args.prepare:
            rate = time_prepare(args.prepare, args.workers, pathlib.Path(tmp) / "prep")
            print(f"prepare_msd, {args.prepare} clips of 30 s MP3 (44.1 kHz stereo), {args.workers} workers: "
                  f"{rate:.2f} clips/s")


if __name__ == "__main__":
    main()
