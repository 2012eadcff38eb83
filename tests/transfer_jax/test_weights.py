"""The published Choi et al. 2017 weights in JAX: parity with an independent NumPy forward
pass of the Keras 1 / Theano HDF5, the loader's error paths, import -> load round trip.

The NumPy reference below reads the HDF5 with h5py and computes the model the way Keras 1
+ Theano + kapre did, sharing no code with `transfer_jax`:
- STFT: the stored (512, 257) real / imaginary kernels applied as Theano does, i.e. as a
  *true* convolution (correlation with the kernels reversed in time) over the signal
  padded with 256 zeros on each side ('half'), stride 256, first ceil(n / 256) frames;
  power = re^2 + im^2; mel = power @ stored filterbank;
- dB: 10 log10(max(x, 1e-10)) minus the maximum (the clip's, or the whole batch's),
  floored at -80;
- per block: true 3x3 convolution with the *unflipped* stored kernels ('same'), BatchNorm
  with the statistics of the clip (per-clip) or of the batch (biased variance, eps 1e-3),
  ELU, max-pool with floor; layer feature = global average after the pool;
- dense on the last feature, sigmoid.
Everything in float64, so the differences measure the JAX float32 path.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

ANCHORS = Path(__file__).resolve().parents[2].parent / "shared" / "anchors" / "choi2017"
H5 = ANCHORS / "weights_theano.hdf5"
AUDIO = ANCHORS / "audio"
CLIP_NPY = "1100103.clip.npy"
MP3S = ("bensound-actionable.mp3", "bensound-cute.mp3", "bensound-dubstep.mp3",
        "bensound-thejazzpiano.mp3")
REPO = Path(__file__).resolve().parents[2]

TOL = 1e-4  # features and tag probabilities, absolute
POOLS = ((2, 4), (3, 4), (2, 5), (2, 4), (4, 4))
N_SAMPLES = 348_000
G = "ConvBNEluDr/"

needs_anchors = pytest.mark.skipif(
    not (H5.exists() and AUDIO.is_dir()),
    reason=f"reference anchors not found at {ANCHORS} (weights_theano.hdf5 and audio/); "
           "parity with the published weights is not checked")


# ----------------------------------------------------------------------------------------
# Independent NumPy reference of the Keras 1 / Theano model
# ----------------------------------------------------------------------------------------

def read_h5(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].astype(np.float64))
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def ref_log_mel(w: dict, waves: np.ndarray, ref: str) -> np.ndarray:
    """(batch, n) -> (batch, 96, ceil(n / 256)) dB, Theano-style STFT with the stored kernels."""
    kr, ki = w["melgram/param_0"][:, 0, 0, :], w["melgram/param_1"][:, 0, 0, :]
    n_fft, hop = kr.shape[0], 256
    kernels = np.concatenate([kr[::-1], ki[::-1]], axis=1)  # true convolution: reversed in time
    mels = []
    for y in np.asarray(waves, np.float64):
        frames = -(-len(y) // hop)
        padded = np.pad(y, (n_fft // 2, n_fft // 2))
        windows = padded[hop * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]]
        s = windows @ kernels
        n_bins = kr.shape[1]
        power = s[:, :n_bins] ** 2 + s[:, n_bins:] ** 2
        mels.append((power @ w["melgram/param_2"]).T)
    db = 10.0 * np.log10(np.maximum(np.stack(mels), 1e-10))
    db = db - (db.max(axis=(1, 2), keepdims=True) if ref == "clip" else db.max())
    return np.maximum(db, -80.0)


def ref_conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """True 2-D convolution, 'same': x (B, C, H, T), kernel (O, C, 3, 3) as stored.
    out[b, o, i, j] = sum_{c, a, d} kernel[o, c, a, d] * x[b, c, i + 1 - a, j + 1 - d]."""
    b_, c, h, t = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, 2 - a:2 - a + h, 2 - d:2 - d + t] for a in range(3) for d in range(3)],
                    axis=2)  # (B, C, 9, H, T), tap (a, d) at index 3a + d
    out = np.einsum("bckht,ock->boht", cols, kernel.reshape(kernel.shape[0], c, 9), optimize=True)
    return out + bias[None, :, None, None]


def ref_forward(w: dict, waves: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (features (B, 5, 32), probabilities (B, 50)); mode 'per_clip' or 'batch'."""
    x = ref_log_mel(w, waves, "clip" if mode == "per_clip" else "batch")[:, None]
    axes = (2, 3) if mode == "per_clip" else (0, 2, 3)
    feats = []
    for i, (pf, pt) in enumerate(POOLS, start=1):
        x = ref_conv_same(x, w[f"{G}convolution2d_{i}_W"], w[f"{G}convolution2d_{i}_b"])
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        gamma = w[f"{G}batchnormalization_{i}_gamma"][None, :, None, None]
        beta = w[f"{G}batchnormalization_{i}_beta"][None, :, None, None]
        x = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta
        x = np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
        b_, c, h, t = x.shape
        h2, t2 = h // pf, t // pt
        x = x[:, :, :h2 * pf, :t2 * pt].reshape(b_, c, h2, pf, t2, pt).max(axis=(3, 5))
        feats.append(x.mean(axis=(2, 3)))
    logits = feats[-1] @ w["dense_1/dense_1_W"] + w["dense_1/dense_1_b"]
    return np.stack(feats, axis=1), 1.0 / (1.0 + np.exp(-logits))


