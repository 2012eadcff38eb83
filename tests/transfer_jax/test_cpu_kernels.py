import shutil

import jax
import numpy as np
import pytest

from transfer_jax import cpu_kernels

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(), reason="transfer_jax._cpu_kernels not built")


def test_kernel_is_built_where_a_compiler_is():
    """`pip install` builds the kernel as an optional extension: with a C++ compiler on
    the machine, a missing kernel means the build broke (the library would fall back to
    XLA silently, 3-4x slower in block 1)."""
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler: the library runs block 1 in XLA")
    assert cpu_kernels.available()


def reference(x, kernel, mean, pool):
    (h, w), (ph, pw) = x.shape, pool
    p = np.pad(x.astype(np.float64), 1)
    d = sum(p[i:i + h, j:j + w, None] * kernel[i, j, 0] for i in range(3) for j in range(3)) - mean
    win = d[: h // ph * ph, : w // pw * pw].reshape(h // ph, ph, w // pw, pw, -1)
    return win.max(axis=(1, 3)), win.min(axis=(1, 3)), (d ** 2).sum(axis=(0, 1))


@needs_kernel
@pytest.mark.parametrize("h, w, c, pool", [
    (96, 71, 32, (2, 2)),  # the paper's channels, a column left outside the windows
    (8, 16, 16, (2, 4)),  # windows tile the map exactly
    (13, 37, 5, (3, 4)),  # any channel count (the untemplated loop), rows and columns left over
])
def test_conv1_pool_stats_equal_numpy(h, w, c, pool):
    rng = np.random.default_rng(h * w + c)
    x = rng.uniform(-80, 0, (2, h, w)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 1, c)).astype(np.float32)
    mean = rng.normal(size=(c,)).astype(np.float32) * 40
    fn = jax.jit(jax.vmap(lambda a: cpu_kernels.conv1_pool_stats(a, kernel, mean, pool)))
    got = fn(x)
    for i in range(2):
        want = reference(x[i], kernel, mean, pool)
        for g, wnt in zip(got, want):
            np.testing.assert_allclose(g[i], wnt, rtol=2e-5, atol=2e-5 * np.abs(wnt).max())
    hi, lo, sumsq = cpu_kernels.conv1_pool_stats(x[0], kernel, mean, pool, want_var=False)
    np.testing.assert_array_equal(hi, got[0][0])
    np.testing.assert_array_equal(lo, got[1][0])
    assert not np.any(sumsq)
