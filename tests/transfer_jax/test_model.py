import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transfer_jax.config import ModelConfig
from transfer_jax.model import Tagger, count_params, init_variables


def test_paper_model_size_and_shapes():
    model = Tagger()
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 96, 1360)))
    assert count_params(shapes["params"]) == 39_282
    logits, feats = jax.eval_shape(model.apply, shapes, jnp.zeros((4, 96, 1360)))
    assert logits.shape == (4, 50) and feats.shape == (4, 5, 32)
    # blocks: 96x1360 -> 48x340 -> 16x85 -> 8x17 -> 4x4 -> 1x1
    h, w = 96, 1360
    for ph, pw in ModelConfig().pools:
        h, w = h // ph, w // pw
    assert (h, w) == (1, 1)


def test_shapes_match_published_weights(anchors):
    shapes = jax.eval_shape(Tagger().init, jax.random.key(0), jnp.zeros((1, 96, 1360)))["params"]
    with h5py.File(anchors / "weights_theano.hdf5", "r") as f:
        g = f["ConvBNEluDr"]
        for i in range(1, 6):
            out, cin, kh, kw = g[f"convolution2d_{i}_W"].shape
            assert shapes[f"conv{i}"]["kernel"].shape == (kh, kw, cin, out)
            assert shapes[f"bn{i}"]["scale"].shape == g[f"batchnormalization_{i}_gamma"].shape
        assert shapes["dense"]["kernel"].shape == f["dense_1/dense_1_W"].shape


def _batch(config, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 96, config.frontend.n_frames)) * 10 - 40).astype(np.float32)


def test_per_clip_features_do_not_depend_on_the_batch(small_config):
    model = Tagger(small_config, norm="per_clip")
    v = init_variables(model, jax.random.key(0))
    x = _batch(small_config, 3)
    alone = model.apply(v, x[:1])[1]
    with_b = model.apply(v, x[[0, 1]])[1][:1]
    with_c = model.apply(v, x[[0, 2]])[1][:1]
    np.testing.assert_allclose(with_b, alone, atol=1e-5)
    np.testing.assert_allclose(with_c, alone, atol=1e-5)
    # batch statistics, by contrast, couple the clips
    bmodel = model.clone(norm="batch")
    assert np.abs(bmodel.apply(v, x[[0, 1]])[1][0] - bmodel.apply(v, x[[0, 2]])[1][0]).max() > 1e-3


def test_batch_norm_modes_compute_what_they_say(small_config):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 6, 3)) * 3 + 1, jnp.float32)
    from transfer_jax.model import ModeBatchNorm

    def run(norm, stats=None):
        bn = ModeBatchNorm(norm, epsilon=1e-3)
        v = bn.init(jax.random.key(0), x)
        if stats:
            v = {**v, "batch_stats": stats}
        return bn.apply(v, x, mutable=["batch_stats"])

    per_clip, _ = run("per_clip")
    m, s2 = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    np.testing.assert_allclose(per_clip, (x - m) / np.sqrt(s2 + 1e-3), atol=1e-5)
    batch, _ = run("batch")
    np.testing.assert_allclose(batch, (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-3), atol=1e-5)
    stats = {"mean": jnp.full((3,), 2.0), "var": jnp.full((3,), 4.0)}
    running, _ = run("running", stats)
    np.testing.assert_allclose(running, (x - 2.0) / np.sqrt(4.0 + 1e-3), atol=1e-5)
    trained, updated = run("train")
    np.testing.assert_allclose(trained, batch, atol=1e-6)
    np.testing.assert_allclose(updated["batch_stats"]["mean"], 0.01 * x.mean((0, 1, 2)), atol=1e-6)


def test_input_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="too small for pools"):
        Tagger().init(jax.random.key(0), jnp.zeros((1, 96, 100)))
    with pytest.raises(ValueError, match="norm must be one of"):
        Tagger(norm="instance").init(jax.random.key(0), jnp.zeros((1, 96, 1360)))


def _plain_flax():
    """benchmarks/plain_flax.py: the benchmarks' "before", the layers in literal order."""
    import importlib.util
    import pathlib
    import sys

    if "plain_flax" not in sys.modules:
        path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "plain_flax.py"
        spec = importlib.util.spec_from_file_location("plain_flax", path)
        sys.modules["plain_flax"] = importlib.util.module_from_spec(spec)  # flax dataclasses need it
        spec.loader.exec_module(sys.modules["plain_flax"])
    return sys.modules["plain_flax"]


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu_kernels", "xla"])
@pytest.mark.parametrize("norm", ["train", "batch", "per_clip", "running"])
def test_pool_first_tagger_equals_the_literal_layer_order(small_config, perturb, norm, kernels, monkeypatch):
    """Values, gradients and batch statistics; on CPU both with the fused kernels (block 1
    with batch statistics, the convolutions' kernel gradient) and all in XLA."""
    from transfer_jax import cpu_kernels

    if kernels and not cpu_kernels.available():
        pytest.skip("transfer_jax._cpu_kernels not built")
    if not kernels:
        monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    model, literal = Tagger(small_config, norm=norm), _plain_flax().PlainTagger(small_config, norm)
    v = perturb(model, seed=3)
    # the same parameters as flax's nn.Conv layers create (old checkpoints load)
    jax.tree.map(np.testing.assert_array_equal, init_variables(model, jax.random.key(5)),
                 dict(jax.jit(literal.init)(jax.random.key(5), jnp.zeros((1, 96, 71)))))
    mel = jax.random.uniform(jax.random.key(2), (4, 96, 71), minval=-80.0, maxval=0.0)
    labels = (jax.random.uniform(jax.random.key(3), (4, 6)) < 0.3).astype(jnp.float32)

    def loss(m, params):
        (logits, feats), stats = m.apply({"params": params, "batch_stats": v["batch_stats"]}, mel,
                                         mutable=["batch_stats"])
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), (feats, stats)

    (l1, (f1, s1)), g1 = jax.value_and_grad(lambda p: loss(model, p), has_aux=True)(v["params"])
    (l2, (f2, s2)), g2 = jax.value_and_grad(lambda p: loss(literal, p), has_aux=True)(v["params"])
    np.testing.assert_allclose(f1, f2, atol=1e-5 * float(jnp.abs(f2).max()))
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    # float32 rounding only: in float64 the gradients agree to 1e-15 (checked by hand);
    # tolerances are relative to the largest gradient (conv biases' are ~0: BN cancels them)
    for got, want in ((g1, g2), (s1, s2)):
        scale = max(float(jnp.abs(w).max()) for w in jax.tree_util.tree_leaves(want))
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, atol=1e-3 * scale)
