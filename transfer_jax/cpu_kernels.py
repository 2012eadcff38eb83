"""The tagger's costliest CPU steps as C++ kernels (XLA FFI calls), for extraction and training.

For extraction (`inference.clip_features`), each block (a 3x3 convolution, then
per-channel BatchNorm, ELU and a max-pool) needs only each pool window's max and min of
the centred conv output and, for per-clip statistics, its sum of squares (BatchNorm and
ELU commute with the pool, `model.pooled_affine`). `conv_block` computes those in one
pass, so the conv output never exists in memory (block 1's would be 16.7 MB per clip),
then BatchNorm, ELU and the layer's feature on the pooled map: block 1 (one input
channel) as a direct convolution with the output in registers, blocks 2-5 by Winograd's
F(2x2, 3x3) (2.25x fewer multiply-adds than a direct convolution; block 2 is ~75 % of
the forward pass's FLOPs) through a two-row buffer. One XLA FFI call per block
(transfer_jax/csrc/cpu_kernels.cc), so it runs inside jit and on every CPU device.
Measured per block and for the whole forward in docs/benchmarks.md
(benchmarks/bench_blocks.py).

For training (batch statistics, `fused_block1`), `conv1_pool_select` returns the
windows' max and min with the positions attaining them, `conv1_pool_select_grad` the
kernel's gradient from those positions, and `patch_moments` each example's 3x3 patch
mean and covariance (the conv output's mean and variance follow for any kernel);
`conv3x3_filter_grad` is the other blocks' kernel gradient (`conv`), which XLA computes
at a third of its forward convolution's speed. These take a batch and are batch-parallel
under `jit` with a sharded batch (`custom_partitioning`: each device runs its own
examples; `runtime.enable_compilation_cache` keeps such programs cacheable), and
sequential under `vmap`.

The kernels are built by `pip install` when a C++ compiler is present; `available()` says
whether they were. Without them, with TRANSFER_JAX_CPU_KERNELS=0 in the environment, and on
other backends (the choice is made per platform at lowering), the library computes the
same in XLA. `jax.export` of code that uses them needs
`DisabledSafetyCheck.custom_call(name)` for each `transfer_jax_*` target (or the kernels off).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.custom_batching
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

CHANNELS = (16, 32, 64)  # the channel counts the kernel is compiled for (csrc/cpu_kernels.cc)
MAX_WINDOW = 16  # conv1_pool_select: pool windows of at most this many elements (uint16 masks)


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


def conv_block(x: jax.Array, kernel: jax.Array, mean: jax.Array, var: jax.Array | None, scale: jax.Array,
               bias: jax.Array, eps: float, pool: tuple[int, int], threads: int = 1) -> tuple[jax.Array, jax.Array]:
    """One block of the extraction for one example, in one call: 'same' 3x3 convolution
    (zero padded, no bias), BatchNorm with the given statistics, ELU, max-pool.

    x: (h, w, c_in) float32; kernel: (3, 3, c_in, c), c in `CHANNELS` and c_in 1 or c;
    mean: (c,), the conv output's; var: (c,), or None for the conv output's own biased
    variance over (h, w); scale, bias: BatchNorm's (c,). Returns the block's output
    elu(scale * (y - mean) / sqrt(var + eps) + bias) max-pooled by (ph, pw), (h // ph,
    w // pw, c), and its mean over the map, (c,); all NaN if x holds a NaN or an infinity.
    One input channel (block 1): a direct convolution; c_in = c (blocks 2-5): Winograd's
    F(2x2, 3x3). `threads` 2: the call's rows are split with a helper thread (for a
    caller with an idle core, `inference.kernel_threads`; TRANSFER_JAX_KERNEL_THREADS=1 in
    the environment forbids it). CPU only; `available()` must be True.
    """
    _require_built()
    (h, w, c_in), (ph, pw), c = x.shape, pool, mean.shape[-1]
    if c not in CHANNELS or c_in not in (1, c) or kernel.shape != (3, 3, c_in, c):
        raise ValueError(f"conv_block: {c_in} -> {c} channels; the kernel is built for 1 or c -> c, "
                         f"c in {CHANNELS}")
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct((h // ph, w // pw, c), f32), jax.ShapeDtypeStruct((c,), f32))
    call = jax.ffi.ffi_call("transfer_jax_conv_block", out, vmap_method="sequential")
    args = (x, kernel, mean, mean if var is None else var, scale, bias)  # var None: a placeholder, unread
    outs = call(*(a.astype(f32) for a in args), ph=int(ph), pw=int(pw), var_given=int(var is not None),
                eps=np.float32(eps), threads=int(threads))
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


def conv1_pool_select(x: jax.Array, kernel: jax.Array, mean: jax.Array, pool: tuple[int, int]
                      ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Window max and min of d = conv3x3(x, kernel) - mean for a batch, with where they are.

    x: (n, h, w) float32; kernel: (3, 3, 1, c), c in `CHANNELS`; mean: (c,); pool (ph, pw)
    with ph * pw <= `MAX_WINDOW`. Returns hi, lo (n, h // ph, w // pw, c) and two uint16
    masks of that shape: bit a * pw + b set where window element (a, b) equals the max
    (the min); several bits on ties. An example holding a NaN or an infinity gets NaN
    extremes and empty masks.
    """
    (n, h, w), (ph, pw), c = x.shape, pool, mean.shape[-1]
    _check(c, pool)
    return _select_call(int(ph), int(pw))(x.astype(jnp.float32), kernel.reshape(9, c).astype(jnp.float32),
                                          mean.astype(jnp.float32))


