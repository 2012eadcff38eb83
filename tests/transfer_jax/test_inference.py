import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transfer_jax import cpu_kernels, inference
from transfer_jax.config import FrontendConfig
from transfer_jax.model import Tagger, init_variables, max_pool


@pytest.mark.parametrize("fused", [True, False], ids=["cpu_kernel", "xla"])
@pytest.mark.parametrize("norm", ["per_clip", "running"])
@pytest.mark.parametrize("n_samples", [18_176, 16_384])  # 71 frames (pools leave remainders), 64 (exact)
def test_clip_features_equal_the_module(small_config, perturb, norm, n_samples, fused, monkeypatch):
    """Both ways of computing the blocks on CPU: the fused kernels (block 1 direct, blocks 2-5
    by Winograd) and XLA's loops."""
    if fused and not cpu_kernels.available():
        pytest.skip("transfer_jax._cpu_kernels not built")
    if not fused:
        monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    cfg = dataclasses.replace(small_config, frontend=FrontendConfig(n_samples=n_samples))
    model = Tagger(cfg, norm=norm)
    v = perturb(model, seed=n_samples)
    mel = jax.random.uniform(jax.random.key(1), (3, 96, cfg.frontend.n_frames), minval=-80.0, maxval=0.0)
    want = jax.vmap(lambda m: model.apply(v, m[None])[1][0])(mel)
    got = jax.jit(jax.vmap(lambda m: inference.clip_features(model, v, m)))(mel)
    scale = float(jnp.abs(want).max())
    np.testing.assert_allclose(got, want, atol=2e-5 * scale, rtol=1e-5)
    logits = jax.vmap(lambda m: model.apply(v, m[None])[0][0])(mel)
    np.testing.assert_allclose(inference.clip_logits(model, v, got), logits, atol=1e-4 * scale)


def test_clip_features_reject_batch_coupled_norms_and_small_inputs(small_config):
    with pytest.raises(ValueError, match="per-example norm"):
        inference.clip_features(Tagger(small_config, norm="batch"), {"params": {}, "batch_stats": {}},
                                jnp.zeros((96, 71)))
    model = Tagger(small_config, norm="per_clip")
    v = init_variables(model, jax.random.key(0))
    with pytest.raises(ValueError, match="too small"):
        inference.clip_features(model, v, jnp.zeros((96, 20)))


def test_map_examples_chunked_equals_vmap():
    xs = jnp.arange(7 * 3, dtype=jnp.float32).reshape(7, 3)
    fn = lambda c, x: jnp.stack([x.sum(), (x ** 2).max()]) * c  # noqa: E731
    want = jnp.stack([xs.sum(1), (xs ** 2).max(1)], axis=1) * 2.0
    for mb in (0, 1, 2, 3, 7):
        np.testing.assert_array_equal(inference.map_examples(fn, 2.0, xs, mb), want)
    assert inference.data_mesh(jax.local_devices()[:1]) is None
    assert inference.data_mesh(jax.local_devices() * 4, n_examples=1) is None


def test_reshape_max_pool_equals_flax_pool_and_trains():
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
    for window in ((2, 2), (3, 2), (4, 3)):
        np.testing.assert_array_equal(max_pool(x, window), nn.max_pool(x, window, strides=window))
    # without ties the gradient goes to each window's maximum, as flax's pool sends it
    g = jax.grad(lambda a: (max_pool(a, (3, 2)) ** 2).sum())(x)
    g_ref = jax.grad(lambda a: (nn.max_pool(a, (3, 2), strides=(3, 2)) ** 2).sum())(x)
    np.testing.assert_allclose(g, g_ref, atol=1e-6)


def test_kernel_threads_only_where_a_core_would_idle(monkeypatch):
    """A second kernel thread per example only when the cores outnumber twice the devices
    in use: at batch 1 on two cores (one device), not when every core runs its own examples."""
    from types import SimpleNamespace

    from transfer_jax import runtime

    for cores, devices_in_use, want in ((2, None, 2), (1, None, 1), (2, 2, 1), (4, 2, 2), (4, 4, 1)):
        monkeypatch.setattr(runtime, "available_cores", lambda cores=cores: cores)
        mesh = None if devices_in_use is None else SimpleNamespace(size=devices_in_use)
        assert inference.kernel_threads(mesh) == want, (cores, devices_in_use)
