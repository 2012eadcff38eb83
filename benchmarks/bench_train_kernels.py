"""Training's CPU kernels vs XLA's way, side by side, on one single-threaded device.

    python benchmarks/bench_train_kernels.py                # the paper's input, batch 16
    python benchmarks/bench_train_kernels.py --batch 8 --repeats 10

Three jitted computations, each with the kernels (`fused_block1`, `conv`, `cpu_kernels`)
and with them switched off (traced with `cpu_kernels.available` False), called in turn
in each round (median of --repeats): block 1's forward and kernel gradient with batch
statistics; block 2's kernel gradient (the backward-filter convolution); the whole train
step (Adam). JAX set up as the library's scripts set it (`runtime.use_cpu_cores`).
"""
from __future__ import annotations

import argparse

from transfer_jax import runtime

runtime.use_cpu_cores()  # as the library's scripts run: one single-threaded device per core
runtime.tune_malloc()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_blocks import interleaved, kernels_off  # noqa: E402

from transfer_jax import conv, cpu_kernels, fused_block1, train  # noqa: E402
from transfer_jax.config import ModelConfig  # noqa: E402
from transfer_jax.model import Tagger  # noqa: E402


def both_ways(make, *args):
    """(with kernels, without): `make()` returns a function; each is traced and compiled
    with the kernels on or off by its first call here."""
    on = make()
    on(*args)
    with kernels_off():
        off = make()
        off(*args)
    return on, off


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    if not cpu_kernels.available():
        raise SystemExit("transfer_jax._cpu_kernels is not built: nothing to compare")
    cfg, b = ModelConfig(), args.batch
    rng = np.random.default_rng(0)
    dev = jax.devices()[0]
    mel = jax.device_put(rng.uniform(-80, 0, (b, cfg.frontend.n_mels, cfg.frontend.n_frames)).astype(np.float32), dev)
    k1 = jax.device_put(rng.normal(0, 0.3, (3, 3, 1, cfg.channels)).astype(np.float32), dev)
    pool = cfg.pools[0]
    g1 = jax.device_put(rng.normal(size=(b, mel.shape[1] // pool[0], mel.shape[2] // pool[1], cfg.channels))
                        .astype(np.float32), dev)
    h, w = mel.shape[1] // pool[0], mel.shape[2] // pool[1]
    x2 = jax.device_put(rng.normal(size=(b, h, w, cfg.channels)).astype(np.float32), dev)
    g2 = jax.device_put(rng.normal(size=(b, h, w, cfg.channels)).astype(np.float32), dev)
    k2 = jax.device_put(rng.normal(0, 0.1, (3, 3, cfg.channels, cfg.channels)).astype(np.float32), dev)
    print(f"batch {b} of {mel.shape[1]} x {mel.shape[2]}, {cfg.channels} channels; "
          f"{dev.device_kind}, one single-threaded device; median of {args.repeats}")

    def block1_grad():
        def loss(k):
            hi, lo, _, var = fused_block1.window_stats(mel, k, pool)
            a = jax.lax.rsqrt(var + 1e-3)
            return (jax.nn.elu(jnp.where(a >= 0, hi, lo) * a) * g1).sum()
        return jax.jit(jax.grad(loss))

    def block2_filter_grad():
        return jax.jit(lambda x, g: jax.vjp(lambda k: conv.conv3x3(x, k), k2)[1](g)[0])

    model, tx = Tagger(cfg, norm="train"), train.make_optimizer(1e-3)
    mesh = train.make_mesh([dev])
    labels = (rng.random((b, cfg.n_classes)) < 0.1).astype(np.float32)
    xs, ys = train.shard_batch(mesh, np.asarray(mel), labels)
    state = train.create_train_state(jax.random.key(0), model, tx, cfg.frontend.n_frames, mesh)

    def step():
        fn = jax.jit(train.make_train_step(model, tx))  # no donation: the same state each call
        return lambda s, x, y: fn(s, x, y)[1]["loss"]

    rows = (("block 1 forward + kernel gradient", block1_grad, (k1,)),
            ("block 2 kernel gradient", block2_filter_grad, (x2, g2)),
            ("train step (Adam)", step, (state, xs, ys)))
    for name, make, a in rows:
        on, off = both_ways(make, *a)
        want, got = off(*a), on(*a)
        diff = max(float(jnp.abs(u - v).max() / (jnp.abs(v).max() + 1e-30))
                   for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
        t = interleaved({"kernels": lambda: on(*a), "xla": lambda: off(*a)}, args.repeats)
        print(f"{name:36s} kernels {t['kernels'] * 1e3:8.1f} ms   XLA {t['xla'] * 1e3:8.1f} ms   "
              f"{t['xla'] / t['kernels']:4.1f}x   max rel diff {diff:.1e}   "
              f"({b / t['kernels']:.1f} vs {b / t['xla']:.1f} clips/s)")


if __name__ == "__main__":
    main()