def conv1_pool_select_grad(x: jax.Array, masks: tuple[jax.Array, jax.Array],
                           cotangents: tuple[jax.Array, jax.Array], pool: tuple[int, int],
                           centre: jax.Array | None = None) -> jax.Array:
    """Per-example sum over windows of each window's cotangent, split evenly over its tied
    positions, times (the 3x3 patch there - `centre`), (n, 3, 3, 1, c): with centre 0 the
    gradient of sum(g_hi * hi + g_lo * lo) w.r.t. the kernel, with hi and lo from
    `conv1_pool_select` (the mean held fixed); with the batch's patch mean as the centre,
    the same minus centre x sum(g), without the cancellation of large terms (`fused_block1`).
    x: (n, h, w); masks and cotangents: (n, h // ph, w // pw, c); centre: (9,) or (3, 3)."""
    n, c = x.shape[0], masks[0].shape[-1]
    _check(c, pool)
    centre = jnp.zeros(9, jnp.float32) if centre is None else jnp.asarray(centre, jnp.float32).reshape(9)
    dk = _select_grad_call(int(pool[0]), int(pool[1]))(x.astype(jnp.float32), *masks,
                                                       *(g.astype(jnp.float32) for g in cotangents), centre)
    return dk.reshape(n, 3, 3, 1, c)


def patch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each example's 3x3 patch mean (n, 9) and covariance (n, 9, 9) over the (h, w)
    positions of a 'same' zero-padded convolution, taps in (row, column) order: the conv
    output y = patch . k has mean mean . k and variance k' cov k. x: (n, h, w)."""
    _require_built()
    return _moments_call()(x.astype(jnp.float32))


def _require_built() -> None:
    if not available():
        raise RuntimeError("transfer_jax._cpu_kernels is not built (reinstall with a C++ compiler)")


def _check(c: int, pool: tuple[int, int]) -> None:
    _require_built()
    if c not in CHANNELS:
        raise ValueError(f"{c} channels; the kernel is built for {CHANNELS}")
    if pool[0] * pool[1] > MAX_WINDOW:
        raise ValueError(f"pool {tuple(pool)}: windows of more than {MAX_WINDOW} elements are not supported")


