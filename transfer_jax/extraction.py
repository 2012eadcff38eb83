"""Feature extraction: all five pooled layer activations of many clips in one jitted call.

Audio longer than one model input (29 s by default) is cut into consecutive segments
(`audio.segment`); with `long_policy="mean"` a clip's features are the mean over its
segments, with "first" only the first segment is used (the original extractor). Audio
shorter than one input is tiled or zero-padded (`FrontendConfig.short_policy`).

Per-example normalisation modes ("per_clip", "running") run the log-mel and
`inference.clip_features` per segment inside one jitted call (`features_from_audio`);
`extract` streams all segments through it in fixed-size batches (memory bounded by
`batch_size` segments, one compilation) and averages them back per clip on the host. "batch" mode couples the
clips of a batch, so it runs the batch through the model as one tensor instead, in the
given order, with the batch-maximum dB reference (the paper's own batching).
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from transfer_jax import audio as audio_lib
from transfer_jax import frontend, inference
from transfer_jax.model import Tagger

Layers = str | Sequence[int] | None


def parse_layers(layers: Layers, n_layers: int = 5) -> tuple[int, ...]:
    """People name layers 1-based ("135"); code indexes them 0-based: (0, 2, 4)."""
    if layers is None:
        return tuple(range(n_layers))
    items = list(str(layers)) if isinstance(layers, (str, int)) else [int(v) for v in layers]
    try:
        idx = tuple(int(v) - 1 for v in items)
    except ValueError:
        raise ValueError(f"layers must be digits 1..{n_layers} like '135', got {layers!r}") from None
    if not idx or any(not 0 <= i < n_layers for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"layers must be distinct digits 1..{n_layers} like '135', got {layers!r}")
    return tuple(sorted(idx))


def layer_name(indices: Sequence[int]) -> str:
    """(0, 2, 4) -> "135"."""
    return "".join(str(i + 1) for i in sorted(indices))


def layer_slices(n_layers: int = 5, channels: int = 32) -> dict[str, slice]:
    """Where each layer sits in a flattened (n, n_layers * channels) feature matrix."""
    return {f"layer{k + 1}": slice(k * channels, (k + 1) * channels) for k in range(n_layers)}


def select_layers(features: np.ndarray, layers: Layers) -> np.ndarray:
    """(n, n_layers, channels) -> (n, len(layers) * channels), layers in ascending order.

    Also accepts already flattened (n, n_layers * 32) features of 32 channels a layer.
    """
    features = np.asarray(features)
    if features.ndim == 2:
        features = features.reshape(len(features), -1, 32)
    idx = parse_layers(layers, features.shape[1])
    return features[:, idx, :].reshape(len(features), -1)


def _default_ref(norm: str) -> frontend.Ref:
    return "batch" if norm == "batch" else "clip"


def features_from_audio(model: Tagger, variables: dict, waves: jax.Array, ref: frontend.Ref = "clip",
                        micro_batch: int | None = None,
                        devices: Sequence[jax.Device] | None = None) -> jax.Array:
    """Per-example modes, log-mel fused in. waves: (batch, n_samples) -> (batch, n_layers,
    channels), the batch split over `devices` (default: all of this host's).
    `micro_batch`: see `inference.map_examples` (None: the backend's default)."""
    mb = inference.default_micro_batch() if micro_batch is None else micro_batch
    mesh = inference.data_mesh(devices, len(waves))
    waves = np.asarray(waves, np.float32) if isinstance(waves, np.ndarray) else jnp.asarray(waves, jnp.float32)
    waves, n = inference.pad_to_mesh(waves, mesh)
    return _features_from_audio(model, inference.replicate(variables, mesh), waves, ref, mb, mesh,
                                inference.kernel_threads(mesh))[:n]


@functools.partial(jax.jit, static_argnames=("model", "ref", "micro_batch", "mesh", "threads"))
def _features_from_audio(model, variables, waves, ref, micro_batch, mesh, threads):
    cfg = model.config.frontend

    def one(variables, wave):  # (n_samples,) -> (n_layers, channels)
        return inference.clip_features(model, variables, frontend.log_mel(wave[None], cfg, ref)[0], threads)

    return inference.map_examples(one, variables, waves, micro_batch, mesh)


def features_from_mel(model: Tagger, variables: dict, mel: jax.Array,
                      micro_batch: int | None = None,
                      devices: Sequence[jax.Device] | None = None) -> jax.Array:
    """mel: (batch, n_mels, frames) log-mel in dB -> (batch, n_layers, channels); in the
    per-example modes the batch is split over `devices` (default: all of this host's)."""
    mb = inference.default_micro_batch() if micro_batch is None else micro_batch
    mel = mel if isinstance(mel, np.ndarray) else jnp.asarray(mel)  # float32, or bfloat16 with bfloat16 variables
    if not jnp.issubdtype(mel.dtype, jnp.floating):
        mel = mel.astype(np.float32)
    mesh = inference.data_mesh(devices, len(mel)) if model.norm in inference.PER_EXAMPLE_NORMS else None
    mel, n = inference.pad_to_mesh(mel, mesh)
    return _features_from_mel(model, inference.replicate(variables, mesh), mel, mb, mesh,
                              inference.kernel_threads(mesh))[:n]


@functools.partial(jax.jit, static_argnames=("model", "micro_batch", "mesh", "threads"))
def _features_from_mel(model, variables, mel, micro_batch, mesh, threads):
    if model.norm not in inference.PER_EXAMPLE_NORMS:  # "batch" couples the batch
        return model.apply(variables, mel)[1]
    return inference.map_examples(lambda v, m: inference.clip_features(model, v, m, threads), variables, mel,
                                  micro_batch, mesh)


@functools.partial(jax.jit, static_argnames=("model", "ref"))
def features_batch_mode(model: Tagger, variables: dict, waves: jax.Array,
                        ref: frontend.Ref = "batch") -> jax.Array:
    """Batch mode. waves: (batch, n_samples) -> (batch, n_layers, channels)."""
    return model.apply(variables, frontend.log_mel(waves, model.config.frontend, ref))[1]


def _as_waveforms(audio) -> list[np.ndarray]:
    if isinstance(audio, np.ndarray | jax.Array) and np.ndim(audio) == 1:
        return [np.asarray(audio, np.float32)]
    return [np.asarray(a, np.float32).reshape(-1) for a in audio]


def extract(variables: dict, audio_or_mel, *, model: Tagger | None = None,
            norm: str | None = None, ref: frontend.Ref | None = None, layers: Layers = None,
            batch_size: int = 16, long_policy: str = "mean",
            short_policy: str | None = None) -> np.ndarray:
    """Features of many clips: (n_clips, n_layers, channels), or (n_clips, k * channels)
    when `layers` selects k layers ("12345" gives the paper's 160-d vector).

    audio_or_mel: waveforms at the model's sample rate (a 1-D array, a list of 1-D
    arrays of any lengths, or a (n, n_samples) array), or log-mels (n, n_mels, frames).
    `model` defaults to the paper's Tagger; `norm` overrides its normalisation mode.
    """
    model = model or Tagger()
    if norm is not None:
        model = model.clone(norm=norm)
    if model.norm == "train":
        model = model.clone(norm="batch")
    ref = _default_ref(model.norm) if ref is None else ref
    cfg = model.config.frontend
    if long_policy not in ("mean", "first"):
        raise ValueError(f"long_policy must be 'mean' or 'first', got {long_policy!r}")

    if isinstance(audio_or_mel, np.ndarray | jax.Array) and np.ndim(audio_or_mel) == 3:
        mel = np.asarray(audio_or_mel, np.float32)
        out = [np.asarray(features_from_mel(model, variables, mel[i:i + batch_size]))
               for i in range(0, len(mel), batch_size)]
        feats = np.concatenate(out) if out else np.zeros((0, model.config.n_layers, model.config.channels), np.float32)
        return feats if layers is None else select_layers(feats, layers)

    policy = short_policy or cfg.short_policy
    segs = [audio_lib.segment(w, cfg.n_samples, policy) for w in _as_waveforms(audio_or_mel)]
    if long_policy == "first":
        segs = [s[:1] for s in segs]
    feats = (_extract_batch_mode(model, variables, segs, ref, batch_size) if model.norm == "batch"
             else _extract_per_example(model, variables, segs, ref, batch_size))
    return feats if layers is None else select_layers(feats, layers)


def _mean_per_clip(segs: list[np.ndarray], seg_features) -> np.ndarray:
    """Runs `seg_features` over all clips' segments in order, averages back per clip."""
    flat = np.concatenate(segs)
    owner = np.repeat(np.arange(len(segs)), [len(s) for s in segs])
    feats = seg_features(flat)
    sums = np.zeros((len(segs),) + feats.shape[1:], np.float32)
    np.add.at(sums, owner, feats)
    return sums / np.bincount(owner, minlength=len(segs))[:, None, None]


def _extract_per_example(model, variables, segs, ref, batch_size) -> np.ndarray:
    """Segments of all clips flow through in fixed (batch_size, n_samples) calls, so memory
    is bounded by the batch and a ragged last batch reuses the same compilation."""
    if not segs:
        return np.zeros((0, model.config.n_layers, model.config.channels), np.float32)

    def run(flat):
        out = []
        for i in range(0, len(flat), batch_size):
            chunk = flat[i:i + batch_size]
            x = np.zeros((batch_size, flat.shape[-1]), np.float32)
            x[: len(chunk)] = chunk
            out.append(np.asarray(features_from_audio(model, variables, x, ref))[: len(chunk)])
        return np.concatenate(out)

    return _mean_per_clip(segs, run)


def _extract_batch_mode(model, variables, segs, ref, batch_size) -> np.ndarray:
    """Segments of all clips, in order, batched by `batch_size` (the last batch smaller,
    exactly as the paper's batches were), then averaged per clip."""
    return _mean_per_clip(segs, lambda flat: np.concatenate([
        np.asarray(features_batch_mode(model, variables, flat[i:i + batch_size], ref))
        for i in range(0, len(flat), batch_size)]))


def load_many(paths: Sequence, sr: int, workers: int | None = None, stream_over_s: float | None = None,
              ahead: int = 32):
    """Decodes files in parallel threads, yielding (index, waveform or AudioError) in order,
    at most `ahead` files decoded ahead of the consumer (memory stays bounded for any
    number of files); a file longer than `stream_over_s` seconds is not decoded: its path
    is yielded as a `Streamed` for the caller to stream (`streaming.stream_features`)."""
    import collections
    import concurrent.futures as cf
    import os

    from transfer_jax import streaming

    def load(p):
        if stream_over_s is not None and (streaming.audio_seconds(p, sr) or 0.0) > stream_over_s:
            return Streamed(str(p))
        try:
            return audio_lib.load_audio(p, sr)
        except audio_lib.AudioError as e:
            return e

    todo = iter(paths)
    with cf.ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        window = collections.deque(pool.submit(load, p) for p in itertools.islice(todo, max(ahead, 1)))
        i = 0
        while window:
            result = window.popleft().result()
            for p in itertools.islice(todo, 1):
                window.append(pool.submit(load, p))
            yield i, result
            i += 1


class Streamed(str):
    """A file path `load_many` left undecoded because the file is long."""


STREAM_OVER_S = 600.0


def extract_files(variables: dict, paths: Sequence, *, model: Tagger | None = None,
                  batch_size: int = 16, progress: bool = False,
                  stream_over_s: float | None = STREAM_OVER_S, **kwargs):
    """Features of audio files: ((n_files, n_layers, channels), failures).

    Decoding runs in threads ahead of the device. A file that cannot be used gets a NaN
    row and a (path, reason) entry in `failures`; the others are unaffected (except in
    "batch" norm mode, where batches are formed from the good files in order).
    kwargs: `extract`'s norm, ref, long_policy, short_policy.

    Memory: files longer than `stream_over_s` (default 10 minutes) are streamed in blocks
    (`streaming.stream_features`, same features) instead of decoded whole, so memory
    stays bounded by 4 x batch_size + 32 (`load_many`'s look-ahead) decoded files of at
    most that length, whatever the number and lengths of the files (None: decode
    everything; "batch" norm holds all good files, in order, and never streams).
    """
    from tqdm.auto import tqdm

    from transfer_jax import streaming

    model = model or Tagger()
    cfg = model.config
    feats = np.full((len(paths), cfg.n_layers, cfg.channels), np.nan, np.float32)
    failures: list[tuple[str, str]] = []
    pending: list[tuple[int, np.ndarray]] = []
    norm_model = model.clone(norm=kwargs["norm"]) if kwargs.get("norm") else model
    per_example = norm_model.norm in inference.PER_EXAMPLE_NORMS

    def flush():
        if pending:
            idx = [i for i, _ in pending]
            feats[idx] = extract(variables, [w for _, w in pending], model=model,
                                 batch_size=batch_size, **kwargs)
            pending.clear()

    def stream(path: str) -> np.ndarray:
        return streaming.stream_features(
            variables, path, model=norm_model, ref=kwargs.get("ref"), batch_size=batch_size,
            short_policy=kwargs.get("short_policy"),
            max_inputs=1 if kwargs.get("long_policy") == "first" else None)

    # batch mode needs all good files in one pass to keep the given batching
    chunk = 4 * batch_size if per_example else len(paths)
    loaded = load_many(paths, cfg.frontend.sample_rate, stream_over_s=stream_over_s if per_example else None)
    for i, w in tqdm(loaded, total=len(paths), desc="extract", disable=not progress):
        if isinstance(w, Streamed):
            try:
                feats[i] = stream(w)
            except audio_lib.AudioError as e:
                failures.append((e.path, e.problem))
        elif isinstance(w, audio_lib.AudioError):
            failures.append((w.path, w.problem))
        else:
            pending.append((i, w))
        if len(pending) >= chunk:
            flush()
    flush()
    return feats, failures