def test_reference_conv_is_true_convolution():
    from scipy.signal import convolve2d

    rng = np.random.default_rng(0)
    x, k, b = rng.normal(size=(2, 3, 7, 9)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    want = np.stack([np.stack([sum(convolve2d(x[n, c], k[o, c], mode="same") for c in range(3)) + b[o]
                               for o in range(4)]) for n in range(2)])
    np.testing.assert_allclose(ref_conv_same(x, k, b), want, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Parity on real audio
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ref_weights():
    return read_h5(H5)


@pytest.fixture(scope="module")
def loaded():
    from transfer_jax.weights import load_choi2017_h5

    return load_choi2017_h5(H5)


@pytest.fixture(scope="module")
def clips():
    """(5, 348000): 1100103.clip.npy, then the four bensound tracks (first 29 s)."""
    from transfer_jax.audio import fit_length, load_audio

    return np.stack([fit_length(load_audio(AUDIO / name), N_SAMPLES) for name in (CLIP_NPY,) + MP3S])


@needs_anchors
def test_frontend_arrays_and_framing(loaded, ref_weights, clips):
    """Stored kernels = the project's frontend; Theano framing = pad_left 257, not 256."""
    import dataclasses

    from transfer_jax import frontend
    from transfer_jax.config import FrontendConfig

    variables, info = loaded
    assert info["stft_real"].shape == (512, 257) and info["filterbank"].shape == (257, 96)
    assert all(v <= 1e-6 for v in info["frontend_max_abs_diff"].values()), info["frontend_max_abs_diff"]
    want = ref_log_mel(ref_weights, clips[:1], "clip")
    cfg = FrontendConfig()
    assert cfg.pad_left == 257
    got = {pl: np.asarray(frontend.log_mel(clips[:1], dataclasses.replace(cfg, pad_left=pl), "clip"))
           for pl in (257, 256)}
    # float32 rFFT vs float64 reference: measured 8e-4 dB max (mean 7e-6) at 257; 0.6 dB at 256
    assert np.abs(got[257] - want).max() < 5e-3
    assert np.abs(got[256] - want).max() > 0.1
    lib = frontend.log_mel_librosa(clips[0], cfg, "clip")
    assert np.abs(lib - want[0]).max() < 1e-3


@needs_anchors
def test_variables_fit_the_paper_tagger(loaded):
    import jax

    from transfer_jax.model import Tagger, count_params

    variables, _ = loaded
    model = Tagger(norm="per_clip")
    target = jax.eval_shape(model.init, jax.random.key(0), jax.numpy.zeros((1, 96, 1360)))
    shapes = jax.tree_util.tree_map(lambda a: (tuple(a.shape), np.dtype(a.dtype)), dict(target))
    got = jax.tree_util.tree_map(lambda a: (tuple(a.shape), np.dtype(a.dtype)), variables)
    assert got == shapes
    assert count_params(variables["params"]) == 39_282


@needs_anchors
def test_per_clip_parity(loaded, ref_weights, clips):
    from transfer_jax.extraction import extract
    from transfer_jax.model import Tagger
    from transfer_jax.weights import tag_probabilities

    variables, _ = loaded
    want_f, want_p = ref_forward(ref_weights, clips, "per_clip")
    feats = extract(variables, clips, norm="per_clip", batch_size=len(clips))
    probs = tag_probabilities(Tagger(norm="per_clip"), variables, clips)
    assert feats.shape == (5, 5, 32) and probs.shape == (5, 50)
    # measured: features 1.7e-6, probabilities 1.7e-7 (pad_left 256 instead: 1e-2 / 1.6e-3)
    np.testing.assert_allclose(feats, want_f, rtol=0, atol=TOL)
    np.testing.assert_allclose(probs, want_p, rtol=0, atol=TOL)


@needs_anchors
def test_batch_mode_parity(loaded, ref_weights, clips):
    from transfer_jax.extraction import extract
    from transfer_jax.model import Tagger
    from transfer_jax.weights import tag_probabilities

    variables, _ = loaded
    batch = clips[1:]  # the four bensound tracks as one batch, dB reference of the batch
    want_f, want_p = ref_forward(ref_weights, batch, "batch")
    feats = extract(variables, batch, norm="batch", ref="batch", batch_size=len(batch))
    probs = tag_probabilities(Tagger(norm="batch"), variables, batch)
    # measured: features 9e-7, probabilities 6e-7 (pad_left 256 instead: 8.8e-3 / 1.4e-3)
    np.testing.assert_allclose(feats, want_f, rtol=0, atol=TOL)
    np.testing.assert_allclose(probs, want_p, rtol=0, atol=TOL)
    # the batch couples the clips: per-clip statistics give other features
    assert np.abs(feats - ref_forward(ref_weights, batch, "per_clip")[0]).max() > 1e-2


# ----------------------------------------------------------------------------------------
# Error paths (a synthetic file in the published layout; no anchors needed)
# ----------------------------------------------------------------------------------------

def _layout(rng) -> dict[str, np.ndarray]:
    import librosa

    n = np.arange(512)[:, None] * np.arange(257)[None, :]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512))[:, None]
    d = {
        "melgram/param_0": (window * np.cos(2 * np.pi * n / 512))[:, None, None, :],
        "melgram/param_1": (window * np.sin(2 * np.pi * n / 512))[:, None, None, :],
        "melgram/param_2": librosa.filters.mel(sr=12000, n_fft=512, n_mels=96, fmin=0.0,
                                               fmax=6000.0, norm="slaney").T,
        "dense_1/dense_1_W": rng.normal(size=(32, 50)) * 0.1,
        "dense_1/dense_1_b": np.zeros(50),
    }
    for i in range(1, 6):
        d[f"{G}convolution2d_{i}_W"] = rng.normal(size=(32, 1 if i == 1 else 32, 3, 3)) * 0.1
        d[f"{G}convolution2d_{i}_b"] = np.zeros(32)
        d[f"{G}batchnormalization_{i}_gamma"] = np.ones(32)
        d[f"{G}batchnormalization_{i}_beta"] = np.zeros(32)
        d[f"{G}batchnormalization_{i}_running_mean"] = np.zeros(32)
        d[f"{G}batchnormalization_{i}_running_std"] = np.ones(32)
    return d


