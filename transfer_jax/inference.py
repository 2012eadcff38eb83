"""The tagger's forward pass for one example, rearranged for speed; same numbers.

`clip_features(model, variables, mel)` equals `model.apply(variables, mel[None])[1][0]`
for the per-example norms ("per_clip", "running") to float32 rounding (tested against
the module and against the published weights). Two rearrangements make it 2-3x faster:

- Max-pool before BatchNorm + ELU. Both are per-channel and monotone, so
  max(elu(a x + b)) = elu(a max(x) + b) when a >= 0, and elu(a min(x) + b) when a < 0.
  The statistics still come from the full-resolution conv output, but the affine map
  and ELU run on the pooled map (8 to 20x smaller), and XLA fuses the max, min and
  sum-of-squares of each pooling window into one pass over the conv output.
- No conv output is written to memory on CPU: one fused kernel per block
  (`cpu_kernels.conv_block`, when built) computes each window's max and min and the sum
  of squares as the convolution produces them (block 1 directly, with the output in
  registers; blocks 2-5 by Winograd's F(2x2, 3x3)), then BatchNorm, ELU and the feature
  on the pooled map. Elsewhere block 1's convolution is 9 shifted multiply-adds that XLA
  fuses into the reductions consuming them. The per-clip mean comes from the input by
  linearity.

`map_examples` runs a per-example function over a batch: `lax.map` in chunks of
`micro_batch` on CPU, where one example's activations stay in cache (vmap makes XLA
materialise batch x 16.7 MB per block-1 tensor), and `vmap` on accelerators; given a
mesh, the batch is split over its devices first (`shard_map`), each device mapping its
own examples. On CPU that is one device per core (`runtime.use_cpu_cores`): each core
runs whole examples single-threaded instead of both cores sharing every small op
(measured 1.2-1.3x on 2 cores, docs/benchmarks.md).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from transfer_jax import conv, cpu_kernels, runtime
from transfer_jax.model import Tagger, check_pool_fits, pooled_affine

PER_EXAMPLE_NORMS = ("per_clip", "running")


def default_micro_batch() -> int:
    """Examples per `lax.map` step: 1 on CPU (measured 1.08x over 2 on one device, 1.14 to
    1.25x with one device per core); 0 (= vmap the whole batch) elsewhere."""
    return 1 if jax.default_backend() == "cpu" else 0


def data_mesh(devices: Sequence[jax.Device] | None = None, n_examples: int | None = None) -> Mesh | None:
    """A 1-D 'data' mesh over `devices` (default: this host's), at most `n_examples` of
    them (a batch of 1 is not padded to keep a second core busy), or None for one."""
    devices = list(jax.local_devices() if devices is None else devices)[: n_examples or None]
    return Mesh(np.asarray(devices), ("data",)) if len(devices) > 1 else None


def kernel_threads(mesh: Mesh | None) -> int:
    """Threads each example's CPU kernels may use (`clip_features`): 2 when this process
    has at least twice as many cores as devices in use (`mesh`, None for one), e.g. a
    batch of one on two cores (one device: the other core would idle; measured 1.2-1.7x
    at batch 1, docs/benchmarks.md); else 1, every core running examples of its own."""
    return 2 if runtime.available_cores() >= 2 * (mesh.size if mesh is not None else 1) else 1


def map_examples(fn: Callable[[Any, jax.Array], jax.Array], consts: Any, xs: jax.Array,
                 micro_batch: int, mesh: Mesh | None = None) -> jax.Array:
    """fn(consts, x) over the leading axis of xs: lax.map in chunks of micro_batch, or
    vmap if 0; with `mesh`, xs split over its 'data' axis (len(xs) a multiple of its
    size, see `pad_to_mesh`) and `consts` replicated."""
    def local(consts, xs):
        one = lambda x: fn(consts, x)
        return jax.lax.map(one, xs, batch_size=micro_batch) if micro_batch > 0 else jax.vmap(one)(xs)

    if mesh is None:
        return local(consts, xs)
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data"))(consts, xs)


def pad_to_mesh(xs: jax.Array | np.ndarray, mesh: Mesh | None) -> tuple[jax.Array, int]:
    """xs with zero examples appended up to a multiple of the mesh's size, placed split
    over it (host arrays go to each device directly); and the true count, to slice the
    result back to."""
    n = len(xs)
    if mesh is None:
        return jnp.asarray(xs), n
    pad = -n % mesh.size
    if pad:
        lib = np if isinstance(xs, np.ndarray) else jnp
        xs = lib.concatenate([xs, lib.zeros((pad,) + xs.shape[1:], xs.dtype)])
    return jax.device_put(xs, NamedSharding(mesh, P("data"))), n


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """`tree` (e.g. variables) copied to every device of the mesh; as it is without one."""
    return tree if mesh is None else jax.device_put(tree, NamedSharding(mesh, P()))


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'same' 3x3 convolution without bias, (h, w, c_in) -> (h, w, c_out)."""
    h, w, c_in = x.shape
    if c_in == 1:
        p = jnp.pad(x[..., 0], 1)
        return sum(p[i:i + h, j:j + w, None] * kernel[i, j, 0] for i in range(3) for j in range(3))
    return conv.lax_conv3x3(x[None], kernel)[0]


def _conv_mean(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Per-channel mean of conv3x3(x, kernel), (c_out,), from the input by linearity, so
    the output itself need not be materialised: tap (i, j) of the zero-padded 'same'
    convolution sees all of x but the last / first row (i = 0 / 2) and column (j = 0 / 2)."""
    h, w, _ = x.shape
    total, zero = x.sum(axis=(0, 1)), jnp.zeros(x.shape[-1], x.dtype)
    row_out = jnp.stack([x[-1].sum(axis=0), zero, x[0].sum(axis=0)])  # (3, c_in): the row tap i misses
    col_out = jnp.stack([x[:, -1].sum(axis=0), zero, x[:, 0].sum(axis=0)])
    corner = jnp.stack([jnp.stack([x[-1, -1], zero, x[-1, 0]]), jnp.zeros((3,) + zero.shape, x.dtype),
                        jnp.stack([x[0, -1], zero, x[0, 0]])])  # (3, 3, c_in): missed twice, added back
    taps = total - row_out[:, None] - col_out[None, :] + corner  # (3, 3, c_in)
    return jnp.einsum("ijc,ijcd->d", taps, kernel) / (h * w)


def clip_features(model: Tagger, variables: dict, mel: jax.Array, threads: int = 1) -> jax.Array:
    """One example's features, (n_mels, frames) -> (n_layers, channels): block k's output
    after its max-pool, averaged over frequency and time, as `Tagger` computes them.
    `threads`: how many the CPU kernels may use for this example (`kernel_threads`)."""
    if model.norm not in PER_EXAMPLE_NORMS:
        raise ValueError(f"clip_features needs a per-example norm {PER_EXAMPLE_NORMS}, got {model.norm!r}")
    cfg, params, stats = model.config, variables["params"], variables["batch_stats"]
    x, feats = mel[..., None], []
    for i, pool in enumerate(cfg.pools, start=1):
        conv, bn = params[f"conv{i}"], params[f"bn{i}"]
        check_pool_fits(mel.shape, cfg.pools, i, x.shape[:2])
        if model.norm == "running":  # the bias cancels in conv - mean
            mean, var = stats[f"bn{i}"]["mean"] - conv["bias"], stats[f"bn{i}"]["var"]
        else:
            mean, var = _conv_mean(x, conv["kernel"]), None
        x, feature = _block(x, conv["kernel"], mean, var, bn["scale"], bn["bias"], cfg.bn_epsilon, pool, threads)
        feats.append(feature)
    return jnp.stack(feats)


def _block(x: jax.Array, kernel: jax.Array, mean: jax.Array, var: jax.Array | None, scale: jax.Array,
           bias: jax.Array, eps: float, pool: tuple[int, int], threads: int = 1) -> tuple[jax.Array, jax.Array]:
    """One block, pool first: elu(BatchNorm(conv3x3(x, kernel))) max-pooled, (h // ph,
    w // pw, c), and its mean over the map, (c,). `mean`: the conv output's (without its
    bias, which cancels); `var` None: the conv output's own biased variance over the full
    (h, w) map, as BatchNorm's. On CPU, a float32 block goes through one fused kernel
    (`cpu_kernels.conv_block`) when it is built and compiled for its channels; same
    numbers either way."""
    def in_xla():
        (h, w), (ph, pw) = x.shape[:2], pool
        d = conv3x3(x, kernel) - mean
        windows = d[: h // ph * ph, : w // pw * pw].reshape(h // ph, ph, w // pw, pw, -1)
        v = var
        if v is None:  # biased variance over the full map, as BatchNorm
            if h % ph == 0 and w % pw == 0:  # from the windows: one fused pass
                v = jnp.square(windows).sum(axis=(1, 3)).sum(axis=(0, 1)) / (h * w)
            else:
                v = jnp.square(d).mean(axis=(0, 1))
        out = jax.nn.elu(pooled_affine(d[None], jax.lax.rsqrt(v + eps) * scale, bias, pool)[0])
        return out, out.mean(axis=(0, 1))

    c_in, c = kernel.shape[2:]
    if (x.dtype != jnp.float32 or c not in cpu_kernels.CHANNELS or c_in not in (1, c)
            or not cpu_kernels.available()):
        return in_xla()
    fused = functools.partial(cpu_kernels.conv_block, x, kernel, mean, var, scale, bias, eps, pool, threads)
    return jax.lax.platform_dependent(cpu=fused, default=in_xla)


def clip_logits(model: Tagger, variables: dict, features: jax.Array) -> jax.Array:
    """Tag logits from `clip_features`' output: (..., n_layers, channels) -> (..., n_classes)."""
    dense = variables["params"]["dense"]
    return features[..., -1, :] @ dense["kernel"] + dense["bias"]
