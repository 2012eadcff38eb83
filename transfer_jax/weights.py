"""The paper's published weights (Keras 1 / Theano HDF5) as Flax variables, read with h5py.

`load_choi2017_h5(path)` reads `weights_theano.hdf5` (keunwoochoi/music-auto_tagging-keras,
`compact_cnn/`), with no Keras or Theano, and returns `(variables, info)`:

- `variables["params"]`, ready for `transfer_jax.model.Tagger()` (default paper config):
  - `conv{i}/kernel` (3, 3, C_in, 32) HWIO <- `ConvBNEluDr/convolution2d_{i}_W`
    (32, C_in, 3, 3) = (out, in, freq, time). Theano stores *true convolution* kernels;
    XLA convolutions are cross-correlations, so both spatial axes are flipped.
  - `conv{i}/bias` <- `convolution2d_{i}_b`;
  - `bn{i}/scale`, `bn{i}/bias` <- `batchnormalization_{i}_gamma`, `_beta`;
  - `dense/kernel` (32, 50), `dense/bias` <- `dense_1/dense_1_W`, `dense_1_b`.
- `variables["batch_stats"]`: `bn{i}/mean` = 0, `bn{i}/var` = 1. Keras 1 BatchNorm
  "mode 2" normalises with the statistics of the current batch at inference too, so the
  published model has no usable running statistics (the file's `running_mean` /
  `running_std` are the untouched 0 / 1; they are returned in `info` for inspection).
  Run the model with `norm="per_clip"` (one clip per batch, the one-file extractor) or
  `norm="batch"` (the paper's batches); `norm="running"` with these placeholders would
  skip normalisation and give meaningless outputs.
- `info`: the kapre frontend stored in the file (`stft_real`, `stft_imag`: (512, 257)
  kernels; `filterbank`: (257, 96)), how far they are from the project's frontend
  (`frontend_max_abs_diff`), the stored running statistics, and the source path.

The frontend check: the stored STFT kernels must equal periodic Hann x cos / sin DFT basis
and the filterbank must equal `frontend.mel_filterbank` (librosa, Slaney) within
`FRONTEND_ATOL` (1e-6 absolute; measured: 3e-8 and 4e-9). If not, the file was computed
with a different frontend than `transfer_jax.frontend` implements and `WeightsError` is
raised (pass `check_frontend=False` to load anyway).

The STFT framing this implies: Theano applies the kernels as a true convolution with
'half' padding of n_fft // 2 = 256 (Keras 1 crops to ceil(n / 256) frames), i.e. it
correlates with the time-reversed kernel. A time-reversed periodic Hann is the window
delayed by one sample, so frame t covers samples [256 t - 257, 256 t + 255), which is
`FrontendConfig.pad_left = 257` (the power spectrum does not depend on the DFT phase).
"""
from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from transfer_jax import frontend
from transfer_jax.config import ModelConfig
from transfer_jax.model import Tagger

FRONTEND_ATOL = 1e-6
_CONV_GROUP = "ConvBNEluDr"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def expected_datasets(config: ModelConfig = ModelConfig()) -> dict[str, tuple[int, ...]]:
    """Dataset name in the HDF5 -> the shape the paper's model (and `config`) needs."""
    c, fe = config.channels, config.frontend
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 1
    for i in range(1, config.n_layers + 1):
        shapes[f"{_CONV_GROUP}/convolution2d_{i}_W"] = (c, c_in, 3, 3)
        shapes[f"{_CONV_GROUP}/convolution2d_{i}_b"] = (c,)
        shapes[f"{_CONV_GROUP}/batchnormalization_{i}_gamma"] = (c,)
        shapes[f"{_CONV_GROUP}/batchnormalization_{i}_beta"] = (c,)
        c_in = c
    shapes["dense_1/dense_1_W"] = (c, config.n_classes)
    shapes["dense_1/dense_1_b"] = (config.n_classes,)
    shapes["melgram/param_0"] = (fe.n_fft, 1, 1, fe.n_bins)
    shapes["melgram/param_1"] = (fe.n_fft, 1, 1, fe.n_bins)
    shapes["melgram/param_2"] = (fe.n_bins, fe.n_mels)
    return shapes


def _optional_datasets(config: ModelConfig) -> list[str]:
    return [f"{_CONV_GROUP}/batchnormalization_{i}_{s}"
            for i in range(1, config.n_layers + 1) for s in ("running_mean", "running_std")]


def _read_arrays(path: pathlib.Path, config: ModelConfig) -> tuple[dict, dict]:
    """(required arrays, optional arrays) as float32 numpy, with every failure a WeightsError."""
    import h5py

    if not path.exists():
        raise WeightsError(path, "file not found")
    if path.is_dir():
        raise WeightsError(path, "is a directory, not an HDF5 weights file")
    try:
        is_hdf5 = h5py.is_hdf5(str(path))
    except OSError as e:
        raise WeightsError(path, f"cannot read the file ({e})") from None
    if not is_hdf5:
        raise WeightsError(path, "not an HDF5 file (no HDF5 signature); expected the Keras 1 "
                                 "weights file weights_theano.hdf5")
    expected = expected_datasets(config)
    try:
        with h5py.File(path, "r") as f:
            present = {name: f.get(name) for name in expected}
            missing = [n for n, d in present.items() if not isinstance(d, h5py.Dataset)]
            if missing:
                raise WeightsError(path, f"missing {len(missing)} dataset(s): {', '.join(missing)}")
            wrong = [f"{n}: expected {expected[n]}, got {tuple(d.shape)}"
                     for n, d in present.items() if tuple(d.shape) != expected[n]]
            if wrong:
                raise WeightsError(path, "wrong dataset shape(s): " + "; ".join(wrong))
            arrays = {n: np.asarray(d[()], dtype=np.float32) for n, d in present.items()}
            optional = {}
            for n in _optional_datasets(config):
                d = f.get(n)
                if isinstance(d, h5py.Dataset):
                    optional[n] = np.asarray(d[()], dtype=np.float32)
    except WeightsError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise WeightsError(path, f"truncated or corrupt HDF5 file ({type(e).__name__}: {e})") from None
    bad = [n for n, a in arrays.items() if not np.all(np.isfinite(a))]
    if bad:
        raise WeightsError(path, f"non-finite values in: {', '.join(bad)}")
    return arrays, optional


