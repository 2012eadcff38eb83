"""MFCC baseline: shape, the plain-difference deltas, and the authors' column layout."""
from pathlib import Path

import librosa
import numpy as np
import pytest

from transfer_jax.baselines import (
    MFCC_DIM,
    mfcc_deltas,
    mfcc_features,
    mfcc_features_batch,
    summarize,
)

SR = 12_000
ANCHORS = Path(__file__).resolve().parents[2].parent / "shared" / "anchors" / "choi2017"


def _signal(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A chirp plus a little noise: MFCCs that change over time."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    y = 0.5 * np.sin(2 * np.pi * (200 * t + 300 * t**2)) + 0.01 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def test_shape_dtype():
    f = mfcc_features(_signal())
    assert f.shape == (MFCC_DIM,) == (120,)
    assert f.dtype == np.float32
    assert np.isfinite(f).all()


def test_matches_direct_computation_of_pieces():
    y = _signal()
    m = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20).astype(np.float64)
    d = m[:, 1:] - m[:, :-1]
    dd = d[:, 1:] - d[:, :-1]
    expected = np.concatenate(
        [m.mean(1), m.std(1), d.mean(1), d.std(1), dd.mean(1), dd.std(1)]
    )
    np.testing.assert_allclose(mfcc_features(y), expected, rtol=1e-5, atol=1e-4)
    # Not librosa's smoothed delta (Savitzky-Golay): that one differs.
    smoothed = librosa.feature.delta(m).std(1)
    assert not np.allclose(mfcc_features(y)[60:80], smoothed, rtol=1e-2)


def test_deltas_are_first_differences_of_a_known_matrix():
    t = np.arange(10, dtype=np.float64)
    m = np.stack([t**2, 3 * t, np.ones_like(t)])  # (3, 10)
    d, dd = mfcc_deltas(m)
    np.testing.assert_allclose(d[0], 2 * t[:-1] + 1)
    np.testing.assert_allclose(d[1], 3.0)
    np.testing.assert_allclose(dd[0], 2.0)
    np.testing.assert_allclose(dd[1:], 0.0)
    s = summarize(m)
    assert s.shape == (18,)
    # blocks: mean m, std m, mean d, std d, mean dd, std dd
    np.testing.assert_allclose(s[3:6], m.std(1), rtol=1e-6)
    np.testing.assert_allclose(s[6:9], [9.0, 3.0, 0.0], rtol=1e-6)  # mean of 2t+1, t<9
    np.testing.assert_allclose(s[12:15], [2.0, 0.0, 0.0], atol=1e-6)


def test_uses_only_first_n_samples():
    y = _signal(4.0)
    n = 2 * SR
    np.testing.assert_array_equal(mfcc_features(y, n_samples=n), mfcc_features(y[:n], n_samples=n))


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")
def test_short_and_batch():
    short = mfcc_features(np.zeros(100, np.float32) + 0.1)
    assert short.shape == (120,) and np.isfinite(short).all()
    batch = mfcc_features_batch([_signal(1.0), _signal(2.0, seed=1)])
    assert batch.shape == (2, 120) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], mfcc_features(_signal(1.0)))
    assert mfcc_features_batch([]).shape == (0, 120)


def test_rejects_multichannel():
    with pytest.raises(ValueError, match="mono"):
        mfcc_features(np.zeros((2, 1000), np.float32))


@pytest.mark.parametrize("task", ["gtzan_speechmusic", "emoMusic", "ballroom_extended"])
def test_layout_matches_authors_features(task):
    path = ANCHORS / "data_feats" / f"{task}_mfcc.npy"
    if not path.exists():
        pytest.skip(f"anchor features not found: {path}")
    X = np.load(path)
    assert X.shape[1] == 120
    blocks = X.reshape(len(X), 6, 20)
    # std blocks (1, 3, 5) are never negative; mean-of-difference blocks (2, 4) are tiny
    for b in (1, 3, 5):
        assert (blocks[:, b] >= 0).all(), f"block {b} should be a std"
    for b in (2, 4):
        assert np.abs(blocks[:, b]).max() < 1.0, f"block {b} should be a mean of differences"
    # MFCC0 mean: large and negative on average
    assert blocks[:, 0, 0].mean() < -50
    # differences of differences are rougher than the differences
    assert (blocks[:, 5].mean(0) > blocks[:, 3].mean(0)).all()