def write_h5(path, drop=(), replace=None) -> Path:
    d = _layout(np.random.default_rng(0))
    d.update(replace or {})
    with h5py.File(path, "w") as f:
        for name, arr in d.items():
            if name not in drop:
                f.create_dataset(name, data=np.asarray(arr, np.float32))
    return Path(path)


@pytest.fixture
def fake_h5(tmp_path):
    return write_h5(tmp_path / "weights.hdf5")


def test_synthetic_file_loads_with_flipped_kernels(fake_h5):
    from transfer_jax.weights import load_choi2017_h5

    variables, info = load_choi2017_h5(fake_h5)
    w = read_h5(fake_h5)
    k = variables["params"]["conv2"]["kernel"]
    assert k.shape == (3, 3, 32, 32)
    # HWIO cross-correlation kernel = stored (O, I, H, W) true-convolution kernel flipped
    np.testing.assert_allclose(k[0, 2, 5, 7], w[f"{G}convolution2d_2_W"][7, 5, 2, 0], rtol=1e-6)
    assert set(variables["batch_stats"]["bn1"]) == {"mean", "var"}
    assert info["frontend_max_abs_diff"]["filterbank"] < 1e-6


def test_missing_file(tmp_path):
    from transfer_jax.weights import WeightsError, load_choi2017_h5

    with pytest.raises(WeightsError, match="nope.hdf5: file not found"):
        load_choi2017_h5(tmp_path / "nope.hdf5")


