"""The HEAR API: shapes, timestamps, scene/timestamp consistency, batch independence."""
import dataclasses

import jax
import numpy as np
import pytest

from transfer_jax import hear
from transfer_jax.config import FrontendConfig, ModelConfig
from transfer_jax.extraction import extract
from transfer_jax.model import Tagger, init_variables

POOLS = ((2, 2), (3, 2), (2, 2), (2, 2), (4, 2))
ODD = ModelConfig(pools=POOLS, n_classes=6, frontend=FrontendConfig(n_samples=18_176))  # W = 71
EVEN = ModelConfig(pools=POOLS, n_classes=6, frontend=FrontendConfig(n_samples=18_432))  # W = 72


def _variables(model: Tagger, seed: int = 0) -> dict:
    """Initial parameters with non-trivial running statistics."""
    v = init_variables(model, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    stats = jax.tree_util.tree_map_with_path(
        lambda p, a: (rng.uniform(0.5, 2.0, a.shape) if "var" in jax.tree_util.keystr(p)
                      else rng.normal(0, 0.3, a.shape)).astype(np.float32), v["batch_stats"])
    return {**v, "batch_stats": stats}


def _sounds(n_sounds: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 12_000
    f = rng.uniform(100, 3000, (n_sounds, 1))
    return (0.5 * np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * 0.7 * t))
            + 0.05 * rng.normal(size=(n_sounds, n))).astype(np.float32)


def _hear_model(config: ModelConfig, norm: str = "per_clip", ref="clip", sample_rate=12_000):
    model = Tagger(config, norm=norm)
    return hear.make_model(model, _variables(model), sample_rate=sample_rate, ref=ref,
                           tf_module=False)


