"""Block 1 of the tagger as one fused CPU kernel, for extraction on CPU.

Block 1 (a 3x3 convolution of the one-channel log-mel, then per-channel BatchNorm, ELU and
a max-pool) is the largest elementwise cost of the forward pass: its (n_mels, frames, 32)
output is 16.7 MB per clip. `inference.clip_features` needs only each pool window's max
and min of the centred conv output and, for per-clip statistics, its sum of squares;
`conv1_pool_stats` computes exactly those in one pass with the conv output held in
registers (transfer_jax/csrc/cpu_kernels.cc, an XLA FFI call, so it runs inside jit and
on every CPU device). Block 1 alone 1.6-2.1x XLA's fused loops on one core, the whole
forward 1.65-1.70x at batch >= 8 (benchmarks/bench_block1.py, docs/benchmarks.md).

The kernel is built by `pip install` when a C++ compiler is present; `available()` says
whether it was. Without it, with TRANSFER_JAX_CPU_KERNELS=0 in the environment, and on
other backends (the choice is made per platform at lowering), the library computes the
same in XLA. `jax.export` of code that uses it needs
`DisabledSafetyCheck.custom_call("transfer_jax_conv1_pool_stats")` (or the kernel off).
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

CHANNELS = (16, 32, 64)  # the channel counts the kernel is compiled for (csrc/cpu_kernels.cc)


@functools.cache
def available() -> bool:
    """Whether the compiled kernel is installed and not switched off (and registers it
    with XLA for CPU)."""
    if os.environ.get("TRANSFER_JAX_CPU_KERNELS", "1") == "0":
        return False
    try:
        from transfer_jax import _cpu_kernels
    except ImportError:
        return False
    for name, capsule in _cpu_kernels.handlers().items():
        jax.ffi.register_ffi_target(f"transfer_jax_{name}", capsule, platform="cpu")
    return True


def conv1_pool_stats(x: jax.Array, kernel: jax.Array, mean: jax.Array, pool: tuple[int, int],
                     want_var: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pool-window statistics of d = conv3x3(x, kernel) - mean ('same', zero padded).

    x: (h, w) float32; kernel: (3, 3, 1, c), c in `CHANNELS`; mean: (c,). Returns the max and the min of d
    over each (ph, pw) window, (h // ph, w // pw, c), and the sum of d**2 over the whole
    (h, w) map, (c,) (zeros unless `want_var`); all NaN if x holds a NaN or an infinity.
    CPU only; `available()` must be True.
    """
    if not available():
        raise RuntimeError("transfer_jax._cpu_kernels is not built (reinstall with a C++ compiler)")
    (h, w), (ph, pw), c = x.shape, pool, mean.shape[-1]
    if c not in CHANNELS:
        raise ValueError(f"conv1_pool_stats: {c} channels; the kernel is built for {CHANNELS}")
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct((h // ph, w // pw, c), f32),) * 2 + (jax.ShapeDtypeStruct((c,), f32),)
    call = jax.ffi.ffi_call("transfer_jax_conv1_pool_stats", out, vmap_method="sequential")
    outs = call(x.astype(f32), kernel.astype(f32), mean.astype(f32), ph=int(ph), pw=int(pw),
                want_var=int(want_var))
    return tuple(_varying_like(o, x) for o in outs)


def _varying_like(out: jax.Array, x: jax.Array) -> jax.Array:
    """Inside shard_map, marks `out` as varying over the mesh axes `x` varies over (an FFI
    call's results carry none, and `lax.platform_dependent` needs both branches' types equal)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10; `vma` before
    axes = tuple(manual.varying if manual is not None else getattr(aval, "vma", ()))
    if not axes:
        return out
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(out, axes, to="varying")
    return jax.lax.pvary(out, axes)  # jax < 0.8
