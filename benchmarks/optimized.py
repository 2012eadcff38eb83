"""Proposed faster inference for the tagger, measured in bench_extraction.py.

Each piece computes what `transfer_jax` computes (checked there to float32 rounding) and
is a candidate to move into the library (see docs/benchmarks.md):

- `tune_allocator`: glibc malloc settings (no mmap for big blocks, no trimming, one
  arena) so that XLA's per-call buffers are reused instead of page-faulted afresh: on
  this 2-core VM every new 535 MB buffer cost 130k minor page faults (~0.3 s).
- `log_mel`: the STFT frames as two reshaped halves (n_fft = 2 hop) instead of a gather.
- `tagger_features`, block 1 (one input channel): the 3x3 convolution as 9 shifted
  multiply-adds that XLA fuses into the reductions that consume them (statistics, pool),
  so its 96 x 1360 x 32 output is never written to memory (2x faster than XLA's conv).
- `tagger_features`: max-pool before BatchNorm + ELU. Both are per-channel monotone, so
  max(elu(a x + b)) = elu(a max(x) + b) for a >= 0 and elu(a min(x) + b) for a < 0; the
  BatchNorm statistics still come from the full-resolution conv output. ELU then runs
  on the pooled map (8 to 20x smaller), and the pools are reshapes.
- `features_from_mel` / `features_from_audio`: a per-example `lax.map` over chunks of
  `micro_batch` examples on CPU, whose activations stay in cache, instead of `vmap`
  (which makes XLA materialise batch x 16.7 MB per block-1 tensor); `vmap` on GPU.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import platform

import jax
import jax.numpy as jnp
import numpy as np

from transfer_jax import frontend
from transfer_jax.config import FrontendConfig
from transfer_jax.model import Tagger

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def tune_allocator() -> bool:
    """glibc only: keep freed memory for reuse (no mmap, no trim, one arena). Process-wide;
    the peak RSS then stays at its high-water mark. Returns whether it was applied."""
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(k, v) == 1 for k, v in
                   ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30)))
    except (OSError, AttributeError):
        return False


def default_micro_batch() -> int:
    return 2 if jax.default_backend() == "cpu" else 0


def log_mel(wave: jax.Array, cfg: FrontendConfig, ref: frontend.Ref = "clip") -> jax.Array:
    """One clip, (n_samples,) -> (n_mels, frames), as `frontend.log_mel` (ref "clip" or a
    number). Frames from reshaped halves when n_fft == 2 hop, else a gather."""
    n = wave.shape[-1]
    left, right = frontend._pad_widths(n, cfg)
    frames = -(-n // cfg.hop_length)
    if cfg.n_fft == 2 * cfg.hop_length:
        extra = (-(n + left + right)) % cfg.hop_length + cfg.hop_length
        halves = jnp.pad(wave, (left, right + extra)).reshape(-1, cfg.hop_length)
        x = jnp.concatenate([halves[:frames], halves[1:frames + 1]], axis=1)
    else:
        idx = cfg.hop_length * jnp.arange(frames)[:, None] + jnp.arange(cfg.n_fft)[None, :]
        x = jnp.pad(wave, (left, right))[idx]
    window = jnp.asarray(np.hanning(cfg.n_fft + 1)[:-1], jnp.float32)
    spec = jnp.fft.rfft(x * window, axis=-1)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    mel = jnp.matmul(power, jnp.asarray(frontend.mel_filterbank(cfg)), precision=jax.lax.Precision.HIGHEST)
    db = 10.0 * jnp.log10(jnp.maximum(mel, cfg.amin)).T
    db = db - (db.max() if ref == "clip" else ref)
    return jnp.maximum(db, -cfg.top_db)


def _conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'same' 3x3 convolution, (h, w, c_in) -> (h, w, c_out); one input channel as 9
    fusible shifted multiply-adds, more as XLA's convolution."""
    h, w, c_in = x.shape
    if c_in == 1:
        p = jnp.pad(x[..., 0], 1)
        return sum(p[i:i + h, j:j + w, None] * kernel[i, j, 0] for i in range(3) for j in range(3))
    return jax.lax.conv_general_dilated(x[None], kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]


def _conv_mean(x: jax.Array, kernel: jax.Array, y: jax.Array) -> jax.Array:
    """Per-channel mean of y = conv3x3(x) (+ bias): from the input by linearity when it
    has one channel (the mean of each of the 9 shifted inputs), else y's own mean."""
    h, w, c_in = x.shape
    if c_in != 1:
        return y.astype(jnp.float32).mean(axis=(0, 1))
    p = jnp.pad(x[..., 0].astype(jnp.float32), 1)
    shifted = jnp.stack([p[i:i + h, j:j + w].mean() for i in range(3) for j in range(3)])
    return shifted @ kernel.reshape(9, -1).astype(jnp.float32)


