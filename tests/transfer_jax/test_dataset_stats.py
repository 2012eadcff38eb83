"""Dataset statistics (`transfer_jax.dataset_stats`): BatchNorm mode 2 with the whole
dataset as one batch, stored as running statistics plus a fixed dB reference.

Checked: dataset mode == batch mode when the dataset is that one batch (features and
tag probabilities; a random-weights model on small inputs always, the published weights
on the anchor clips when present, also against the independent NumPy reference of
test_weights.py); streaming over small batches == one pass; a clip's features do not
depend on the batch it is extracted in; Chan's merge; files, save / load.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from transfer_jax import dataset_stats as ds
from transfer_jax import frontend
from transfer_jax.config import FrontendConfig, ModelConfig
from transfer_jax.extraction import extract
from transfer_jax.model import Tagger, init_variables

ANCHORS = Path(__file__).resolve().parents[2].parent / "shared" / "anchors" / "choi2017"
H5 = ANCHORS / "weights_theano.hdf5"
AUDIO = ANCHORS / "audio"
FILES = ("1100103.clip.npy", "bensound-actionable.mp3", "bensound-cute.mp3",
         "bensound-dubstep.mp3", "bensound-thejazzpiano.mp3")
TOL = 1e-4

needs_anchors = pytest.mark.skipif(
    not (H5.exists() and all((AUDIO / f).exists() for f in FILES)),
    reason=f"anchors not found at {ANCHORS} (weights_theano.hdf5 and audio/): dataset mode "
           "is checked with random weights only")

SMALL = ModelConfig(pools=((2, 2), (3, 2), (2, 2), (2, 2), (4, 2)), n_classes=6,
                    frontend=FrontendConfig(n_samples=18_176))  # 71 frames


@functools.partial(jax.jit, static_argnames=("model", "ref"))
def _probs(model, variables, waves, ref):

    mel = frontend.log_mel(waves, model.config.frontend, ref)
    if model.norm == "batch":
        return jax.nn.sigmoid(model.apply(variables, mel)[0])
    return jax.vmap(lambda m: jax.nn.sigmoid(model.apply(variables, m[None])[0][0]))(mel)


@pytest.fixture(scope="module")
def small():
    """A random-weights tagger on 1.5 s inputs and 7 clips of different loudness and colour."""
    model = Tagger(SMALL, norm="batch")
    variables = init_variables(model, jax.random.key(3))
    # non-trivial BN affine parameters, so every layer's statistics matter
    keys = iter(jax.random.split(jax.random.key(4), 20))
    params = {k: dict(v) for k, v in variables["params"].items()}
    for i in range(1, 6):
        params[f"bn{i}"] = {"scale": 1 + 0.3 * jax.random.normal(next(keys), (32,)),
                            "bias": 0.3 * jax.random.normal(next(keys), (32,))}
    variables = {"params": params, "batch_stats": variables["batch_stats"]}
    rng = np.random.default_rng(0)
    t = np.arange(SMALL.frontend.n_samples) / 12_000
    waves = np.stack([
        (0.05 + 0.3 * i) * (np.sin(2 * np.pi * (110 * (i + 1)) * t) + 0.3 * rng.normal(size=t.size))
        for i in range(7)]).astype(np.float32)
    return model, variables, waves


# ----------------------------------------------------------------------------------------
# Math, with random weights (no anchors needed)
# ----------------------------------------------------------------------------------------

def test_chan_merge_equals_direct_moments():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(11, 50, 4)) * np.linspace(1, 5, 11)[:, None, None]
    m = ds._Moments()
    for lo, hi in ((0, 3), (3, 4), (4, 11)):  # groups of inputs, as batches arrive
        part = x[lo:hi]
        m.add_inputs(50, part.mean(axis=1), ((part - part.mean(axis=1, keepdims=True)) ** 2).sum(axis=1))
    flat = x.reshape(-1, 4)
    np.testing.assert_allclose(m.mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.var, flat.var(axis=0), rtol=1e-12)
    assert m.n == flat.shape[0]


def test_dataset_mode_equals_batch_mode_random_weights(small):
    model, variables, waves = small
    stats, db_ref = ds.compute_dataset_stats(model, variables, waves, batch_size=len(waves))
    # the dB reference is the batch maximum of the raw dB scale
    raw = frontend.log_mel(waves, dataclasses.replace(model.config.frontend, top_db=np.inf), 0.0)
    assert db_ref == pytest.approx(float(np.max(raw)), abs=1e-6)

    want_f = extract(variables, waves, model=model, ref="batch", batch_size=len(waves))
    want_p = _probs(model, variables, waves, "batch")
    dmodel, dvars = ds.dataset_model(model, variables, stats)
    assert dmodel.norm == "running"
    got_f = extract(dvars, waves, model=dmodel, ref=db_ref, batch_size=3)
    got_p = _probs(dmodel, dvars, waves, db_ref)
    np.testing.assert_allclose(got_f, want_f, rtol=0, atol=TOL)
    np.testing.assert_allclose(got_p, want_p, rtol=0, atol=TOL)
    # and the comparison is not vacuous: per-clip statistics give other features
    per_clip = extract(variables, waves, model=model, norm="per_clip", batch_size=4)
    assert np.abs(per_clip - want_f).max() > 1e-2


def test_streaming_equals_one_pass(small):
    model, variables, waves = small
    one, ref1 = ds.compute_dataset_stats(model, variables, waves, batch_size=len(waves))
    two, ref2 = ds.compute_dataset_stats(model, variables, waves, batch_size=2)  # 2+2+2+1
    # a callable source with uneven batches (re-iterated once per pass)
    gen, ref3 = ds.compute_dataset_stats(
        model, variables, lambda: (waves[a:b] for a, b in ((0, 1), (1, 5), (5, 7))), batch_size=3)
    lst, ref4 = ds.compute_dataset_stats(model, variables, list(waves), batch_size=4)
    assert ref1 == ref2 == ref3 == ref4
    for other in (two, gen, lst):
        for layer in one:
            for name in ("mean", "var"):
                np.testing.assert_allclose(other[layer][name], one[layer][name], rtol=2e-6, atol=1e-6)


def test_dataset_mode_is_batch_independent(small):
    model, variables, waves = small
    stats, db_ref = ds.compute_dataset_stats(model, variables, waves, batch_size=4)
    dmodel, dvars = ds.dataset_model(model, variables, stats)
    alone = np.stack([extract(dvars, w, model=dmodel, ref=db_ref, batch_size=1)[0] for w in waves[:3]])
    together = extract(dvars, waves, model=dmodel, ref=db_ref, batch_size=7)[:3]
    reordered = extract(dvars, waves[::-1], model=dmodel, ref=db_ref, batch_size=2)[::-1][:3]
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(reordered, alone, rtol=0, atol=1e-5)
    # unlike batch mode, where a clip's neighbours change its features
    b1 = extract(variables, waves[:3], model=model, ref="batch", batch_size=3)
    b2 = extract(variables, waves, model=model, ref="batch", batch_size=7)[:3]
    assert np.abs(b1 - b2).max() > 1e-3


def test_files_save_load_and_checks(small, tmp_path):
    import soundfile as sf

    model, variables, waves = small
    paths = []
    for i, w in enumerate(waves[:4]):
        paths.append(tmp_path / f"c{i}.wav")
        sf.write(paths[-1], w, 12_000, subtype="FLOAT")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    stats, db_ref, info = ds.stats_from_files(model, variables, paths + [tmp_path / "broken.wav"],
                                              batch_size=3, tmp_dir=tmp_path)
    assert info["n_files"] == 4 and info["n_inputs"] == 4 and len(info["failures"]) == 1
    assert not list(tmp_path.glob("calibration-*"))  # the spool is cleaned up
    want, want_ref = ds.compute_dataset_stats(model, variables, waves[:4], batch_size=4)
    assert db_ref == want_ref
    for layer in want:
        np.testing.assert_allclose(stats[layer]["var"], want[layer]["var"], rtol=2e-6)

    path = ds.save_stats(tmp_path / "s.stats.npz", stats, db_ref, n_inputs=4, source="test")
    got, got_ref, got_info = ds.load_stats(path)
    assert got_ref == db_ref and got_info == {"n_inputs": 4, "source": "test"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, stats)
    ds.check_stats(model, got)
    with pytest.raises(ValueError, match="layers"):
        ds.check_stats(model, {"bn1": got["bn1"]})
    (tmp_path / "x.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="cannot read"):
        ds.load_stats(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="at least one"):
        ds.compute_dataset_stats(model, variables, waves[:0], batch_size=2)


# ----------------------------------------------------------------------------------------
# The published weights on the anchor clips
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published():
    from transfer_jax.audio import fit_length, load_audio
    from transfer_jax.weights import load_choi2017_h5

    variables, _ = load_choi2017_h5(H5)
    clips = np.stack([fit_length(load_audio(AUDIO / f), 348_000) for f in FILES])
    return Tagger(norm="batch"), variables, clips


@needs_anchors
def test_published_dataset_mode_equals_batch_mode(published):
    from transfer_jax.weights import tag_probabilities

    model, variables, clips = published
    stats, db_ref = ds.compute_dataset_stats(model, variables, clips, batch_size=5)
    want_f = extract(variables, clips, model=model, ref="batch", batch_size=5)
    want_p = tag_probabilities(model, variables, clips)
    dmodel, dvars = ds.dataset_model(model, variables, stats)
    got_f = extract(dvars, clips, model=dmodel, ref=db_ref, batch_size=5)
    got_p = tag_probabilities(dmodel, dvars, clips, ref=db_ref)
    # measured: features 1.0e-6, probabilities 2.1e-7
    np.testing.assert_allclose(got_f, want_f, rtol=0, atol=TOL)
    np.testing.assert_allclose(got_p, want_p, rtol=0, atol=TOL)

    # and against the independent NumPy forward pass of the HDF5 (test_weights.py)
    sys.path.insert(0, str(Path(__file__).parent))
    from test_weights import read_h5, ref_forward

    ref_f, ref_p = ref_forward(read_h5(H5), clips, "batch")
    # measured: features 1.3e-6, probabilities 3.2e-7
    np.testing.assert_allclose(got_f, ref_f, rtol=0, atol=TOL)
    np.testing.assert_allclose(got_p, ref_p, rtol=0, atol=TOL)

    # streaming in batches of 2 (2 + 2 + 1) gives the same statistics
    two, ref2 = ds.compute_dataset_stats(model, variables, clips, batch_size=2)
    assert ref2 == db_ref
    for layer in stats:  # measured: 1.7e-6 relative
        for name in ("mean", "var"):
            np.testing.assert_allclose(two[layer][name], stats[layer][name], rtol=1e-5, atol=1e-6)

    # batch-independent: each clip alone, or in another order, gives the same features
    alone = np.concatenate([extract(dvars, c, model=dmodel, ref=db_ref, batch_size=1) for c in clips[:2]])
    reordered = extract(dvars, clips[::-1], model=dmodel, ref=db_ref, batch_size=2)[::-1]
    np.testing.assert_allclose(alone, got_f[:2], rtol=0, atol=1e-5)
    np.testing.assert_allclose(reordered, got_f, rtol=0, atol=1e-5)