def test_not_hdf5(tmp_path):
    from transfer_jax.weights import WeightsError, load_choi2017_h5

    p = tmp_path / "weights.hdf5"
    p.write_text("this is not HDF5\n" * 100)
    with pytest.raises(WeightsError, match=r"weights\.hdf5: not an HDF5 file"):
        load_choi2017_h5(p)


def test_truncated_copy(fake_h5, tmp_path):
    from transfer_jax.weights import WeightsError, load_choi2017_h5

    data = fake_h5.read_bytes()
    for frac in (0.5, 0.98):
        p = tmp_path / f"truncated_{frac}.hdf5"
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(WeightsError, match=rf"truncated_{frac}\.hdf5: truncated or corrupt"):
            load_choi2017_h5(p)


def test_missing_datasets_are_named(tmp_path):
    from transfer_jax.weights import WeightsError, load_choi2017_h5

    p = write_h5(tmp_path / "w.hdf5", drop=("dense_1/dense_1_b", f"{G}batchnormalization_3_gamma"))
    with pytest.raises(WeightsError, match="missing 2 dataset") as e:
        load_choi2017_h5(p)
    assert "dense_1/dense_1_b" in str(e.value) and "batchnormalization_3_gamma" in str(e.value)
    assert str(p) in str(e.value)


def test_wrong_shape_names_expected_and_got(tmp_path):
    from transfer_jax.weights import WeightsError, load_choi2017_h5

    p = write_h5(tmp_path / "w.hdf5", replace={"dense_1/dense_1_W": np.zeros((32, 10))})
    with pytest.raises(WeightsError, match=r"dense_1/dense_1_W: expected \(32, 50\), got \(32, 10\)"):
        load_choi2017_h5(p)


def test_other_frontend_is_refused(tmp_path):
    from transfer_jax.weights import WeightsError, load_choi2017_h5

    fb = _layout(np.random.default_rng(0))["melgram/param_2"] * 1.01
    p = write_h5(tmp_path / "w.hdf5", replace={"melgram/param_2": fb})
    with pytest.raises(WeightsError, match="filterbank max abs diff"):
        load_choi2017_h5(p)
    variables, info = load_choi2017_h5(p, check_frontend=False)
    assert info["frontend_max_abs_diff"]["filterbank"] > 1e-6


# ----------------------------------------------------------------------------------------
# experiments/import_weights.py -> checkpoint.load_pretrained, experiments/tag_audio.py
# ----------------------------------------------------------------------------------------

def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_then_load_pretrained(tmp_path, fake_h5, capsys):
    import jax

    from transfer_jax import checkpoint
    from transfer_jax.config import MSD_TAGS
    from transfer_jax.weights import load_choi2017_h5

    src = H5 if H5.exists() else fake_h5
    out = tmp_path / "choi2017_msd"
    assert _script("import_weights").main(["--h5", str(src), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    model, variables = checkpoint.load_pretrained(out)
    assert model.norm == "per_clip" and model.config.frontend.pad_left == 257
    want, _ = load_choi2017_h5(src)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), variables, want)
    meta = checkpoint.load_metadata(out)
    assert meta["tags"] == list(MSD_TAGS) and meta["db_ref"] == "clip"
    assert meta["bn_modes_supported"] == ["per_clip", "batch"]
    # a second import into the same directory is refused unless --overwrite
    assert _script("import_weights").main(["--h5", str(src), "--out", str(out)]) == 1
    assert _script("import_weights").main(["--h5", str(src), "--out", str(out), "--overwrite"]) == 0
    assert _script("import_weights").main(["--h5", str(tmp_path / "missing.h5"), "--out",
                                           str(tmp_path / "o2")]) == 1


@needs_anchors
def test_tag_audio_prints_top_k_and_survives_bad_files(tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert _script("import_weights").main(["--h5", str(H5), "--out", str(out)]) == 0
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    short = tmp_path / "short.npy"
    np.save(short, np.load(AUDIO / CLIP_NPY)[:120_000])
    capsys.readouterr()
    rc = _script("tag_audio").main(["--checkpoint", str(out), "--top-k", "3",
                                    str(bad), str(AUDIO / CLIP_NPY), str(short)])
    text = capsys.readouterr().out
    assert rc == 1  # one file failed, the others were tagged
    assert f"{bad}: error:" in text
    assert "norm=per_clip" in text and "tile" in text
    blocks = text.split(str(AUDIO / CLIP_NPY))[1]
    tag_lines = [ln for ln in blocks.splitlines() if ln.startswith("  ")]
    assert len(tag_lines) == 6  # 3 tags for each of the two good files
