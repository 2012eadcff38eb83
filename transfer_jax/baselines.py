"""The paper's MFCC baseline: 120 summary statistics of MFCCs and their differences.

Layout of the 120 dims (six blocks of 20 coefficients each, coefficient 0 first):

    [  0: 20) mean over time of the MFCCs
    [ 20: 40) std over time of the MFCCs
    [ 40: 60) mean of the deltas         (plain first differences along time)
    [ 60: 80) std of the deltas
    [ 80:100) mean of the delta-deltas   (first differences of the deltas)
    [100:120) std of the delta-deltas

This is the order of the authors' released `data_feats/<task>_mfcc.npy` (checked on
gtzan_speechmusic, emoMusic and ballroom_extended): block 0 column 0 is large and
negative (MFCC0 mean, about -100 to -180 on average), blocks 1, 3 and 5 are never
negative (standard deviations), and blocks 2 and 4 are close to zero (the mean of a
first difference is (last - first) / (T - 1)). It also matches their extraction code
(`_path_to_mfccs` in "1. feature extraction for 6 tasks.ipynb"), which concatenates
(mean, std) of mfcc, d, dd.
"""
from __future__ import annotations

from collections.abc import Sequence

import librosa
import numpy as np

from transfer_jax.config import FrontendConfig

_FRONTEND = FrontendConfig()
N_MFCC = 20
MFCC_DIM = N_MFCC * 3 * 2  # (mfcc, d, dd) x (mean, std)
# The authors zero-padded clips shorter than this so that librosa's centred framing
# (hop 512) yields 3 frames, the minimum for a delta-delta.
MIN_SAMPLES = 1024


def mfcc_deltas(mfcc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain first and second differences along time (not librosa.feature.delta).

    mfcc: (n_mfcc, T) -> (d (n_mfcc, T-1), dd (n_mfcc, T-2)).
    """
    d = np.diff(mfcc, axis=1)
    return d, np.diff(d, axis=1)


def summarize(mfcc: np.ndarray) -> np.ndarray:
    """(n_mfcc, T) MFCCs -> (6 * n_mfcc,) [mean, std] of mfcc, d, dd, in that order."""
    d, dd = mfcc_deltas(mfcc)
    blocks = []
    for m in (mfcc, d, dd):
        blocks += [m.mean(axis=1), m.std(axis=1)]
    return np.concatenate(blocks).astype(np.float32)


def mfcc_features(
    y: np.ndarray, sr: int = _FRONTEND.sample_rate, n_samples: int = _FRONTEND.n_samples
) -> np.ndarray:
    """MFCC baseline for one mono waveform: (n,) -> (120,) float32.

    Uses the first `n_samples` samples (29 s at 12 kHz) and librosa's MFCC defaults
    (n_fft 2048, hop 512, 128 Slaney mels, log power with top_db 80, orthonormal DCT-II)
    with 20 coefficients. Shorter clips are used as they are, zero-padded only up to
    MIN_SAMPLES as the authors did. `y` is expected already at `sr` (resampling is the
    loader's job).
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (n,), got {y.shape}")
    y = y[:n_samples]
    if len(y) < MIN_SAMPLES:
        y = np.pad(y, (0, MIN_SAMPLES - len(y)))
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC)
    return summarize(mfcc.astype(np.float64))


def mfcc_features_batch(
    waveforms: Sequence[np.ndarray],
    sr: int = _FRONTEND.sample_rate,
    n_samples: int = _FRONTEND.n_samples,
) -> np.ndarray:
    """MFCC baseline for many waveforms (any lengths): list of (n_i,) -> (N, 120) float32."""
    feats = [mfcc_features(w, sr=sr, n_samples=n_samples) for w in waveforms]
    if not feats:
        return np.zeros((0, MFCC_DIM), dtype=np.float32)
    return np.stack(feats)
