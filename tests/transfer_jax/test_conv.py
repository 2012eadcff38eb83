import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transfer_jax import conv, cpu_kernels


@pytest.mark.parametrize("c_in, c_out", [(32, 32), (16, 16), (8, 32)])
def test_conv3x3_and_its_gradients_equal_xla(c_in, c_out):
    """Square channel counts the CPU kernel is built for take its kernel gradient; the
    rest (and everything without the kernel) is XLA's. Same values either way."""
    rng = np.random.default_rng(c_in + c_out)
    x = jnp.asarray(rng.normal(size=(3, 9, 14, c_in)), jnp.float32)
    kernel = jnp.asarray(rng.normal(0, 0.2, (3, 3, c_in, c_out)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(3, 9, 14, c_out)), jnp.float32)

    def loss(fn, x, k):
        return (fn(x, k) * g).sum()

    np.testing.assert_allclose(jax.jit(conv.conv3x3)(x, kernel), conv.lax_conv3x3(x, kernel), rtol=1e-6, atol=1e-5)
    got = jax.jit(jax.grad(lambda x, k: loss(conv.conv3x3, x, k), argnums=(0, 1)))(x, kernel)
    want = jax.grad(lambda x, k: loss(conv.lax_conv3x3, x, k), argnums=(0, 1))(x, kernel)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))
    text = jax.jit(jax.grad(lambda k: loss(conv.conv3x3, x, k))).lower(kernel).as_text()
    uses_kernel = c_in == c_out and c_in in cpu_kernels.CHANNELS and cpu_kernels.available()
    assert ("@transfer_jax_conv3x3_filter_grad(" in text) == uses_kernel
