"""Block 1 alone, per clip: the fused CPU kernel vs XLA's fused loops, side by side.

    python benchmarks/bench_block1.py            # the paper's input, 96 x 1360, 32 channels

Times `inference._window_stats` for block 1 (the conv3x3 of the log-mel, each pool
window's max and min, the variance) on one clip, jitted, on one CPU device: with the
kernel (`cpu_kernels`) and with it switched off (XLA), for running statistics (the
variance given) and per-clip statistics (computed). Median of --repeats rounds, the two
called in turn in each; JAX set up
as the library's scripts set it (`runtime.use_cpu_cores`: single-threaded devices).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

from transfer_jax import runtime

runtime.use_cpu_cores()  # as the library's scripts run: one single-threaded device per core
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from transfer_jax import cpu_kernels, inference  # noqa: E402
from transfer_jax.config import ModelConfig  # noqa: E402


@contextlib.contextmanager
def kernels_off():
    """`cpu_kernels.available()` False inside: what is traced here takes XLA's way."""
    available, cpu_kernels.available = cpu_kernels.available, lambda: False
    try:
        yield
    finally:
        cpu_kernels.available = available


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, called in turn within each round (so that the
    machine's drifts hit all alike), after one warm-up call each."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    cfg = ModelConfig()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-80, 0, (cfg.frontend.n_mels, cfg.frontend.n_frames, 1)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, cfg.channels)), jnp.float32)
    mean, var = jnp.asarray(rng.normal(size=cfg.channels), jnp.float32), jnp.ones(cfg.channels)
    pool = cfg.pools[0]
    if not cpu_kernels.available():
        raise SystemExit("transfer_jax._cpu_kernels is not built: nothing to compare")
    print(f"block 1 of one {x.shape[0]} x {x.shape[1]} clip, {cfg.channels} channels, pool {pool}; "
          f"{jax.devices()[0].device_kind}, median of {args.repeats}")
    for stats, m, v in (("running", mean, var), ("per-clip", None, None)):
        fused = jax.jit(lambda x, k, m=m, v=v: inference._window_stats(x, k, m, v, pool))
        want = fused(x, kernel)
        with kernels_off():  # traced (and compiled) with the kernel off; later calls reuse that
            in_xla = jax.jit(lambda x, k, m=m, v=v: inference._window_stats(x, k, m, v, pool))
            got = in_xla(x, kernel)
        t = interleaved({"kernel": lambda: fused(x, kernel), "xla": lambda: in_xla(x, kernel)}, args.repeats)
        diff = max(float(jnp.abs(a - b).max() / jnp.abs(b).max()) for a, b in zip(got, want))
        print(f"{stats:9s} kernel {t['kernel'] * 1e3:6.2f} ms   XLA {t['xla'] * 1e3:6.2f} ms   "
              f"{t['xla'] / t['kernel']:4.1f}x   max rel diff {diff:.1e}")


if __name__ == "__main__":
    main()
