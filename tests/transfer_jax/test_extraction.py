import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from transfer_jax import extraction as ex
from transfer_jax import frontend, runtime
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


SPLIT_OVER_CORES = textwrap.dedent("""
    import json
    from transfer_jax import runtime
    applied = runtime.use_cpu_cores(4)
    import jax, numpy as np
    from transfer_jax import extraction as ex
    from transfer_jax.config import FrontendConfig, ModelConfig
    from transfer_jax.model import Tagger, init_variables

    cfg = ModelConfig(pools=((2, 2), (3, 2), (2, 2), (2, 2), (4, 2)), n_classes=6,
                      frontend=FrontendConfig(n_samples=18_176))
    rng = np.random.default_rng(0)
    waves = (rng.normal(size=(5, 18_176)) * 0.3).astype(np.float32)  # 5: not a multiple of 4
    mel = (rng.normal(size=(5, 96, 71)) * 10 - 40).astype(np.float32)
    out = {"devices": len(jax.devices()), "applied": applied}
    for norm in ("per_clip", "running"):
        model = Tagger(cfg, norm=norm)
        v = jax.device_put(init_variables(model, jax.random.key(1)), jax.devices()[1])  # as loaded
        split = ex.features_from_audio(model, v, waves)
        one = ex.features_from_audio(model, v, waves, devices=jax.devices()[:1])
        split_mel = ex.features_from_mel(model, v, mel)
        one_mel = ex.features_from_mel(model, v, mel, devices=jax.devices()[:1])
        out[norm] = {"shards": [len(split.sharding.device_set), len(one.sharding.device_set)],
                     "shape": list(split.shape),
                     "diff": float(np.abs(np.asarray(split) - np.asarray(one)).max()),
                     "diff_mel": float(np.abs(np.asarray(split_mel) - np.asarray(one_mel)).max()),
                     "scale": float(np.abs(np.asarray(one)).max()),
                     "shards_of_1": len(ex.features_from_mel(model, v, mel[:1]).sharding.device_set),
                     "shards_of_2": len(ex.features_from_mel(model, v, mel[:2]).sharding.device_set)}
    print(json.dumps(out))
""")


def test_features_split_over_cpu_cores_equal_one_device():
    """runtime.use_cpu_cores(4): a batch of 5 is padded to 8, split over 4 CPU devices,
    and gives one device's features (audio and log-mel paths, both per-example norms),
    with the variables on one device as a loaded checkpoint has them."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", SPLIT_OVER_CORES], env=env, capture_output=True,
                         text=True, timeout=300, cwd=pathlib.Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["devices"] == 4 and r["applied"]
    assert [runtime.cpu_device_count(c, 32) for c in (1, 2, 3, 6, 12, 64)] == [1, 2, 2, 4, 8, 32]
    assert runtime.cpu_device_count(6) == 6
    # here JAX has started: the call changes nothing and says so
    flags = os.environ.get("XLA_FLAGS")
    assert jax.devices() and runtime.use_cpu_cores(4) is False and os.environ.get("XLA_FLAGS") == flags
    for norm in ("per_clip", "running"):
        assert r[norm]["shape"] == [5, 5, 32] and r[norm]["shards"][1] == 1
        assert r[norm]["shards"][0] > 1  # the sliced result still lives on the mesh
        assert r[norm]["shards_of_1"] == 1 and r[norm]["shards_of_2"] == 2  # no padding to 4
        assert r[norm]["diff"] <= 1e-5 * r[norm]["scale"] and r[norm]["diff_mel"] <= 1e-5 * r[norm]["scale"], r


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
