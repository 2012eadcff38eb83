"""Audio in: decode any common file to 12 kHz mono float32, fit it to the model's length.

Every failure is an `AudioError` that names the file and the problem, raised here on the
host, so that nothing malformed ever reaches jitted code.

Handled as documented rather than rejected:
- multi-channel audio is averaged to mono;
- any sample rate is resampled (soxr, high quality) to the target rate;
- silent (all-zero) audio is accepted: its log-mel is the -80 dB floor everywhere after
  the max reference, i.e. constant, which the model handles without NaNs.
- `.npy` files hold samples already at the target rate (1-D, or 2-D channels-first).
"""
from __future__ import annotations

import math
import os
import pathlib

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".au", ".aiff", ".aif", ".npy")


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _decode(path: pathlib.Path) -> tuple[np.ndarray, int]:
    """Returns (samples (n, channels) float32, sample rate)."""
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return data, int(sr)
    except Exception as sf_error:  # noqa: BLE001 - fall back to librosa's decoders
        try:
            import warnings

            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, sr = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
        except Exception:  # noqa: BLE001
            raise AudioError(path, f"cannot decode as audio ({sf_error})") from None
        data = np.atleast_2d(data).T
        return data, int(sr)


def load_audio(path: str | os.PathLike, sr: int = 12_000) -> np.ndarray:
    """Decodes `path` to mono float32 samples at `sr` Hz, shape (n_samples,).

    Raises AudioError for missing, empty, undecodable, non-finite or zero-length audio.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise AudioError(path, f"cannot read as a .npy array ({e})") from None
        if data.ndim not in (1, 2) or not np.issubdtype(data.dtype, np.number):
            raise AudioError(path, f"expected 1-D or 2-D numeric samples, got {data.dtype} {data.shape}")
        data = np.atleast_2d(data.astype(np.float32)).T if data.ndim == 1 else data.astype(np.float32).T
        file_sr = sr
    else:
        data, file_sr = _decode(path)
    if data.size == 0 or data.shape[0] == 0:
        raise AudioError(path, "contains no samples (zero-length audio)")
    if not np.all(np.isfinite(data)):
        raise AudioError(path, f"contains {int(np.sum(~np.isfinite(data)))} NaN or infinite samples")
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if file_sr != sr:
        import soxr

        y = soxr.resample(y, file_sr, sr, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(y, dtype=np.float32)


def fit_length(y: np.ndarray, n_samples: int, policy: str = "tile") -> np.ndarray:
    """Cuts or fills a (n,) signal to exactly (n_samples,).

    Longer audio keeps its first n_samples (the original model's input). Shorter audio is
    repeated ('tile', the authors' feature code) or zero-padded at the end ('pad', their
    one-file extractor).
    """
    if policy not in ("tile", "pad"):
        raise ValueError(f"short-clip policy must be 'tile' or 'pad', got {policy!r}")
    if len(y) == 0:
        raise ValueError("cannot fit an empty signal")
    if len(y) >= n_samples:
        return y[:n_samples]
    if policy == "tile":
        return np.tile(y, math.ceil(n_samples / len(y)))[:n_samples]
    return np.pad(y, (0, n_samples - len(y)))


def segment(y: np.ndarray, n_samples: int, policy: str = "tile") -> np.ndarray:
    """Cuts a (n,) signal into (n_segments, n_samples) consecutive model inputs.

    Audio of at least one segment gives len(y) // n_samples full segments; a remainder
    shorter than a segment is dropped (so every segment is real audio). Shorter audio
    gives one segment filled by `policy`. Features are later averaged over segments.
    """
    if len(y) < n_samples:
        return fit_length(y, n_samples, policy)[None]
    n_segments = len(y) // n_samples
    return y[: n_segments * n_samples].reshape(n_segments, n_samples)