def test_shapes_dtypes_and_frameworks():
    m = _hear_model(ODD, sample_rate=16_000)
    assert (m.sample_rate, m.scene_embedding_size, m.timestamp_embedding_size) == (16_000, 160, 160)
    audio = _sounds(3, 40_000)  # 2.5 s at 16 kHz -> 30,000 samples at 12 kHz, 118 frames
    scene = hear.get_scene_embeddings(audio, m)
    emb, ts = hear.get_timestamp_embeddings(audio, m)
    n_t = len(hear.timestamp_frames(-(-30_000 // 256), 71, 2))
    assert isinstance(scene, np.ndarray) and scene.shape == (3, 160) and scene.dtype == np.float32
    assert emb.shape == (3, n_t, 160) and emb.dtype == np.float32
    assert ts.shape == (3, n_t) and ts.dtype == np.float32
    assert np.all(np.isfinite(emb)) and np.all(np.isfinite(scene))
    got = hear.get_scene_embeddings(jax.numpy.asarray(audio), m)
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(np.asarray(got), scene, atol=1e-6)
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(audio[0], m)


def test_tensorflow_tensors_in_and_out():
    tf = pytest.importorskip("tensorflow")
    model = Tagger(ODD, norm="per_clip")
    m = hear.make_model(model, _variables(model), sample_rate=12_000)
    assert isinstance(m, tf.Module) and isinstance(m, hear.HearModel)
    audio = _sounds(2, 20_000)
    emb, ts = hear.get_timestamp_embeddings(tf.constant(audio), m)
    assert emb.dtype == tf.float32 and ts.dtype == tf.float32  # .numpy() as hear-eval-kit calls
    np.testing.assert_allclose(emb.numpy(), hear.get_timestamp_embeddings(audio, m)[0], atol=1e-6)


def test_torch_tensors_in_and_out():
    torch = pytest.importorskip("torch")
    m = _hear_model(ODD)
    audio = _sounds(2, 20_000)
    scene = hear.get_scene_embeddings(torch.from_numpy(audio), m)
    assert isinstance(scene, torch.Tensor) and scene.dtype == torch.float32
    np.testing.assert_allclose(scene.numpy(), hear.get_scene_embeddings(audio, m), atol=1e-6)


@pytest.mark.parametrize("config", [ODD, EVEN], ids=["odd-window", "even-window"])
def test_timestamps_regular_within_the_sound_and_centred(config):
    m = _hear_model(config)
    fe = config.frontend
    n = 3 * fe.n_samples + 1000
    emb, ts = hear.get_timestamp_embeddings(_sounds(2, n), m)
    hop = np.diff(ts[0])
    assert np.all(hop > 0) and np.allclose(hop, 2 * 256 / 12, atol=1e-3)  # 42.67 ms <= 50
    np.testing.assert_array_equal(ts[0], ts[1])
    duration = 1000 * n / fe.sample_rate
    assert ts[0, 0] <= hop[0] and duration - 2 * hop[0] <= ts[0, -1] <= duration
    # the window of a clip of one model input, frames [0, W), sits at its centre
    w = fe.n_frames
    centre = hear.frames_to_ms(np.array([w // 2]), w, fe)[0]
    assert centre in ts[0]
    assert abs(centre - 1000 * fe.n_samples / 2 / fe.sample_rate) <= 1000 * fe.hop_length / fe.sample_rate


def test_timestamps_follow_the_audio():
    """Delaying a sound by one timestamp hop shifts its interior embeddings by one index."""
    m = _hear_model(EVEN)
    shift = m.embedder.hop_frames * 256
    x = _sounds(1, 4 * EVEN.frontend.n_samples)
    delayed = np.concatenate([np.zeros((1, shift), np.float32), x[:, :-shift]], axis=1)
    (e0, t0), (e1, t1) = (hear.get_timestamp_embeddings(a, m) for a in (x, delayed))
    np.testing.assert_allclose(t1[0, 1:] - t0[0, :-1], 1000 * shift / 12_000, atol=1e-3)
    w, frames = EVEN.frontend.n_frames, x.shape[1] // 256
    centres = hear.timestamp_frames(frames, w, m.embedder.hop_frames)
    inside = np.flatnonzero((centres - w // 2 >= 0) & (centres + w - w // 2 + 2 <= frames - 2))
    assert len(inside) > 10
    np.testing.assert_allclose(e1[0, inside + 1], e0[0, inside], atol=1e-4)


@pytest.mark.parametrize("config,norm,ref", [(ODD, "per_clip", "clip"), (EVEN, "per_clip", "clip"),
                                             (EVEN, "running", -12.5), (ODD, "running", "clip")])
def test_timestamp_embedding_at_the_centre_of_one_input_equals_the_scene_embedding(config, norm, ref):
    m = _hear_model(config, norm, ref)
    fe = config.frontend
    audio = _sounds(2, fe.n_samples, seed=3)
    scene = hear.get_scene_embeddings(audio, m)
    emb, ts = hear.get_timestamp_embeddings(audio, m)
    k = int(np.flatnonzero(ts[0] == hear.frames_to_ms(np.array([fe.n_frames // 2]), fe.n_frames, fe)[0])[0])
    np.testing.assert_allclose(emb[:, k], scene, rtol=1e-5, atol=2e-5)
    assert not np.allclose(emb[:, 0], scene, atol=1e-3)  # other windows see other frames


def test_scene_embedding_is_the_mean_over_model_inputs():
    m = _hear_model(ODD)
    n = ODD.frontend.n_samples
    audio = _sounds(2, 2 * n + n // 2, seed=4)
    parts = [extract(m.embedder.variables, audio[:, i * n:(i + 1) * n], model=m.embedder.model,
                     layers="12345") for i in range(2)]
    np.testing.assert_allclose(hear.get_scene_embeddings(audio, m), (parts[0] + parts[1]) / 2, rtol=1e-5, atol=1e-5)


def test_embeddings_do_not_depend_on_the_batch():
    m = _hear_model(ODD, "running", -20.0)
    audio = _sounds(3, 50_000, seed=5)
    scene = hear.get_scene_embeddings(audio, m)
    emb, _ = hear.get_timestamp_embeddings(audio, m)
    for i in (0, 2):
        np.testing.assert_allclose(hear.get_scene_embeddings(audio[i:i + 1], m)[0], scene[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(hear.get_timestamp_embeddings(audio[i:i + 1], m)[0][0], emb[i], rtol=1e-5, atol=1e-5)
    small = dataclasses.replace(m.embedder, batch_size=3)  # other batching, same numbers
    np.testing.assert_allclose(hear.timestamp_embeddings(small, audio)[0], emb, rtol=1e-5, atol=1e-5)


def test_resampled_input_keeps_the_consistency():
    """At 16 kHz, a sound of 4/3 model inputs is resampled to exactly one input."""
    m = _hear_model(EVEN, sample_rate=16_000)
    fe = EVEN.frontend
    audio = _sounds(1, fe.n_samples * 4 // 3, seed=6)
    emb, ts = hear.get_timestamp_embeddings(audio, m)
    k = int(np.argmin(np.abs(ts[0] - hear.frames_to_ms(np.array([fe.n_frames // 2]), fe.n_frames, fe)[0])))
    np.testing.assert_allclose(emb[0, k], hear.get_scene_embeddings(audio, m)[0], rtol=1e-5, atol=2e-5)


def test_load_model_from_a_checkpoint(tmp_path, monkeypatch):
    from transfer_jax import checkpoint

    model = Tagger(ODD, norm="running")
    v = _variables(model)
    checkpoint.save_pretrained(tmp_path / "ckpt", v, checkpoint.model_metadata(model, db_ref=-7.5))
    m = hear.load_model(str(tmp_path / "ckpt"), tf_module=False)
    assert (m.sample_rate, m.scene_embedding_size) == (16_000, 160)
    assert m.embedder.model.norm == "running" and m.embedder.ref == -7.5
    assert m.embedder.model.config == ODD
    audio = _sounds(1, 20_000)
    direct = hear.make_model(model, v, ref=-7.5, tf_module=False)
    np.testing.assert_allclose(hear.get_scene_embeddings(audio, m), hear.get_scene_embeddings(audio, direct), atol=1e-6)
    assert hear.load_model(str(tmp_path / "ckpt"), norm="per_clip", tf_module=False).embedder.model.norm == "per_clip"
    with pytest.raises(ValueError, match="depend on the batch"):
        hear.load_model(str(tmp_path / "ckpt"), norm="batch", tf_module=False)
    monkeypatch.setattr(hear, "DEFAULT_CHECKPOINT", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="train_tagger"):
        hear.load_model()


def test_inference_mode_from_metadata():
    assert hear.inference_mode("batch", {}) == ("per_clip", "clip")
    assert hear.inference_mode("per_clip", {"db_ref": "clip"}) == ("per_clip", "clip")
    assert hear.inference_mode("running", {}) == ("running", "clip")
    assert hear.inference_mode("running", {"db_ref": 3.25}) == ("running", 3.25)
