"""The HEAR 2021 API (hear-eval-kit, hear-validator) for a transfer_jax tagger.

    import transfer_jax.hear as hear
    model = hear.load_model("checkpoints/default/checkpoints")   # or "" for that default
    scene = hear.get_scene_embeddings(audio, model)              # (n_sounds, 160)
    emb, ts = hear.get_timestamp_embeddings(audio, model)         # (n_sounds, T, 160), (n_sounds, T) ms

`audio` is (n_sounds, n_samples) at `model.sample_rate`: numpy, JAX, or a TensorFlow /
PyTorch tensor (when those are installed; outputs come back in the input's framework).

Sample rate. The network runs at 12 kHz, which HEAR does not offer (its datasets and its
validator use 16, 22.05, 44.1 or 48 kHz), so by default the model declares 16 kHz and
resamples each batch to 12 kHz on the host with soxr HQ, as `audio.load_audio` does for
files; `load_model(..., sample_rate=12_000)` skips that.

Embeddings (160 = 5 layers x 32 channels, layer order 1..5, as the paper's "12345"):
- scene: `extraction.extract(..., long_policy="mean")`: the mean over the sound's full
  model inputs (29 s for the paper's model), shorter sounds tiled or padded as the
  checkpoint's `short_policy` says;
- timestamp: for each timestamp, the model applied to the window of W log-mel frames
  (W = one model input, 1360 for the paper's model) centred on it. The log-mel of each
  sound is computed once; the windows are a gathered view of its frames, with frames
  beyond the sound at the dB value of silence (10 log10(amin) before the reference), and
  go through a jitted, batched forward of fixed shape (one compilation per model and
  batch size). Each window gets its own dB reference ("clip") or the checkpoint's fixed one,
  and BatchNorm uses per-window ("per_clip") or running statistics, so a window's
  embedding is what the model gives for that window as a clip of its own, and does not
  depend on the other sounds of the batch.
  Timestamps: centre frames c = c0 + k h (h = the largest number of 256-sample hops within
  `hop_ms` = 50 ms: 2 hops = 42.67 ms at 12 kHz; c0 = (W // 2) mod h, so that the window
  of a sound of exactly one model input lies on the grid), each reported as the centre of
  its window's audio span in ms: (256 c - 129) / 12 for the paper's W = 1360 (the first is
  -10.75 ms). A sound of exactly one model input thus has a timestamp embedding equal to
  its scene embedding (tested).

Cost: one forward of W frames per timestamp (~404 MFLOP for the paper's model, ~23 windows
a second of audio), batched. Sharing the convolutions between overlapping windows would
not be exact: the five max-pools have a combined time stride of 1280 frames, so windows
2 frames apart see different pooling partitions, per-window BatchNorm / dB statistics
differ, and 'same' padding differs at the window edges.

Normalisation: the checkpoint's: "running" (models trained here; dataset-calibrated
published weights, with their fixed dB reference), "per_clip" (the published weights
without calibration). "batch" mode is not offered: it makes a sound's embedding depend on
the other sounds of the batch; it is replaced by "per_clip".
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from transfer_jax import frontend, inference
from transfer_jax.extraction import extract, features_from_mel
from transfer_jax.model import Tagger

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "default" / "checkpoints"
HEAR_SAMPLE_RATES = (16_000, 22_050, 44_100, 48_000)
MAX_HOP_MS = 50.0


@dataclasses.dataclass(frozen=True)
class Embedder:
    """A tagger and how to run it for embeddings (held by `HearModel`)."""

    model: Tagger
    variables: Any  # {'params', 'batch_stats'}
    ref: frontend.Ref  # "clip" or a fixed dB reference
    hop_frames: int  # timestamp hop in STFT frames
    batch_size: int  # model inputs per jitted call
    micro_batch: int  # >0: lax.map over chunks of this size inside a call (CPU); 0: vmap

    @property
    def embedding_size(self) -> int:
        return self.model.config.feature_dim

    @property
    def window(self) -> int:
        """W: log-mel frames of one model input."""
        return self.model.config.frontend.n_frames


class HearModel:
    """What `load_model` returns: `sample_rate`, `scene_embedding_size`,
    `timestamp_embedding_size` (HEAR's attributes) and the `embedder`."""

    def __init__(self, embedder: Embedder, sample_rate: int):
        super().__init__()  # tf.Module's, when the class also derives from it
        self.embedder = embedder
        self.sample_rate = int(sample_rate)
        self.scene_embedding_size = int(embedder.embedding_size)
        self.timestamp_embedding_size = int(embedder.embedding_size)

    def __repr__(self) -> str:
        e = self.embedder
        return (f"HearModel(sample_rate={self.sample_rate}, embedding={self.scene_embedding_size}, "
                f"norm={e.model.norm}, ref={e.ref}, window={e.window} frames, "
                f"hop={hop_ms(e):.2f} ms)")


@functools.lru_cache(maxsize=1)
def _tf_model_class() -> type | None:
    """HearModel that is also a `tf.Module` (hear-eval-kit and hear-validator accept only
    tf.Module or torch.nn.Module models), or None without TensorFlow."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return type("HearModel", (HearModel, tf.Module), {"__module__": __name__})


def inference_mode(norm: str, metadata: dict) -> tuple[str, frontend.Ref]:
    """(norm, dB reference) for embeddings from a checkpoint's stored `norm` and metadata.
    Batch-dependent modes become per-clip; a stored numeric `db_ref` is used with
    running statistics."""
    if norm in ("batch", "per_clip"):
        return "per_clip", "clip"
    stored = metadata.get("db_ref", "clip")
    numeric = isinstance(stored, (int, float)) and not isinstance(stored, bool)
    return "running", float(stored) if numeric else "clip"


def make_model(model: Tagger, variables: dict, *, sample_rate: int = HEAR_SAMPLE_RATES[0],
               ref: frontend.Ref = "clip", max_hop_ms: float = MAX_HOP_MS, batch_size: int = 16,
               micro_batch: int | None = None, tf_module: bool = True) -> HearModel:
    """A HearModel around a tagger and its variables (`load_model` from a checkpoint)."""
    if model.norm in ("batch", "train"):
        raise ValueError(f"norm {model.norm!r} makes embeddings depend on the batch; "
                         "use 'per_clip' or 'running'")
    if sample_rate <= 0 or batch_size < 1:
        raise ValueError(f"sample_rate and batch_size must be positive, got {sample_rate}, {batch_size}")
    fe = model.config.frontend
    frame_ms = 1000.0 * fe.hop_length / fe.sample_rate
    hop = int(math.floor(max_hop_ms / frame_ms + 1e-9))
    if hop < 1:
        raise ValueError(f"max_hop_ms {max_hop_ms} is below one STFT hop ({frame_ms:.2f} ms)")
    embedder = Embedder(model, variables, ref, hop, batch_size,
                        inference.default_micro_batch() if micro_batch is None else micro_batch)
    cls = (_tf_model_class() if tf_module else None) or HearModel
    return cls(embedder, sample_rate)


def load_model(model_file_path: str | os.PathLike = "", *, sample_rate: int = HEAR_SAMPLE_RATES[0],
               norm: str | None = None, ref: frontend.Ref | None = None,
               max_hop_ms: float = MAX_HOP_MS, batch_size: int = 16,
               tf_module: bool = True) -> HearModel:
    """HEAR's `load_model`: a checkpoint directory (`checkpoint.load_pretrained`: a training
    run's best step or a `save_pretrained` directory); "" means the default trained
    checkpoint `checkpoints/default/checkpoints` (`python experiments/train_tagger.py`).

    norm / ref override the checkpoint's normalisation and dB reference (`inference_mode`).
    """
    from transfer_jax import checkpoint

    path = pathlib.Path(model_file_path) if str(model_file_path) else DEFAULT_CHECKPOINT
    if not path.is_dir():
        hint = ("no model_file_path was given and the default trained checkpoint is missing; "
                "train it with `python experiments/train_tagger.py` or pass a checkpoint "
                "directory" if not str(model_file_path) else "not a checkpoint directory")
        raise FileNotFoundError(f"{path}: {hint}")
    model, variables = checkpoint.load_pretrained(path)
    stored_norm, stored_ref = inference_mode(model.norm, checkpoint.load_metadata(path))
    model = model.clone(norm=norm or stored_norm)
    return make_model(model, variables, sample_rate=sample_rate, ref=stored_ref if ref is None else ref,
                      max_hop_ms=max_hop_ms, batch_size=batch_size, tf_module=tf_module)


# ----------------------------------------------------------------------------------------
# Inputs and outputs in the caller's framework
# ----------------------------------------------------------------------------------------

def _framework(x) -> str:
    module = type(x).__module__
    if module.startswith("torch"):
        return "torch"
    if module.startswith("tensorflow"):
        return "tf"
    return "jax" if isinstance(x, jax.Array) else "numpy"


def as_numpy(audio) -> np.ndarray:
    """numpy / JAX / torch / TF audio -> float32 (n_sounds, n_samples) numpy."""
    if hasattr(audio, "detach"):  # torch: off the graph and the device first
        audio = audio.detach().cpu()
    if hasattr(audio, "numpy") and not isinstance(audio, np.ndarray):
        audio = audio.numpy()
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"audio must be (n_sounds, n_samples) with n_samples > 0, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinite samples")
    return x


def _like(template, x: np.ndarray):
    """x in the framework (and torch device) of `template`."""
    kind = _framework(template)
    if kind == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(x)).to(template.device)
    if kind == "tf":
        import tensorflow as tf

        return tf.convert_to_tensor(x)
    return jnp.asarray(x) if kind == "jax" else x


def to_model_rate(x: np.ndarray, sample_rate: int, model_rate: int) -> np.ndarray:
    """(n_sounds, n) at sample_rate -> (n_sounds, m) at model_rate (soxr HQ, as load_audio)."""
    if sample_rate == model_rate:
        return x
    import soxr

    y = soxr.resample(np.ascontiguousarray(x.T), sample_rate, model_rate, quality="HQ")
    return np.ascontiguousarray(np.asarray(y, np.float32).reshape(-1, len(x)).T)


# ----------------------------------------------------------------------------------------
# Timestamps: centre frames, their times, and the windowed forward
# ----------------------------------------------------------------------------------------

def timestamp_frames(n_frames: int, window: int, hop: int) -> np.ndarray:
    """Centre frames c0, c0 + hop, ... < n_frames, c0 = (window // 2) % hop: (T,) int."""
    c0 = (window // 2) % hop
    return np.arange(c0, max(n_frames, c0 + 1), hop, dtype=np.int64)


def frames_to_ms(centres: np.ndarray, window: int, fe) -> np.ndarray:
    """Centre of the audio spanned by the window of `window` frames around each centre
    frame (frame t covers samples [t hop - pad_left, t hop - pad_left + n_fft)), in ms."""
    first = centres - window // 2
    last = first + window - 1
    start = first * fe.hop_length - fe.pad_left
    stop = last * fe.hop_length - fe.pad_left + fe.n_fft
    return ((start + stop) / 2.0 * 1000.0 / fe.sample_rate).astype(np.float32)


def hop_ms(embedder: Embedder) -> float:
    fe = embedder.model.config.frontend
    return 1000.0 * embedder.hop_frames * fe.hop_length / fe.sample_rate


@functools.partial(jax.jit, static_argnames=("cfg",))
def raw_db(x: jax.Array, cfg) -> jax.Array:
    """10 log10(max(mel, amin)), no reference, no floor: (n_sounds, n_mels, frames)."""
    return frontend.log_mel(x, dataclasses.replace(cfg, top_db=math.inf), 0.0)


@functools.partial(jax.jit, static_argnames=("width", "clip_ref", "top_db"))
def gather_windows(db: jax.Array, sound: jax.Array, start: jax.Array, ref: jax.Array,
                   width: int, clip_ref: bool, top_db: float) -> jax.Array:
    """Model inputs from padded raw dB. db: (n_sounds, n_mels, F); sound, start: (B,) int
    -> (B, n_mels, width), each minus its own max ("clip") or `ref`, floored at -top_db."""
    n_mels = db.shape[1]

    def one(s, t):
        w = jax.lax.dynamic_slice(db, (s, 0, t), (1, n_mels, width))[0]
        return jnp.maximum(w - (w.max() if clip_ref else ref), -top_db)

    return jax.vmap(one)(sound, start)


def timestamp_embeddings(embedder: Embedder, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x: (n_sounds, n_samples) at the model's rate -> (embeddings (n_sounds, T, D) float32,
    timestamps (n_sounds, T) ms float32). Memory: the sounds' log-mels plus one batch."""
    fe = embedder.model.config.frontend
    w, b = embedder.window, embedder.batch_size
    n_sounds = len(x)
    silence = 10.0 * math.log10(fe.amin)
    db = raw_db(jnp.asarray(x), fe)
    centres = timestamp_frames(db.shape[2], w, embedder.hop_frames)
    db = jnp.pad(db, ((0, 0), (0, 0), (w // 2, w)), constant_values=silence)
    # the window around centre c starts at padded frame c
    sound = np.repeat(np.arange(n_sounds, dtype=np.int32), len(centres))
    start = np.tile(centres.astype(np.int32), n_sounds)
    clip_ref = embedder.ref == "clip"
    ref = jnp.float32(0.0 if clip_ref else float(embedder.ref))
    out, pending = [], None
    for i in range(0, len(sound), b):
        s, t = np.zeros(b, np.int32), np.zeros(b, np.int32)
        s[: len(sound[i:i + b])], t[: len(start[i:i + b])] = sound[i:i + b], start[i:i + b]
        mels = gather_windows(db, s, t, ref, w, clip_ref, float(fe.top_db))
        feats = features_from_mel(embedder.model, embedder.variables, mels, embedder.micro_batch)
        if pending is not None:  # the host copy of the previous batch overlaps this one
            out.append(np.asarray(pending))
        pending = feats
    out.append(np.asarray(pending))
    emb = np.concatenate(out)[: len(sound)].reshape(n_sounds, len(centres), -1)
    ts = np.broadcast_to(frames_to_ms(centres, w, fe), (n_sounds, len(centres)))
    return emb.astype(np.float32), np.ascontiguousarray(ts)


def scene_embeddings(embedder: Embedder, x: np.ndarray) -> np.ndarray:
    """x: (n_sounds, n_samples) at the model's rate -> (n_sounds, D) float32: the mean over
    the sound's model inputs, as `extract(..., long_policy="mean")`."""
    feats = extract(embedder.variables, x, model=embedder.model, ref=embedder.ref,
                    batch_size=embedder.batch_size, long_policy="mean")
    return np.asarray(feats, np.float32).reshape(len(x), -1)


# ----------------------------------------------------------------------------------------
# The HEAR functions
# ----------------------------------------------------------------------------------------

def _prepare(audio, model: HearModel) -> np.ndarray:
    x = as_numpy(audio)
    return to_model_rate(x, model.sample_rate, model.embedder.model.config.frontend.sample_rate)


def get_scene_embeddings(audio, model: HearModel):
    """(n_sounds, n_samples) at model.sample_rate -> (n_sounds, scene_embedding_size)."""
    return _like(audio, scene_embeddings(model.embedder, _prepare(audio, model)))


def get_timestamp_embeddings(audio, model: HearModel):
    """(n_sounds, n_samples) at model.sample_rate -> (embeddings (n_sounds, T,
    timestamp_embedding_size), timestamps (n_sounds, T) in ms), T ~ duration / 42.67 ms."""
    emb, ts = timestamp_embeddings(model.embedder, _prepare(audio, model))
    return _like(audio, emb), _like(audio, ts)
