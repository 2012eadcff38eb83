import itertools
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


def reference(x, kernel, mean, var, scale, bias, eps, pool):
    """conv_block in float64, in the literal order (BatchNorm, ELU, then the pool):
    x (h, w, c_in), kernel (3, 3, c_in, c)."""
    (h, w, _), (ph, pw) = x.shape, pool
    p = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    d = sum(p[i:i + h, j:j + w] @ kernel[i, j].astype(np.float64) for i in range(3) for j in range(3)) - mean
    var = (d ** 2).mean(axis=(0, 1)) if var is None else var
    z = d / np.sqrt(var + eps) * scale + bias
    z = np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    out = z[: h // ph * ph, : w // pw * pw].reshape(h // ph, ph, w // pw, pw, -1).max(axis=(1, 3))
    return out, out.mean(axis=(0, 1))


@needs_kernel
@pytest.mark.parametrize("h, w, c_in, c, pool", [
    (96, 1360, 1, 32, (2, 4)),  # block 1 of the paper's input
    (96, 71, 1, 32, (2, 2)),  # the paper's channels, a column left outside the windows
    (8, 16, 1, 16, (2, 4)),  # windows tile the map exactly
    (13, 37, 1, 64, (3, 4)),  # rows and columns left over
    (48, 340, 32, 32, (3, 4)),  # block 2 of the paper's input (Winograd)
    (16, 85, 32, 32, (2, 5)),  # block 3: an odd width, a last tile half outside
    (7, 9, 16, 16, (2, 2)),  # odd height and width, rows and columns left over
    (13, 37, 64, 64, (3, 4)),
    (4, 4, 32, 32, (4, 4)),  # block 5: one window, one tile block mostly outside
])
def test_conv_block_equals_numpy(h, w, c_in, c, pool):
    """Against float64 in the literal layer order, with given (running) and per-clip
    statistics, negative BatchNorm scales (the pool takes the min there) and ELU inputs
    on both sides (its exponential side from near 0 to saturation); on one thread and with
    the rows split over two."""
    rng = np.random.default_rng(h * w + c)
    if c_in == 1:  # log-mels
        x = rng.uniform(-80, 0, (2, h, w, 1)).astype(np.float32)
        kernel = rng.normal(size=(3, 3, 1, c)).astype(np.float32)
        mean = rng.normal(size=(c,)).astype(np.float32) * 40
    else:  # ELU outputs
        x = rng.exponential(1.0, (2, h, w, c_in)).astype(np.float32) - 1
        kernel = (rng.normal(size=(3, 3, c_in, c)) / np.sqrt(9 * c_in)).astype(np.float32)
        mean = rng.normal(size=(c,)).astype(np.float32)
    scale = (rng.normal(size=c) * 3).astype(np.float32)
    bias = rng.uniform(-3, 1, c).astype(np.float32)
    variances = (None, rng.uniform(0.5, 2, c).astype(np.float32) * (40 if c_in == 1 else 1))
    for var, threads in itertools.product(variances, (1, 2)):  # 2: rows split with the helper thread
        fn = jax.jit(jax.vmap(lambda a: cpu_kernels.conv_block(a, kernel, mean, var, scale, bias, 1e-3, pool,
                                                               threads)))
        got = fn(x)
        for i in range(2):
            want_out, want_feature = reference(x[i], kernel, mean, var, scale, bias, 1e-3, pool)
            np.testing.assert_allclose(got[0][i], want_out, rtol=2e-5, atol=2e-6 * np.abs(want_out).max())
            # the mean of many windows: to a few float32 roundings (a float running sum was 20x off)
            np.testing.assert_allclose(got[1][i], want_feature, rtol=1e-6, atol=1e-6 * np.abs(want_feature).max())
    out, feature = cpu_kernels.conv_block(x[0], kernel, mean, None, scale, bias, 1e-3, pool)
    assert np.min(out) < -0.5 and np.max(out) > 0.5  # both sides of the ELU were exercised


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
    allow = [export.DisabledSafetyCheck.custom_call("transfer_jax_conv_block")]
    for platform, want in (("cuda", False), ("cpu", True)):
        exp = export.export(fn, platforms=[platform], disabled_checks=allow)(v, np.zeros((96, 71), np.float32))
        assert ("transfer_jax_conv_block" in exp.mlir_module()) == want, platform


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
        ones = np.ones(32, np.float32)
        for out in cpu_kernels.conv_block(x[..., None], kernel, mean, None, ones, mean, 1e-3, (2, 4)):
            assert np.all(np.isnan(out))
        for out in cpu_kernels.conv_block(np.repeat(x[..., None], 32, axis=-1),  # blocks 2-5
                                          np.zeros((3, 3, 32, 32), np.float32), mean, ones, ones, mean, 1e-3, (2, 4)):
            assert np.all(np.isnan(out))
        # training's batched kernel: that example's extremes NaN, no gradient positions;
        # the other example's untouched
        batch = np.stack([x, np.zeros_like(x)])
        hi, lo, mask_hi, mask_lo = cpu_kernels.conv1_pool_select(batch, kernel, mean, (2, 4))
        assert np.all(np.isnan(hi[0])) and np.all(np.isnan(lo[0])) and not np.any(mask_hi[0] | mask_lo[0])
        assert np.all(np.isfinite(hi[1])) and np.all(mask_hi[1] == 255)  # all 8 positions tie on zeros


@needs_kernel
def test_other_channel_counts_are_refused_and_left_to_xla(small_config):
    """The kernel is compiled for `CHANNELS`; other counts raise here, and
    `inference.clip_features` computes them in XLA, equal to the Flax module."""
    import dataclasses

    from transfer_jax import inference
    from transfer_jax.model import Tagger, init_variables

    with pytest.raises(ValueError, match="channels"):
        five = np.zeros(5, np.float32)
        cpu_kernels.conv_block(np.zeros((8, 8, 1), np.float32), np.zeros((3, 3, 1, 5), np.float32),
                               five, None, five, five, 1e-3, (2, 2))
    with pytest.raises(ValueError, match="channels"):  # c_in must be 1 or c
        c32 = np.zeros(32, np.float32)
        cpu_kernels.conv_block(np.zeros((8, 8, 16), np.float32), np.zeros((3, 3, 16, 32), np.float32),
                               c32, None, c32, c32, 1e-3, (2, 2))
    model = Tagger(dataclasses.replace(small_config, channels=5), norm="per_clip")
    v = init_variables(model, jax.random.key(0))
    mel = jax.random.uniform(jax.random.key(1), (96, 71), minval=-80.0, maxval=0.0)
    np.testing.assert_allclose(inference.clip_features(model, v, mel), model.apply(v, mel[None])[1][0],
                               rtol=1e-5, atol=1e-5)


def _patches(x):
    """(n, h, w) -> (n, h, w, 9): each position's zero-padded 3x3 patch, taps row-major."""
    n, h, w = x.shape
    p = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    return np.stack([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)


def _with_ties(rng, n, h, w):
    """Log-mel-like input with silent (constant) stretches: conv outputs tie in a window."""
    x = rng.uniform(-80, 0, (n, h, w)).astype(np.float32)
    x[:, :, w // 3: w // 2] = -80.0
    return x


@needs_kernel
@pytest.mark.parametrize("h, w, c, pool", [(12, 36, 32, (2, 4)), (13, 22, 16, (3, 3))])
def test_conv1_pool_select_and_its_gradient_equal_numpy(h, w, c, pool):
    """Extremes, the positions attaining them (every tied one), and the kernel gradient
    with each window's cotangent split evenly over its ties, as XLA's max splits it."""
    rng = np.random.default_rng(c)
    (ph, pw), (ho, wo) = pool, (h // pool[0], w // pool[1])
    x = _with_ties(rng, 2, h, w)
    kernel = rng.normal(size=(3, 3, 1, c)).astype(np.float32)
    mean = rng.normal(size=(c,)).astype(np.float32)
    patches = _patches(x)[:, : ho * ph, : wo * pw]  # (n, h', w', 9)
    d = patches @ kernel.reshape(9, c).astype(np.float64) - mean
    windows = d.reshape(2, ho, ph, wo, pw, c).transpose(0, 1, 3, 2, 4, 5).reshape(2, ho, wo, ph * pw, c)
    hi, lo, mask_hi, mask_lo = jax.jit(lambda *a: cpu_kernels.conv1_pool_select(*a, pool))(x, kernel, mean)
    np.testing.assert_allclose(hi, windows.max(axis=3), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lo, windows.min(axis=3), rtol=1e-5, atol=1e-4)
    bits = (1 << np.arange(ph * pw))[:, None]
    for mask, extreme in ((mask_hi, windows.max(axis=3)), (mask_lo, windows.min(axis=3))):
        # positions within float32 rounding of the extreme (the silent stretch ties exactly)
        want = ((np.abs(windows - extreme[:, :, :, None]) <= 1e-3) * bits).sum(axis=3)
        assert np.asarray(mask).dtype == np.uint16
        np.testing.assert_array_equal(mask, want)
        assert (np.vectorize(lambda v: bin(v).count("1"))(want) > 1).any()  # ties are tested
    g_hi, g_lo = (rng.normal(size=(2, ho, wo, c)).astype(np.float32) for _ in range(2))
    dk = jax.jit(lambda *a: cpu_kernels.conv1_pool_select_grad(*a, pool))(x, (mask_hi, mask_lo), (g_hi, g_lo))
    patches_w = patches.reshape(2, ho, ph, wo, pw, 9).transpose(0, 1, 3, 2, 4, 5).reshape(2, ho, wo, ph * pw, 9)
    want = np.zeros((2, 9, c))
    for mask, g in ((np.asarray(mask_hi), g_hi), (np.asarray(mask_lo), g_lo)):
        sel = (mask[:, :, :, None, :] >> np.arange(ph * pw)[:, None]) & 1  # (n, h', w', q, c)
        share = g / sel.sum(axis=3)  # split over the ties
        want += np.einsum("nyxqc,nyxc,nyxqt->ntc", sel, share, patches_w)
    np.testing.assert_allclose(np.asarray(dk).reshape(2, 9, c), want, rtol=1e-4, atol=1e-3)
    # centred patches: the same minus centre x (each example's) sum of the cotangents
    centre = rng.normal(size=9).astype(np.float32) * 40
    dk_c = cpu_kernels.conv1_pool_select_grad(x, (mask_hi, mask_lo), (g_hi, g_lo), pool, centre)
    g_sum = (g_hi.sum(axis=(1, 2)) + g_lo.sum(axis=(1, 2)))[:, None, :]  # (n, 1, c)
    np.testing.assert_allclose(np.asarray(dk_c).reshape(2, 9, c), want - centre[None, :, None] * g_sum,
                               rtol=1e-4, atol=1e-3)


@needs_kernel
def test_patch_moments_equal_numpy():
    rng = np.random.default_rng(3)
    x = _with_ties(rng, 3, 11, 29) - 40  # a large mean: the covariance must not lose it
    mean, cov = jax.jit(cpu_kernels.patch_moments)(x)
    p = _patches(x).reshape(3, -1, 9)
    np.testing.assert_allclose(mean, p.mean(axis=1), rtol=1e-6, atol=1e-4)
    centred = p - p.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(cov, np.einsum("nps,npt->nst", centred, centred) / p.shape[1], rtol=1e-5, atol=1e-3)


@needs_kernel
@pytest.mark.parametrize("c", [16, 64])
def test_conv3x3_filter_grad_equals_xla(c):
    rng = np.random.default_rng(c)
    x, g = (rng.normal(size=(2, 7, 13, c)).astype(np.float32) for _ in range(2))
    kernel = np.zeros((3, 3, c, c), np.float32)
    for e in range(2):  # per example
        want = jax.vjp(lambda k: jax.lax.conv_general_dilated(x[e:e + 1], k, (1, 1), "SAME",
                                                              dimension_numbers=("NHWC", "HWIO", "NHWC")),
                       kernel)[1](g[e:e + 1])[0]
        np.testing.assert_allclose(cpu_kernels.conv3x3_filter_grad(x, g)[e], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="channels"):
        cpu_kernels.conv3x3_filter_grad(x[..., :5], g[..., :5])
