"""Log-mel frontend: a librosa host reference and a jitted, batched JAX version.

Both compute exactly what the published model's kapre layer computed (see
`FrontendConfig`): 'same' STFT framing, periodic Hann, power 2, Slaney mel filterbank,
10*log10(max(x, amin)), minus a reference maximum, floored at -top_db.

The dB reference (`ref`):
- "clip": each clip's own maximum (batch-independent; the one-file extractor),
- "batch": the maximum of the whole batch (what the model saw in batches),
- a float: a fixed level in dB (deterministic, batch-independent).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from transfer_jax.config import FrontendConfig

Ref = str | float


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: FrontendConfig) -> np.ndarray:
    """Slaney-normalised mel filterbank, shape (n_bins, n_mels) = (257, 96)."""
    import librosa

    fb = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
        fmin=cfg.fmin, fmax=cfg.fmax, norm="slaney", htk=False,
    )
    return np.ascontiguousarray(fb.T, dtype=np.float32)


def _pad_widths(n: int, cfg: FrontendConfig) -> tuple[int, int]:
    """Zeros (left, right) so that ceil(n / hop) frames start at -pad_left."""
    frames = -(-n // cfg.hop_length)
    needed = (frames - 1) * cfg.hop_length + cfg.n_fft
    return cfg.pad_left, max(needed - cfg.pad_left - n, 0)


def _to_db(mel, ref: Ref, amin: float, top_db: float, xp, batch_axes: tuple[int, ...]):
    db = 10.0 * xp.log10(xp.maximum(mel, amin))
    if ref == "clip":
        db = db - db.max(axis=batch_axes[1:], keepdims=True)
    elif ref == "batch":
        db = db - db.max()
    elif isinstance(ref, (int, float)):
        db = db - ref
    else:
        raise ValueError(f"dB reference must be 'clip', 'batch' or a number, got {ref!r}")
    return xp.maximum(db, -top_db)


def log_mel_librosa(y: np.ndarray, cfg: FrontendConfig = FrontendConfig(), ref: Ref = "clip") -> np.ndarray:
    """Host reference. y: (n_samples,) or (batch, n_samples) -> (..., n_mels, frames)."""
    import librosa

    y = np.asarray(y, dtype=np.float32)
    batched = y.ndim == 2
    y2 = y if batched else y[None]
    left, right = _pad_widths(y2.shape[-1], cfg)
    padded = np.pad(y2, ((0, 0), (left, right)))
    spec = librosa.stft(padded, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                        window="hann", center=False)
    power = np.abs(spec) ** 2  # (batch, n_bins, frames)
    mel = np.einsum("bkt,km->bmt", power, mel_filterbank(cfg).astype(np.float64))
    out = _to_db(mel, ref, cfg.amin, cfg.top_db, np, (0, 1, 2)).astype(np.float32)
    return out if batched else out[0]


def log_mel(y: jax.Array, cfg: FrontendConfig = FrontendConfig(), ref: Ref = "clip") -> jax.Array:
    """JAX frontend. y: (batch, n_samples) -> (batch, n_mels, frames). Jit-friendly."""
    y = jnp.asarray(y, jnp.float32)
    if y.ndim != 2:
        raise ValueError(f"log_mel expects (batch, n_samples), got shape {y.shape}")
    n = y.shape[-1]
    left, right = _pad_widths(n, cfg)
    padded = jnp.pad(y, ((0, 0), (left, right)))
    frames = -(-n // cfg.hop_length)
    idx = cfg.hop_length * jnp.arange(frames)[:, None] + jnp.arange(cfg.n_fft)[None, :]
    window = jnp.asarray(np.hanning(cfg.n_fft + 1)[:-1], jnp.float32)  # periodic Hann
    spec = jnp.fft.rfft(padded[:, idx] * window, axis=-1)  # (batch, frames, n_bins)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    mel = jnp.einsum("btk,km->bmt", power, jnp.asarray(mel_filterbank(cfg)),
                     precision=jax.lax.Precision.HIGHEST)
    return _to_db(mel, ref, cfg.amin, cfg.top_db, jnp, (0, 1, 2))


log_mel_jit = jax.jit(log_mel, static_argnames=("cfg", "ref"))
