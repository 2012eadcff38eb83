"""Core throughput, side by side in one run: log-mel frontends, extraction, train step.

    python benchmarks/bench_core.py [--batch 32] [--repeats 3] [--out docs/bench_core.json]

Runs unchanged on CPU and GPU (JAX picks the default backend). Prints a table; timings
are the median of `repeats` after one warm-up (compilation) call.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

from transfer_jax import frontend, train
from transfer_jax.config import FrontendConfig, ModelConfig
from transfer_jax.extraction import features_from_audio
from transfer_jax.model import Tagger, init_variables

CPU_DEFAULT = ModelConfig(pools=((2, 4), (3, 4), (2, 2), (2, 2), (4, 2)), n_classes=12,
                          frontend=FrontendConfig(n_samples=43_520))


def timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="")
    args = p.parse_args()
    b, rows = args.batch, []
    rng = np.random.default_rng(0)
    paper = ModelConfig()
    waves = (0.1 * rng.normal(size=(b, paper.frontend.n_samples))).astype(np.float32)

    def add(name, seconds, clips):
        rows.append({"what": name, "batch": clips, "seconds": round(seconds, 4),
                     "clips_per_s": round(clips / seconds, 1)})
        print(f"{name:55s} {seconds:8.3f} s  {clips / seconds:8.1f} clips/s", flush=True)

    import librosa  # noqa: F401  (warm-up import outside the timing)

    frontend.log_mel_librosa(waves[0], paper.frontend)
    add("log-mel librosa (host, one clip at a time), 29 s", timed(
        lambda: [frontend.log_mel_librosa(w, paper.frontend) for w in waves[:8]], args.repeats), 8)
    add("log-mel JAX (jit, batched), 29 s", timed(
        lambda: frontend.log_mel_jit(waves, paper.frontend, "clip"), args.repeats), b)

    model = Tagger(paper, norm="per_clip")
    v = init_variables(model, jax.random.key(0))
    mask = np.ones((b, 1), np.float32)
    add("extract: audio -> mel -> 5 layers (per_clip, vmap), 29 s", timed(
        lambda: features_from_audio(model, v, waves[:, None], mask, "clip"), args.repeats), b)

    for name, cfg in (("paper 96x1360", paper), ("CPU default 96x170", CPU_DEFAULT)):
        m = Tagger(cfg, norm="train")
        tx = train.make_optimizer()
        mesh = train.make_mesh()
        state = train.create_train_state(jax.random.key(0), m, tx, cfg.frontend.n_frames)
        step = train.jit_sharded(train.make_train_step(m, tx), mesh)
        mel = (rng.normal(size=(b, 96, cfg.frontend.n_frames)) * 10 - 40).astype(np.float32)
        labels = rng.integers(0, 2, (b, cfg.n_classes)).astype(np.float32)
        x, y = train.shard_batch(mesh, mel, labels)
        holder = {"s": state}

        def run():
            holder["s"], metrics = step(holder["s"], x, y)
            return metrics["loss"]

        add(f"train step ({name})", timed(run, args.repeats), b)

    info = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "jax": jax.__version__, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(info, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
