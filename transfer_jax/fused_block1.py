"""Block 1 with batch statistics (BatchNorm's "train" and "batch" modes), fused on CPU.

Block 1 convolves the one-channel log-mel to (n, n_mels, frames, channels): 16.7 MB per
paper-size clip, which XLA writes, normalises, pools and, for the gradient, reads again
several times (63 % of a CPU train step, docs/benchmarks.md). What the tagger needs of it
is smaller: each pool window's max and min of d = conv(x, k) - mean (BatchNorm and ELU
are monotone per channel, `model.pooled_affine`) and the channel mean and variance over
the batch. `window_stats` computes those without the full map on CPU:

- mean and variance from the input's 3x3 patch moments (`cpu_kernels.patch_moments`):
  the conv output is patch . k, so its mean is mu . k and its variance k' C k, with mu
  and C the batch's patch mean and covariance (each example's, then combined exactly);
- the window extremes and where they are from one fused kernel (`conv1_pool_select`);
- the kernel's gradient in closed form (`jax.custom_vjp`): d hi / dk is the patch at the
  window's max minus mu (split evenly over tied positions, as XLA's max splits it),
  d var / dk = 2 C k, d mean / dk = mu (`conv1_pool_select_grad` sums the first part).

Elsewhere (other platforms, no compiled kernel, other channel counts or pools) and when
the input itself needs a gradient, `reference` computes the same in XLA.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from transfer_jax import cpu_kernels

Stats = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def max_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
    """Non-overlapping VALID max-pool of (batch, h, w, c), as a reshape and a max: the same
    values as `nn.max_pool(x, window, strides=window)`, with a gradient XLA computes
    elementwise instead of by select-and-scatter (1.4-1.7x faster training on CPU). Tied
    maxima share the gradient instead of the first one taking it."""
    n, h, w, c = x.shape
    ph, pw = window
    x = x[:, : h // ph * ph, : w // pw * pw]
    return x.reshape(n, h // ph, ph, w // pw, pw, c).max(axis=(2, 4))


def reference(x: jax.Array, kernel: jax.Array, pool: tuple[int, int]) -> Stats:
    """`window_stats` in XLA, through the full conv output."""
    dtype = jnp.result_type(x, kernel)
    y = jax.lax.conv_general_dilated(x[..., None].astype(dtype), kernel.astype(dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    mean = y.mean(axis=(0, 1, 2))
    d = y - mean
    return max_pool(d, pool), -max_pool(-d, pool), mean, jnp.square(d).mean(axis=(0, 1, 2))


def window_stats(x: jax.Array, kernel: jax.Array, pool: tuple[int, int]) -> Stats:
    """Pool-window extremes and batch statistics of a one-channel 'same' 3x3 convolution.

    x: (n, h, w); kernel: (3, 3, 1, c); pool: (ph, pw). With y = conv3x3(x, kernel) (no
    bias) and d = y - mean: hi, lo = the max and the min of d over each pool window,
    (n, h // ph, w // pw, c); mean, var = y's mean and biased variance over (n, h, w), (c,).
    Differentiable in both arguments; fused on CPU when it can be (see the module).
    """
    c = kernel.shape[-1]
    if (x.dtype != jnp.float32 or kernel.shape[:3] != (3, 3, 1) or c not in cpu_kernels.CHANNELS
            or pool[0] * pool[1] > cpu_kernels.MAX_WINDOW or not cpu_kernels.available()):
        return reference(x, kernel, pool)
    pool = (int(pool[0]), int(pool[1]))
    return jax.lax.platform_dependent(x, kernel, cpu=functools.partial(_fused, pool),
                                      default=functools.partial(reference, pool=pool))


def batch_patch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The batch's patch mean (9,) and covariance (9, 9), from each example's (the
    parallel-variance formula: within-example covariances plus the spread of the means)."""
    mu_n, cov_n = cpu_kernels.patch_moments(x)
    mu = mu_n.mean(axis=0)
    spread = mu_n - mu
    return mu, cov_n.mean(axis=0) + spread.T @ spread / x.shape[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(pool: tuple[int, int], x: jax.Array, kernel: jax.Array) -> Stats:
    return _fused_fwd(pool, x, kernel)[0]


def _fused_fwd(pool, x, kernel):
    perturbed = getattr(x, "perturbed", False)  # symbolic_zeros: whether x needs a gradient
    x, kernel = getattr(x, "value", x), getattr(kernel, "value", kernel)
    k = kernel.reshape(9, -1)
    mu, cov = batch_patch_moments(x)
    mean = mu @ k
    var = jnp.einsum("sc,st,tc->c", k, cov, k)
    hi, lo, mask_hi, mask_lo = cpu_kernels.conv1_pool_select(x, kernel, mean, pool)
    # the dict's key (static) tells the backward pass which way to go
    res = {"reference": (x, kernel)} if perturbed else {"fused": (x, k, mask_hi, mask_lo, mu, cov)}
    return (hi, lo, mean, var), res


def _fused_bwd(pool, res, cotangents):
    if "reference" in res:  # x needs a gradient too: XLA's way, through the full map
        outs, vjp = jax.vjp(functools.partial(reference, pool=pool), *res["reference"])
        return vjp(tuple(jnp.zeros_like(o) if isinstance(g, SymbolicZero) else g
                         for g, o in zip(cotangents, outs)))
    x, k, mask_hi, mask_lo, mu, cov = res["fused"]
    c = k.shape[1]
    g_hi, g_lo, g_mean, g_var = (jnp.zeros(s, jnp.float32) if isinstance(g, SymbolicZero) else g
                                 for g, s in zip(cotangents, (mask_hi.shape, mask_hi.shape, (c,), (c,))))
    # d hi / dk = (patch at the max) - mu, as every d carries -mean = -mu . k: summed with
    # the patches centred in the kernel (uncentred, two large sums would cancel)
    dk = cpu_kernels.conv1_pool_select_grad(x, (mask_hi, mask_lo), (g_hi, g_lo), pool, mu).sum(axis=0)
    dk = dk.reshape(9, c) + jnp.outer(mu, g_mean) + 2 * (cov @ k) * g_var
    return None, dk.reshape(3, 3, 1, c)


_fused.defvjp(_fused_fwd, _fused_bwd, symbolic_zeros=True)
