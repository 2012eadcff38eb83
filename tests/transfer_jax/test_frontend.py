import dataclasses

import librosa
import numpy as np
import pytest

from transfer_jax import frontend
from transfer_jax.config import FrontendConfig

SMALL = FrontendConfig(n_samples=48_000)


def _signals(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 12_000
    return np.stack([
        0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.normal(size=n),
        0.3 * rng.normal(size=n),
        np.sign(np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 1200 * t) * 0.2,
    ]).astype(np.float32)


def test_jax_frontend_matches_librosa_reference():
    y = _signals(SMALL.n_samples)
    ref = frontend.log_mel_librosa(y, SMALL, ref="clip")
    got = np.asarray(frontend.log_mel_jit(y, SMALL, "clip"))
    assert got.shape == ref.shape == (3, 96, 188)
    # Stated tolerance: 2e-3 dB (float32 FFT vs librosa's float64 path).
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_full_size_real_clip(anchors):
    y = np.load(anchors / "audio" / "1100103.clip.npy")
    cfg = FrontendConfig()
    ref = frontend.log_mel_librosa(y, cfg)
    got = np.asarray(frontend.log_mel_jit(y[None], cfg, "clip"))[0]
    assert got.shape == (96, 1360) and cfg.n_frames == 1360
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_framing_is_librosa_centered_shifted_by_pad_left():
    """pad_left=256 is exactly librosa's centred, zero-padded STFT; the default 257 is
    the same frames one sample earlier (the Theano kernel flip)."""
    y = _signals(SMALL.n_samples)[0]
    cfg256 = dataclasses.replace(SMALL, pad_left=256)
    mel = librosa.feature.melspectrogram(
        y=y, sr=12_000, n_fft=512, hop_length=256, window="hann", center=True, pad_mode="constant",
        power=2.0, n_mels=96, fmin=0, fmax=6000, norm="slaney", htk=False)
    db = np.maximum(10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(np.maximum(mel, 1e-10)).max(), -80)
    np.testing.assert_allclose(frontend.log_mel_librosa(y, cfg256), db, atol=1e-3)
    shifted = frontend.log_mel_librosa(np.concatenate([[0.0], y[:-1]]).astype(np.float32), cfg256)
    np.testing.assert_allclose(frontend.log_mel_librosa(y, SMALL)[:, 1:-1], shifted[:, 1:-1], atol=1e-3)


def test_db_reference_modes():
    y = _signals(SMALL.n_samples)
    y[1] *= 0.01  # a quiet clip
    clip = np.asarray(frontend.log_mel_jit(y, SMALL, "clip"))
    batch = np.asarray(frontend.log_mel_jit(y, SMALL, "batch"))
    fixed = np.asarray(frontend.log_mel_jit(y, SMALL, 20.0))
    assert clip.min() >= -80
    np.testing.assert_allclose(clip.max(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(batch.max(), 0.0, atol=1e-5)
    assert batch[1].max() < -30  # the quiet clip stays quiet
    # a fixed reference is batch-independent
    np.testing.assert_allclose(np.asarray(frontend.log_mel_jit(y[1:2], SMALL, 20.0))[0], fixed[1])
    with pytest.raises(ValueError, match="reference"):
        frontend.log_mel(y, SMALL, "loudest")


def test_silence_is_the_floor_not_nan():
    out = np.asarray(frontend.log_mel_jit(np.zeros((1, SMALL.n_samples), np.float32), SMALL, "clip"))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, 0.0, atol=1e-5)