def reference_stft_kernels(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """(real, imag) (n_fft, n_fft // 2 + 1): periodic Hann x cos / sin, as kapre stores them
    (and as `frontend.log_mel` windows its frames)."""
    window = np.hanning(n_fft + 1)[:-1]
    phase = 2.0 * np.pi * np.outer(np.arange(n_fft), np.arange(n_fft // 2 + 1)) / n_fft
    return window[:, None] * np.cos(phase), window[:, None] * np.sin(phase)


def load_choi2017_h5(path: str | os.PathLike, *, config: ModelConfig = ModelConfig(),
                     check_frontend: bool = True) -> tuple[dict, dict]:
    """(variables, info) from the published Keras 1 / Theano weights file. See module doc.

    Raises WeightsError (naming the file) for a missing, non-HDF5, truncated or corrupt
    file, missing datasets (all named), wrong shapes (expected vs got), and, with
    `check_frontend`, stored frontend arrays that differ from the project's frontend.
    """
    path = pathlib.Path(path)
    a, optional = _read_arrays(path, config)
    g = _CONV_GROUP
    params: dict = {}
    batch_stats: dict = {}
    for i in range(1, config.n_layers + 1):
        w = a[f"{g}/convolution2d_{i}_W"]  # (out, in, freq, time), true convolution
        params[f"conv{i}"] = {
            "kernel": np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 1, 0)),
            "bias": a[f"{g}/convolution2d_{i}_b"],
        }
        params[f"bn{i}"] = {"scale": a[f"{g}/batchnormalization_{i}_gamma"],
                            "bias": a[f"{g}/batchnormalization_{i}_beta"]}
        batch_stats[f"bn{i}"] = {"mean": np.zeros(config.channels, np.float32),
                                 "var": np.ones(config.channels, np.float32)}
    params["dense"] = {"kernel": a["dense_1/dense_1_W"], "bias": a["dense_1/dense_1_b"]}

    fe = config.frontend
    stft_real = a["melgram/param_0"][:, 0, 0, :]
    stft_imag = a["melgram/param_1"][:, 0, 0, :]
    filterbank = a["melgram/param_2"]
    ref_real, ref_imag = reference_stft_kernels(fe.n_fft)
    diffs = {
        "stft_real": float(np.abs(stft_real - ref_real).max()),
        "stft_imag": float(np.abs(stft_imag - ref_imag).max()),
        "filterbank": float(np.abs(filterbank - frontend.mel_filterbank(fe)).max()),
    }
    if check_frontend:
        off = {k: v for k, v in diffs.items() if not v <= FRONTEND_ATOL}
        if off:
            detail = ", ".join(f"{k} max abs diff {v:.3g}" for k, v in off.items())
            raise WeightsError(path, f"stored frontend differs from the project's (periodic Hann "
                                     f"DFT, librosa Slaney mel) by more than {FRONTEND_ATOL:g}: "
                                     f"{detail}")
    info = {
        "path": str(path.absolute()),
        "stft_real": stft_real,
        "stft_imag": stft_imag,
        "filterbank": filterbank,
        "frontend_max_abs_diff": diffs,
        "frontend_atol": FRONTEND_ATOL,
        "running_stats": optional,  # unused by Keras 1 BN mode 2 (0 / 1 in the release)
    }
    return {"params": params, "batch_stats": batch_stats}, info


@functools.partial(jax.jit, static_argnames=("model", "ref"))
def _probabilities(model: Tagger, variables: dict, waves: jax.Array, ref) -> jax.Array:
    cfg = model.config.frontend
    if model.norm == "batch":
        return jax.nn.sigmoid(model.apply(variables, frontend.log_mel(waves, cfg, ref))[0])

    def one(wave):
        return model.apply(variables, frontend.log_mel(wave[None], cfg, ref))[0][0]

    return jax.nn.sigmoid(jax.vmap(one)(waves))


def tag_probabilities(model: Tagger, variables: dict, waves, ref: frontend.Ref | None = None) -> np.ndarray:
    """Sigmoid tag probabilities (n, n_classes) of model inputs `waves` (n, n_samples).

    `model.norm == "batch"`: the waves are one batch (BN statistics and, by default, the dB
    reference "batch" shared by all of them). Other modes: each clip on its own (vmapped),
    dB reference "clip" by default.
    """
    waves = np.asarray(waves, np.float32)
    if waves.ndim != 2 or waves.shape[1] != model.config.frontend.n_samples:
        raise ValueError(f"waves must be (n, {model.config.frontend.n_samples}), got {waves.shape}")
    if model.norm == "train":
        model = model.clone(norm="batch")
    if ref is None:
        ref = "batch" if model.norm == "batch" else "clip"
    return np.asarray(_probabilities(model, variables, jnp.asarray(waves), ref))
