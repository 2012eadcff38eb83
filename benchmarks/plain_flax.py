"""The straightforward Flax extraction and training, kept as the benchmarks' "before".

What `transfer_jax` computed before its speed work (docs/benchmarks.md): `PlainTagger`, the layers in their literal order (BatchNorm and ELU
at full resolution, then `flax.linen.max_pool`, whose gradient XLA computes by
select-and-scatter), with the same variables as `transfer_jax.model.Tagger`; extraction
as `PlainTagger.apply` vmapped over examples. Same numbers as the library (checked in
bench_extraction.py), slower.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from transfer_jax import frontend
from transfer_jax.config import ModelConfig
from transfer_jax.model import ModeBatchNorm, Tagger, he_normal


class PlainTagger(nn.Module):
    """`Tagger` written layer by layer: Conv3x3 -> BatchNorm -> ELU -> MaxPool, x5."""

    config: ModelConfig = ModelConfig()
    norm: str = "running"

    @nn.compact
    def __call__(self, mel: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg, x, features = self.config, mel[..., None], []
        for i, pool in enumerate(cfg.pools, start=1):
            x = nn.Conv(cfg.channels, (3, 3), padding="SAME", kernel_init=he_normal, name=f"conv{i}")(x)
            x = ModeBatchNorm(self.norm, cfg.bn_epsilon, cfg.bn_momentum, name=f"bn{i}")(x)
            x = nn.max_pool(nn.elu(x), pool, strides=pool, padding="VALID")
            features.append(x.mean(axis=(1, 2)))
        return nn.Dense(cfg.n_classes, name="dense")(features[-1]), jnp.stack(features, axis=1)


def plain(model: Tagger) -> PlainTagger:
    return PlainTagger(model.config, model.norm)


def _apply_each(model: Tagger, variables: dict, mel: jax.Array) -> jax.Array:
    return jax.vmap(lambda m: plain(model).apply(variables, m[None])[1][0])(mel)


@functools.partial(jax.jit, static_argnames=("model",))
def features_from_mel(model: Tagger, variables: dict, mel: jax.Array) -> jax.Array:
    """(batch, n_mels, frames) -> (batch, n_layers, channels): vmap of `model.apply`."""
    return _apply_each(model, variables, mel)


@functools.partial(jax.jit, static_argnames=("model", "ref"))
def features_from_audio(model: Tagger, variables: dict, waves: jax.Array, ref: frontend.Ref = "clip") -> jax.Array:
    """(batch, n_samples) -> (batch, n_layers, channels): vmap of log-mel and apply."""
    cfg = model.config.frontend
    return jax.vmap(lambda w: _apply_each(model, variables, frontend.log_mel(w[None], cfg, ref))[0])(waves)