def tagger_features(model: Tagger, variables: dict, mel: jax.Array) -> jax.Array:
    """One clip's features, (n_mels, frames) -> (n_layers, channels): `model.apply`'s
    second output for norm "per_clip" or "running", with the pool moved first. The
    centred conv output feeds max, min and (per_clip) sum-of-squares reductions over
    the same pooling windows, which XLA fuses into one pass."""
    if model.norm not in ("per_clip", "running"):
        raise ValueError(f"per-example norms only, got {model.norm!r}")
    cfg, p, s = model.config, variables["params"], variables["batch_stats"]
    x, feats = mel[..., None], []
    for i, (ph, pw) in enumerate(cfg.pools, start=1):
        conv, bn = p[f"conv{i}"], p[f"bn{i}"]
        kernel = conv["kernel"].astype(x.dtype)
        y = _conv3x3(x, kernel)  # bias folded into the mean below
        h, w, c = y.shape
        if model.norm == "running":
            mean, var = s[f"bn{i}"]["mean"] - conv["bias"], s[f"bn{i}"]["var"]
        else:
            mean, var = _conv_mean(x, kernel, y), None
        d = y - mean.astype(y.dtype)
        r = d[: h // ph * ph, : w // pw * pw].reshape(h // ph, ph, w // pw, pw, c)
        hi, lo = r.max(axis=(1, 3)), r.min(axis=(1, 3))
        if var is None:
            if h % ph == 0 and w % pw == 0:
                var = jnp.square(r.astype(jnp.float32)).sum(axis=(1, 3)).sum(axis=(0, 1)) / (h * w)
            else:
                var = jnp.square(d.astype(jnp.float32)).mean(axis=(0, 1))
        a = jax.lax.rsqrt(var + cfg.bn_epsilon) * bn["scale"]
        x = jax.nn.elu(jnp.where(a >= 0, hi, lo) * a.astype(y.dtype) + bn["bias"].astype(y.dtype))
        feats.append(x.astype(jnp.float32).mean(axis=(0, 1)))
    return jnp.stack(feats)


def _map(fn, xs: jax.Array, micro_batch: int) -> jax.Array:
    return jax.lax.map(fn, xs, batch_size=micro_batch) if micro_batch > 0 else jax.vmap(fn)(xs)


@functools.partial(jax.jit, static_argnames=("model", "micro_batch"))
def features_from_mel(model: Tagger, variables: dict, mels: jax.Array, micro_batch: int = 2) -> jax.Array:
    """(batch, n_mels, frames) -> (batch, n_layers, channels); mels may be bfloat16."""
    return _map(lambda m: tagger_features(model, variables, m), mels, micro_batch)


@functools.partial(jax.jit, static_argnames=("model", "ref", "micro_batch"))
def features_from_audio(model: Tagger, variables: dict, waves: jax.Array, ref: frontend.Ref = "clip",
                        micro_batch: int = 2) -> jax.Array:
    """(batch, n_samples) -> (batch, n_layers, channels): log-mel fused in, per example."""
    cfg = model.config.frontend
    return _map(lambda w: tagger_features(model, variables, log_mel(w, cfg, ref)), waves, micro_batch)


def reshape_max_pool(x: jax.Array, window: tuple[int, int], strides=None, padding: str = "VALID") -> jax.Array:
    """`flax.linen.max_pool` for NHWC, VALID, strides == window, as a reshape + max: the
    same forward, and a gradient XLA computes elementwise instead of select-and-scatter
    (the proposed change to `model.Tagger`; ties share the gradient instead of the first
    maximum taking it)."""
    if padding != "VALID" or (strides is not None and tuple(strides) != tuple(window)):
        raise ValueError("only VALID pooling with strides == window")
    n, h, w, c = x.shape
    ph, pw = window
    return x[:, : h // ph * ph, : w // pw * pw].reshape(n, h // ph, ph, w // pw, pw, c).max(axis=(2, 4))


@contextlib.contextmanager
def patched_max_pool():
    """Within: `transfer_jax.model` pools with `reshape_max_pool` (benchmarks only)."""
    from transfer_jax import model as model_lib

    original = model_lib.nn.max_pool
    model_lib.nn.max_pool = reshape_max_pool
    try:
        yield
    finally:
        model_lib.nn.max_pool = original
