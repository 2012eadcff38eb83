import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transfer_jax import cpu_kernels, fused_block1

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(), reason="transfer_jax._cpu_kernels not built")


def _mel_with_silence(seed, n, h, w):
    """Log-mel-like batch with a silent stretch at the floor: conv outputs tie there."""
    x = np.random.default_rng(seed).uniform(-80, 0, (n, h, w)).astype(np.float32)
    x[:, :, w // 3: w // 2] = -80.0
    return jnp.asarray(x)


def _bn_like_loss(stats, g):
    """A loss that uses all four outputs the way BatchNorm + ELU do."""
    hi, lo, mean, var = stats
    a = jax.lax.rsqrt(var + 1e-3) * g["scale"]
    y = jax.nn.elu(jnp.where(a >= 0, hi, lo) * a)
    return (y * g["out"]).sum() + (mean * g["mean"]).sum()


@needs_kernel
@pytest.mark.parametrize("shape, pool", [((3, 12, 38), (2, 4)), ((2, 13, 20), (3, 3))])
def test_window_stats_and_gradients_equal_xla(shape, pool):
    """The fused way (patch moments, window extremes, closed-form kernel gradient) against
    XLA through the full conv output, ties included; with the input's gradient asked for
    too, the backward pass goes XLA's way and gives both."""
    n, h, w = shape
    x = _mel_with_silence(sum(shape), n, h, w)
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(0, 0.3, (3, 3, 1, 32)), jnp.float32)
    g = {"scale": jnp.asarray(rng.normal(size=32), jnp.float32),  # both signs: hi and lo both used
         "out": jnp.asarray(rng.normal(size=(n, h // pool[0], w // pool[1], 32)), jnp.float32),
         "mean": jnp.asarray(rng.normal(size=32), jnp.float32)}
    fused = jax.jit(fused_block1.window_stats, static_argnums=2)(x, kernel, pool)
    want = fused_block1.reference(x, kernel, pool)
    for a, b in zip(fused, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))

    def loss(fn, x, k):
        return _bn_like_loss(fn(x, k, pool), g)

    dk = jax.jit(jax.grad(lambda k: loss(fused_block1.window_stats, x, k)))(kernel)
    dk_want = jax.grad(lambda k: loss(fused_block1.reference, x, k))(kernel)
    np.testing.assert_allclose(dk, dk_want, rtol=1e-4, atol=1e-4 * float(jnp.abs(dk_want).max()))
    both = jax.jit(jax.grad(lambda x, k: loss(fused_block1.window_stats, x, k), argnums=(0, 1)))(x, kernel)
    both_want = jax.grad(lambda x, k: loss(fused_block1.reference, x, k), argnums=(0, 1))(x, kernel)
    for a, b in zip(both, both_want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@needs_kernel
def test_per_example_gradients_under_vmap():
    """vmap(grad(...)): the kernels' calls run once per mapped element."""
    x = _mel_with_silence(1, 6, 8, 16).reshape(3, 2, 8, 16)
    kernel = jax.random.normal(jax.random.key(0), (3, 3, 1, 16))
    def total(fn):
        return lambda k, x: sum(a.sum() for a in fn(x, k, (2, 2)))
    got = jax.jit(jax.vmap(jax.grad(total(fused_block1.window_stats)), in_axes=(None, 0)))(kernel, x)
    want = jax.vmap(jax.grad(total(fused_block1.reference)), in_axes=(None, 0))(kernel, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


@needs_kernel
def test_train_step_holds_cpu_kernels_only_when_lowered_for_cpu(small_config):
    """The same jitted train step runs on GPUs: lowered for CUDA it holds no call to the
    CPU kernels (XLA's way), lowered for CPU it holds them."""
    from transfer_jax import train
    from transfer_jax.model import Tagger

    model, tx = Tagger(small_config, norm="train"), train.make_optimizer(1e-3)
    state = train.create_train_state(jax.random.key(0), model, tx, 71)
    step = jax.jit(train.make_train_step(model, tx))
    args = (state, jnp.zeros((2, 96, 71)), jnp.zeros((2, small_config.n_classes)))
    cuda = jax.jit(step).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    cpu = jax.jit(step).trace(*args).lower(lowering_platforms=("cpu",)).as_text()
    for name in ("conv1_pool_select", "conv1_pool_select_grad", "patch_moments", "conv3x3_filter_grad"):
        assert f"@transfer_jax_{name}(" not in cuda
        assert f"@transfer_jax_{name}(" in cpu, name
