"""The tagger's 3x3 'same' convolution (NHWC, HWIO, stride 1), with a faster kernel
gradient on CPU.

Forward and input gradient are XLA's. The kernel gradient, XLA's backward-filter
convolution, runs at about a third of the forward's speed on CPU and was 41 % of a
paper-size train step once block 1 was fused (docs/benchmarks.md); on CPU, for c -> c
channels with c in `cpu_kernels.CHANNELS`, it is `cpu_kernels.conv3x3_filter_grad` (2-3x
faster, per example and batch-parallel under a sharded `jit`). Elsewhere, and for other
shapes, everything is XLA's. Same values to float32 rounding.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from transfer_jax import cpu_kernels


def lax_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's convolution: x (n, h, w, c_in), kernel (3, 3, c_in, c_out) -> (n, h, w, c_out)."""
    dtype = jnp.result_type(x, kernel)
    return jax.lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'same' 3x3 convolution without bias: x (n, h, w, c_in), kernel (3, 3, c_in, c_out)
    -> (n, h, w, c_out); its kernel gradient runs on the CPU kernel where it can."""
    c_in, c_out = kernel.shape[2:]
    if (x.dtype != jnp.float32 or kernel.dtype != jnp.float32 or kernel.shape[:2] != (3, 3)
            or c_in != c_out or c_in not in cpu_kernels.CHANNELS or not cpu_kernels.available()):
        return lax_conv3x3(x, kernel)
    return _conv3x3(x, kernel)


@jax.custom_vjp
def _conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax_conv3x3(x, kernel)


def _conv3x3_fwd(x, kernel):
    return lax_conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(res, g):
    x, kernel = res
    dx = jax.linear_transpose(lambda a: lax_conv3x3(a, kernel), x)(g)[0]
    dk = jax.lax.platform_dependent(
        x, g, cpu=lambda x, g: cpu_kernels.conv3x3_filter_grad(x, g).sum(axis=0),
        default=lambda x, g: jax.linear_transpose(lambda k: lax_conv3x3(x, k), kernel)(g)[0])
    return dx, dk


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
