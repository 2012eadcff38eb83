"""The paper's 5-block convnet tagger as a Flax linen module.

`Tagger(config, norm)(mel)` maps log-mels (batch, n_mels, frames) to
(logits (batch, n_classes), features (batch, n_layers, channels)), where layer k's
feature is the global average over freq x time of block k's output after its max-pool.

BatchNorm normalisation modes (`norm`), a static property of the module:
- "train":    batch statistics, running averages updated (needs mutable batch_stats);
- "running":  the stored running averages (models trained here in the usual way, or
              dataset statistics stored in their place);
- "batch":    statistics of the current batch over (batch, freq, time), as Keras 1
              BatchNorm mode 2 did at inference: features depend on the batch;
- "per_clip": each clip normalised by its own channel statistics over (freq, time):
              the published one-file extractor (a batch of one); batch-independent.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from transfer_jax import conv, fused_block1
from transfer_jax.config import ModelConfig
from transfer_jax.fused_block1 import max_pool

NORM_MODES = ("train", "running", "batch", "per_clip")

# Keras 1 'he_normal': untruncated normal with variance 2 / fan_in.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def check_pool_fits(mel_shape: tuple[int, ...], pools: tuple[tuple[int, int], ...], block: int,
                    seen: tuple[int, int]) -> None:
    """A clear error when block `block` (1-based) sees a (freq, time) map smaller than its pool."""
    pool = pools[block - 1]
    if seen[0] < pool[0] or seen[1] < pool[1]:
        raise ValueError(f"input {tuple(mel_shape)} is too small for pools {pools}: block {block} "
                         f"sees {tuple(seen)} but pools {pool}")


class ModeBatchNorm(nn.Module):
    """BatchNorm over NHWC with the normalisation modes above. Biased variance."""

    norm: str
    epsilon: float = 1e-3
    momentum: float = 0.99

    @nn.compact
    def __call__(self, x: jax.Array | None, pool: tuple[int, int] | None = None,
                 window_stats: fused_block1.Stats | None = None) -> jax.Array:
        """x: (batch, h, w, c) -> BatchNorm(x); with `pool`, max_pool(BatchNorm(x), pool),
        computed pool-first (see `pooled_affine`). Or, in the batch-statistics modes, from
        `window_stats` = (hi, lo, mean, var) of x computed elsewhere (`fused_block1`; x
        None): hi, lo = the pool windows' max and min of x - mean, mean and var x's."""
        if self.norm not in NORM_MODES:
            raise ValueError(f"norm must be one of {NORM_MODES}, got {self.norm!r}")
        if window_stats is not None and self.norm not in ("train", "batch"):
            raise ValueError(f"window_stats are batch statistics; norm is {self.norm!r}")
        c = x.shape[-1] if window_stats is None else window_stats[2].shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if self.norm == "running":
            mean, var = ra_mean.value, ra_var.value
        elif window_stats is not None:
            mean, var = window_stats[2], window_stats[3]
        else:
            axes = (1, 2) if self.norm == "per_clip" else (0, 1, 2)
            mean = x.mean(axis=axes, keepdims=True)
            var = jnp.square(x - mean).mean(axis=axes, keepdims=True)
        if self.norm == "train" and not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * mean.reshape(c)
            ra_var.value = m * ra_var.value + (1 - m) * var.reshape(c)
        a = jax.lax.rsqrt(var + self.epsilon) * scale
        if window_stats is not None:
            return affine_of_extremes(*window_stats[:2], a, bias)
        if pool is None:
            return (x - mean) * a + bias
        return pooled_affine(x - mean, a, bias, pool)


def pooled_affine(d: jax.Array, a: jax.Array, b: jax.Array, window: tuple[int, int]) -> jax.Array:
    """max_pool(a * d + b) for a per-channel affine map, as a * max_pool(d) + b where
    a >= 0 and a * min_pool(d) + b where a < 0: the same values (the map is monotone in
    each channel) and, away from ties, the same gradients, with the affine map and what
    follows it (ELU, which is increasing, commutes with the pool too) on the pooled map,
    8 to 20x smaller. d: (batch, h, w, c); a, b broadcast against it."""
    return affine_of_extremes(max_pool(d, window), -max_pool(-d, window), a, b)


def affine_of_extremes(hi: jax.Array, lo: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """max over a window of a * d + b, from the window's max `hi` and min `lo` of d: the
    max where a >= 0, the min where a < 0 (per channel)."""
    return jnp.where(a >= 0, hi, lo) * a + b


class ConvParams(nn.Module):
    """The parameters `nn.Conv(features, (3, 3), kernel_init=he_normal)` creates for
    `in_features` input channels (same names, shapes, initialisers and order, so the same
    values), with the convolution computed outside flax (`conv`, `fused_block1`):
    () -> (kernel (3, 3, in_features, features), bias (features,))."""

    features: int
    in_features: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", he_normal, (3, 3, self.in_features, self.features), jnp.float32)
        return kernel, self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)


class Tagger(nn.Module):
    """Conv3x3 -> BatchNorm -> ELU -> MaxPool, five times; global average; Dense.

    (benchmarks/plain_flax.py keeps the literal layer order as a reference.)"""

    config: ModelConfig = ModelConfig()
    norm: str = "running"

    @nn.compact
    def __call__(self, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        x = mel[..., None]  # (batch, freq, time, 1)
        features = []
        for i, pool in enumerate(cfg.pools, start=1):
            check_pool_fits(mel.shape[1:], cfg.pools, i, x.shape[1:3])
            kernel, bias = ConvParams(cfg.channels, x.shape[-1], name=f"conv{i}")()
            bn = ModeBatchNorm(self.norm, cfg.bn_epsilon, cfg.bn_momentum, name=f"bn{i}")
            if i == 1 and self.norm in ("train", "batch"):
                # the one-channel block with batch statistics: its full-size conv output
                # is never materialised on CPU (`fused_block1`); the same values
                hi, lo, mean, var = fused_block1.window_stats(mel, kernel, pool)
                x = bn(None, window_stats=(hi, lo, mean + bias, var))
            else:
                # BatchNorm -> ELU -> max-pool, computed as pool(BatchNorm) -> ELU: the same
                # values, as both maps are monotone per channel (`pooled_affine`)
                y = conv.conv3x3(x, kernel) + bias
                self.sow("intermediates", f"conv{i}_output", y)  # for dataset statistics
                x = bn(y, pool)
            x = nn.elu(x)
            features.append(x.mean(axis=(1, 2)))
        logits = nn.Dense(cfg.n_classes, name="dense")(features[-1])
        return logits, jnp.stack(features, axis=1)


def init_variables(model: Tagger, rng: jax.Array, n_frames: int | None = None) -> dict:
    """Initial {'params', 'batch_stats'} for inputs (1, n_mels, n_frames)."""
    fe = model.config.frontend
    shape = (1, fe.n_mels, n_frames or fe.n_frames)
    return dict(jax.jit(model.init)(rng, jnp.zeros(shape, jnp.float32)))


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
