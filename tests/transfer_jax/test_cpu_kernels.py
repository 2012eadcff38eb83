import os
import shutil

import jax
import numpy as np
import pytest

from transfer_jax import cpu_kernels

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(), reason="transfer_jax._cpu_kernels not built")


def test_kernel_is_built_where_a_compiler_is():
    """`pip install` builds the kernel as an optional extension: with a C++ compiler on
    the machine, a missing kernel means the build broke (the library would fall back to
    XLA silently, 1.6-2.1x slower in block 1)."""
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
    (13, 37, 64, (3, 4)),  # rows and columns left over
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


@needs_kernel
def test_kernel_is_lowered_for_cpu_only(small_config):
    """The per-platform choice: a CUDA lowering of the extraction holds no call to the CPU
    kernel (so the same jitted code runs on GPUs), a CPU lowering does."""
    from jax import export

    from transfer_jax import inference
    from transfer_jax.model import Tagger, init_variables

    model = Tagger(small_config, norm="per_clip")
    v = init_variables(model, jax.random.key(0))
    fn = jax.jit(lambda v, x: inference.clip_features(model, v, x))
    allow = [export.DisabledSafetyCheck.custom_call("transfer_jax_conv1_pool_stats")]
    for platform, want in (("cuda", False), ("cpu", True)):
        exp = export.export(fn, platforms=[platform], disabled_checks=allow)(v, np.zeros((96, 71), np.float32))
        assert ("transfer_jax_conv1_pool_stats" in exp.mlir_module()) == want, platform


def test_environment_switches_the_kernel_off():
    import subprocess
    import sys

    code = "from transfer_jax import cpu_kernels; print(cpu_kernels.available())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TRANSFER_JAX_CPU_KERNELS": "0"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@needs_kernel
def test_non_finite_input_gives_nan_statistics():
    """As XLA's max propagates a NaN, so does the kernel's result: bad input cannot come
    out as finite features."""
    rng = np.random.default_rng(1)
    kernel, mean = rng.normal(size=(3, 3, 1, 32)).astype(np.float32), np.zeros(32, np.float32)
    for bad in (np.nan, np.inf):
        x = rng.uniform(-80, 0, (16, 24)).astype(np.float32)
        x[5, 7] = bad
        for out in cpu_kernels.conv1_pool_stats(x, kernel, mean, (2, 4)):
            assert np.all(np.isnan(out))


@needs_kernel
def test_other_channel_counts_are_refused_and_left_to_xla(small_config):
    """The kernel is compiled for `CHANNELS`; other counts raise here, and
    `inference.clip_features` computes them in XLA, equal to the Flax module."""
    import dataclasses

    from transfer_jax import inference
    from transfer_jax.model import Tagger, init_variables

    with pytest.raises(ValueError, match="channels"):
        cpu_kernels.conv1_pool_stats(np.zeros((8, 8), np.float32), np.zeros((3, 3, 1, 5), np.float32),
                                     np.zeros(5, np.float32), (2, 2))
    model = Tagger(dataclasses.replace(small_config, channels=5), norm="per_clip")
    v = init_variables(model, jax.random.key(0))
    mel = jax.random.uniform(jax.random.key(1), (96, 71), minval=-80.0, maxval=0.0)
    np.testing.assert_allclose(inference.clip_features(model, v, mel), model.apply(v, mel[None])[1][0],
                               rtol=1e-5, atol=1e-5)
