import jax
import numpy as np
import pytest

from transfer_jax import extraction as ex
from transfer_jax import frontend
from transfer_jax.model import Tagger, init_variables


@pytest.fixture
def setup(small_config):
    model = Tagger(small_config, norm="per_clip")
    return model, init_variables(model, jax.random.key(0))


def _waves(n_samples, *lengths, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(max(lengths)) / 12_000
    return [(np.sin(2 * np.pi * rng.uniform(100, 2000) * t[:n]) * 0.5
             + 0.05 * rng.normal(size=n)).astype(np.float32) for n in lengths]


def test_layer_names():
    assert ex.parse_layers("135") == (0, 2, 4) and ex.parse_layers("531") == (0, 2, 4)
    assert ex.parse_layers(None) == (0, 1, 2, 3, 4) and ex.parse_layers([2, 4]) == (1, 3)
    assert ex.layer_name((4, 0)) == "15"
    for bad in ("", "6", "0", "11", "a"):
        with pytest.raises(ValueError, match="layers"):
            ex.parse_layers(bad)
    feats = np.arange(2 * 5 * 32, dtype=np.float32).reshape(2, 5, 32)
    flat = feats.reshape(2, 160)
    sel = ex.select_layers(feats, "24")
    np.testing.assert_array_equal(sel, np.concatenate([flat[:, ex.layer_slices()["layer2"]],
                                                       flat[:, ex.layer_slices()["layer4"]]], 1))
    np.testing.assert_array_equal(ex.select_layers(flat, "24"), sel)


def test_audio_path_equals_model_on_log_mels(setup):
    model, v = setup
    n = model.config.frontend.n_samples
    waves = _waves(n, n, n, n)
    feats = ex.extract(v, waves, model=model, batch_size=2)  # ragged last batch
    mel = frontend.log_mel(np.stack(waves), model.config.frontend, "clip")
    np.testing.assert_allclose(feats, model.apply(v, mel)[1], atol=1e-4)
    np.testing.assert_allclose(ex.extract(v, np.asarray(mel), model=model), feats, atol=1e-4)
    assert ex.extract(v, waves, model=model, layers="12345").shape == (3, 160)


def test_long_audio_is_the_mean_over_segments_and_short_audio_is_tiled(setup):
    model, v = setup
    n = model.config.frontend.n_samples
    a, b, short = _waves(n, n, n, n // 3, seed=1)
    long = np.concatenate([a, b, a[: n // 2]])  # 2 full segments + a dropped remainder
    fa, fb, fs_tiled, fs_padded = (ex.extract(v, [x], model=model)[0] for x in
                                   (a, b, np.tile(short, 4)[:n], np.pad(short, (0, n - len(short)))))
    got = ex.extract(v, [long, short, a], model=model, batch_size=4)
    np.testing.assert_allclose(got[0], (fa + fb) / 2, atol=1e-4)
    np.testing.assert_allclose(got[1], fs_tiled, atol=1e-4)
    np.testing.assert_allclose(got[2], fa, atol=1e-4)
    np.testing.assert_allclose(ex.extract(v, [long], model=model, long_policy="first")[0], fa, atol=1e-4)
    np.testing.assert_allclose(ex.extract(v, [short], model=model, short_policy="pad")[0], fs_padded, atol=1e-4)


def test_batch_mode_uses_the_given_batches(setup):
    model, v = setup
    n = model.config.frontend.n_samples
    waves = _waves(n, n, n, n, n, n, seed=2)
    got = ex.extract(v, waves, model=model, norm="batch", batch_size=3)
    bm = model.clone(norm="batch")
    for start in (0, 3):
        mel = frontend.log_mel(np.stack(waves[start:start + 3]), model.config.frontend, "batch")
        np.testing.assert_allclose(got[start:start + 3], bm.apply(v, mel)[1], atol=1e-4)


def test_extract_files_goes_past_bad_files(setup, tmp_path):
    import soundfile as sf

    model, v = setup
    n = model.config.frontend.n_samples
    good = _waves(n, n, n, seed=3)
    paths = []
    for i, w in enumerate(good):
        paths.append(tmp_path / f"ok{i}.wav")
        sf.write(paths[-1], w, 12_000, subtype="FLOAT")
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not really a wav")
    feats, failures = ex.extract_files(v, [paths[0], bad, paths[1]], model=model, batch_size=2)
    assert [p for p, _ in failures] == [str(bad)]
    assert np.isnan(feats[1]).all() and np.isfinite(feats[[0, 2]]).all()
    np.testing.assert_allclose(feats[[0, 2]], ex.extract(v, good[:2], model=model), atol=1e-4)


@pytest.mark.parametrize("long_policy", ["mean", "first"])
def test_extract_files_streams_long_files_with_the_same_features(setup, tmp_path, long_policy):
    import soundfile as sf

    model, v = setup
    rng = np.random.default_rng(5)
    paths = []
    for i, seconds in enumerate((4.3, 0.8, 5.1)):  # two long files around a short one
        paths.append(tmp_path / f"f{i}.wav")
        sf.write(paths[-1], (0.2 * rng.normal(size=(int(22_050 * seconds), 2))).astype(np.float32), 22_050)
    decoded, f1 = ex.extract_files(v, paths, model=model, batch_size=2, stream_over_s=None,
                                   long_policy=long_policy)
    streamed, f2 = ex.extract_files(v, paths, model=model, batch_size=2, stream_over_s=2.0,
                                    long_policy=long_policy)
    assert f1 == f2 == []
    np.testing.assert_allclose(streamed, decoded, atol=2e-4)
    if long_policy == "mean":  # more than one input was averaged for the long files
        first, _ = ex.extract_files(v, paths[:1], model=model, stream_over_s=2.0, long_policy="first")
        assert np.abs(first[0] - streamed[0]).max() > 1e-3


def test_load_many_decodes_a_bounded_window_ahead(monkeypatch):
    started = []
    monkeypatch.setattr(ex.audio_lib, "load_audio", lambda p, sr: started.append(p) or np.zeros(4, np.float32))
    gen = ex.load_many([f"f{i}.wav" for i in range(100)], 12_000, workers=2, ahead=5)
    for k in range(3):
        i, w = next(gen)
        assert i == k and w.shape == (4,)
    assert len(started) <= 5 + 3  # the window, refilled once per item taken
    assert [i for i, _ in gen] == list(range(3, 100)) and len(started) == 100
