import jax
import numpy as np
import pytest

from transfer_jax import checkpoint as ckpt
from transfer_jax import train
from transfer_jax.model import Tagger


def test_latest_and_best_are_kept_and_restored(tmp_path, small_config):
    model = Tagger(small_config, norm="train")
    tx = train.make_optimizer()
    state = train.create_train_state(jax.random.key(0), model, tx, 71)
    mngr = ckpt.checkpoint_manager(tmp_path)
    meta = ckpt.model_metadata(model.clone(norm="running"), tags=list("abcdef"))
    saved = {}
    for step, auc in [(1, 0.6), (2, 0.9), (3, 0.7), (4, None)]:
        state = state.replace(step=state.step + 1,
                              params=jax.tree.map(lambda p: p + 0.1, state.params))
        saved[step] = state
        ckpt.save(mngr, step, state, meta, None if auc is None else {ckpt.BEST_METRIC: auc})
    assert mngr.all_steps() == [2, 4] and mngr.best_step() == 2
    restored = ckpt.restore(mngr, train.create_train_state(jax.random.key(1), model, tx, 71))
    assert int(restored.step) == 4
    for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(saved[4].params)):
        np.testing.assert_array_equal(a, b)
    assert jax.random.key_data(restored.rng).tolist() == jax.random.key_data(saved[4].rng).tolist()
    mngr.close()

    best_model, best_vars = ckpt.load_pretrained(tmp_path)
    assert best_model.config == small_config and best_model.norm == "running"
    np.testing.assert_array_equal(best_vars["params"]["dense"]["kernel"], saved[2].params["dense"]["kernel"])
    _, latest = ckpt.load_pretrained(tmp_path, which="latest")
    np.testing.assert_array_equal(latest["params"]["dense"]["kernel"], saved[4].params["dense"]["kernel"])
    assert ckpt.load_metadata(tmp_path)["tags"] == list("abcdef")


def test_save_pretrained_round_trip_and_errors(tmp_path, small_config):
    from transfer_jax.model import init_variables

    model = Tagger(small_config, norm="per_clip")
    v = init_variables(model, jax.random.key(3))
    ckpt.save_pretrained(tmp_path / "m", v, ckpt.model_metadata(model))
    loaded_model, loaded = ckpt.load_pretrained(tmp_path / "m")
    assert loaded_model.norm == "per_clip"
    x = np.random.default_rng(0).normal(size=(2, 96, 71)).astype(np.float32)
    np.testing.assert_allclose(loaded_model.apply(loaded, x)[0], model.apply(v, x)[0], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        ckpt.load_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint steps"):
        ckpt.load_pretrained(tmp_path / "empty")
