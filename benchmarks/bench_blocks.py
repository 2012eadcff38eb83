"""Each block of the extraction alone, per clip: the fused CPU kernel vs XLA, side by side.

    python benchmarks/bench_blocks.py            # the paper's input, 96 x 1360, 32 channels
    python benchmarks/bench_blocks.py --blocks 1,2 --repeats 200

Times `inference._block` (the 3x3 convolution, BatchNorm, ELU, max-pool and the layer's
feature) for blocks of the paper's network on one clip, jitted, on one CPU device: with
the kernel (`cpu_kernels.conv_block`: block 1 direct, blocks 2-5 Winograd) and with it
switched off (XLA's convolution and loops), for running statistics (given) and per-clip
statistics (computed). Each block's input is the previous block's output. Median of
--repeats rounds, the two called in turn in each; JAX set up as the library's scripts set
it (`runtime.use_cpu_cores`: single-threaded devices).
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
    p.add_argument("--blocks", default="1,2,3", help="which blocks (1-based)")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    if not cpu_kernels.available():
        raise SystemExit("transfer_jax._cpu_kernels is not built: nothing to compare")
    cfg = ModelConfig()
    rng = np.random.default_rng(0)
    c = cfg.channels
    x = jnp.asarray(rng.uniform(-80, 0, (cfg.frontend.n_mels, cfg.frontend.n_frames, 1)), jnp.float32)
    wanted = {int(b) for b in args.blocks.split(",")}
    print(f"one {x.shape[0]} x {x.shape[1]} clip, {c} channels; {jax.devices()[0].device_kind}, "
          f"median of {args.repeats}")
    for block, pool in enumerate(cfg.pools, start=1):
        c_in = x.shape[-1]
        kernel = jnp.asarray(rng.normal(size=(3, 3, c_in, c)) * np.sqrt(2 / (9 * c_in)), jnp.float32)
        scale, bias = jnp.asarray(rng.uniform(0.5, 2, c), jnp.float32), jnp.asarray(rng.normal(size=c), jnp.float32)
        mean = inference._conv_mean(x, kernel)
        var = jnp.asarray(rng.uniform(0.5, 2, c), jnp.float32) * jnp.square(x).mean()
        def run(x, v, kernel=kernel, mean=mean, scale=scale, bias=bias, pool=pool):
            return inference._block(x, kernel, mean, v, scale, bias, cfg.bn_epsilon, pool)

        for stats, v in (("running", var), ("per-clip", None)) if block in wanted else ():
            fused = jax.jit(lambda x, v=v, run=run: run(x, v))
            want = fused(x)
            with kernels_off():  # traced (and compiled) with the kernel off; later calls reuse that
                in_xla = jax.jit(lambda x, v=v, run=run: run(x, v))
                got = in_xla(x)
            t = interleaved({"kernel": lambda: fused(x), "xla": lambda: in_xla(x)}, args.repeats)
            diff = max(float(jnp.abs(a - b).max() / jnp.abs(b).max()) for a, b in zip(got, want))
            print(f"block {block} {tuple(x.shape)} {stats:9s} kernel {t['kernel'] * 1e3:6.2f} ms   "
                  f"XLA {t['xla'] * 1e3:6.2f} ms   {t['xla'] / t['kernel']:4.1f}x   max rel diff {diff:.1e}")
        x = run(x, var)[0]  # the next block's input


if __name__ == "__main__":
    main()