def _batch_parallel(fn: Callable, batched: tuple[bool, ...], rule: str, replicate: tuple[str, ...]) -> Callable:
    """`fn` (an FFI call mapping examples independently) partitioned along the leading
    axis under jit: each device calls it on its own examples (`batched` arguments and every
    result split like the first batched argument's leading axis, the others replicated).
    Without this XLA would gather the whole batch onto every device."""
    wrapped = custom_partitioning(fn)

    def batch_axes(mesh, arg_shapes):
        spec = arg_shapes[batched.index(True)].sharding.spec
        return spec[0] if len(spec) else None

    def split(mesh, axes, ndim):
        return NamedSharding(mesh, P(axes, *(None,) * (ndim - 1)))

    def infer(mesh, arg_shapes, result_shape):
        axes = batch_axes(mesh, arg_shapes)
        return jax.tree.map(lambda r: split(mesh, axes, len(r.shape)), result_shape)

    def partition(mesh, arg_shapes, result_shape):
        axes = batch_axes(mesh, arg_shapes)
        args = tuple(split(mesh, axes if b else None, len(a.shape)) for a, b in zip(arg_shapes, batched))
        return mesh, fn, infer(mesh, arg_shapes, result_shape), args

    wrapped.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                          need_replication_factors=replicate)
    return _sequential_under_vmap(wrapped)


def _sequential_under_vmap(fn: Callable) -> Callable:
    """`fn` with a batching rule (custom_partitioning has none): under `vmap`, one call per
    mapped element (`lax.map`), e.g. for per-example gradients, vmap(grad(loss))."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        def one(mapped):
            it = iter(mapped)
            return fn(*(next(it) if b else a for a, b in zip(args, in_batched)))

        outs = jax.lax.map(one, [a for a, b in zip(args, in_batched) if b])
        return outs, jax.tree.map(lambda _: True, outs)

    return wrapped


def _result(shape, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)


@functools.cache
def _select_call(ph: int, pw: int) -> Callable:
    def call(x, kernel, mean):
        (n, h, w), c = x.shape, mean.shape[0]
        pooled = (n, h // ph, w // pw, c)
        out = (_result(pooled),) * 2 + (_result(pooled, jnp.uint16),) * 2
        return jax.ffi.ffi_call("transfer_jax_conv1_pool_select", out)(x, kernel, mean, ph=ph, pw=pw)

    return _batch_parallel(call, (True, False, False), "n h w, t c, c -> n y x c, n y x c, n y x c, n y x c",
                           ("h", "w", "t", "c", "y", "x"))


@functools.cache
def _select_grad_call(ph: int, pw: int) -> Callable:
    def call(x, mhi, mlo, ghi, glo, centre):
        n, c = x.shape[0], mhi.shape[-1]
        return jax.ffi.ffi_call("transfer_jax_conv1_pool_select_grad", _result((n, 9, c)))(
            x, mhi, mlo, ghi, glo, centre, ph=ph, pw=pw)

    return _batch_parallel(call, (True,) * 5 + (False,),
                           "n h w, n y x c, n y x c, n y x c, n y x c, t -> n t c",
                           ("h", "w", "y", "x", "c", "t"))


@functools.cache
def _moments_call() -> Callable:
    def call(x):
        n = x.shape[0]
        return jax.ffi.ffi_call("transfer_jax_patch_moments", (_result((n, 9)), _result((n, 9, 9))))(x)

    return _batch_parallel(call, (True,), "n h w -> n t, n s u", ("h", "w", "t", "s", "u"))


def conv3x3_filter_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """Per-example kernel gradient of a 'same' 3x3 convolution (stride 1, no dilation),
    NHWC: x (n, h, w, c), g = d loss / d output (n, h, w, c), c in `CHANNELS` in and out
    -> (n, 3, 3, c, c) (HWIO per example; their sum is the batch's)."""
    _require_built()
    if x.shape[-1] != g.shape[-1] or x.shape[-1] not in CHANNELS:
        raise ValueError(f"conv3x3_filter_grad: {x.shape[-1]} -> {g.shape[-1]} channels; built for {CHANNELS} -> same")
    return _filter_grad_call()(x.astype(jnp.float32), g.astype(jnp.float32))


@functools.cache
def _filter_grad_call() -> Callable:
    def call(x, g):
        n, c = x.shape[0], x.shape[-1]
        return jax.ffi.ffi_call("transfer_jax_conv3x3_filter_grad", _result((n, 3, 3, c, c)))(x, g)

    return _batch_parallel(call, (True, True), "n h w c, n h w d -> n i j c d", ("h", "w", "c", "d", "i", "j"))
