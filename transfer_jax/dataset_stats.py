"""Dataset statistics: Keras 1 BatchNorm "mode 2" with the whole dataset as one batch.

The published tagger normalises every BatchNorm layer with the statistics of the batch it
is fed (and references its dB scale to the batch maximum). One clip per batch (per-clip
statistics) makes its tags nearly constant; batches of many clips give sensible tags but
make a clip's features depend on its neighbours. Dataset statistics fix the batch to "the
whole dataset" once, so extraction afterwards is deterministic, batch-independent and
vmappable:

- dB reference: max over all model inputs, mels and frames of 10*log10(max(mel, amin)),
  i.e. the batch-max reference of `frontend.log_mel(..., ref="batch")` with the dataset
  as the batch;
- layer k (1-based): the per-channel mean and biased variance over all inputs x freq x
  time of conv_k's output, where the frontend uses the dataset dB reference and layers
  < k are already normalised with their dataset statistics. That is exactly what
  `Tagger(norm="batch")` computes when the dataset is a single batch.

The statistics are streamed: one pass for the dB reference and one per layer, each over
batches of `batch_size` inputs (one compilation; a ragged batch is zero-padded and
masked). Each batch gives per-input channel means and sums of squared deviations (float32
on the device), combined on the host in float64 with Chan et al.'s parallel formula, so
memory is bounded by a batch and the result does not depend on how the data is batched
(beyond float32 rounding inside one input).

Use them as running statistics:

    batch_stats, db_ref = compute_dataset_stats(model, variables, waves, batch_size=16)
    model, variables = dataset_model(model, variables, batch_stats)   # Tagger(norm="running")
    feats = extract(variables, waves, model=model, ref=db_ref)
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from transfer_jax import frontend
from transfer_jax.model import Tagger

Batches = Callable[[], Iterable]  # called once per pass, yields (b, n_samples) arrays


# ----------------------------------------------------------------------------------------
# Device side: per-input moments of the dB scale and of conv_k's output
# ----------------------------------------------------------------------------------------

def _raw_db(waves: jax.Array, cfg) -> jax.Array:
    """10*log10(max(mel, amin)) without reference or floor: (b, n_mels, frames)."""
    return frontend.log_mel(waves, dataclasses.replace(cfg, top_db=math.inf), 0.0)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _db_max(waves: jax.Array, mask: jax.Array, cfg) -> jax.Array:
    """Per-input maximum of the raw dB scale, -inf for padding: (b,)."""
    return jnp.where(mask > 0, _raw_db(waves, cfg).max(axis=(1, 2)), -jnp.inf)


def conv_output(model: Tagger, variables: dict, mel: jax.Array, k: int) -> jax.Array:
    """conv_k's output (before its BatchNorm), (b, freq, time, channels), as the model
    sows it (per-example or running norms); under jit the layers after conv_k are dead code."""
    if model.norm not in ("running", "per_clip"):
        raise ValueError(f"conv_output needs a per-example norm, got {model.norm!r}")
    _, state = model.apply(variables, mel, mutable=["intermediates"])
    return state["intermediates"][f"conv{k}_output"][0]


@functools.partial(jax.jit, static_argnames=("model", "k"))
def _layer_moments(model: Tagger, variables: dict, waves: jax.Array, db_ref: jax.Array,
                   k: int) -> tuple[jax.Array, jax.Array]:
    """Per-input channel mean and sum of squared deviations of conv_k: ((b, C), (b, C)).

    The frontend uses the dataset reference (same arithmetic as `log_mel(ref=float)`);
    the model runs with the running statistics in `variables` (dataset statistics for the
    layers before k). Reductions go time first, then frequency, to keep float32 sums short.
    """
    cfg = model.config.frontend
    mel = jnp.maximum(_raw_db(waves, cfg) - db_ref, -cfg.top_db)
    x = conv_output(model, variables, mel, k)
    n = x.shape[1] * x.shape[2]
    mean = x.sum(axis=2).sum(axis=1) / n
    m2 = jnp.square(x - mean[:, None, None, :]).sum(axis=2).sum(axis=1)
    return mean, m2


class _Moments:
    """Per-channel count, mean and M2 in float64, merged with Chan's parallel formula."""

    def __init__(self):
        self.n = 0.0
        self.mean = None
        self.m2 = None

    def add(self, n: float, mean: np.ndarray, m2: np.ndarray) -> None:
        mean, m2 = np.asarray(mean, np.float64), np.asarray(m2, np.float64)
        if self.mean is None:
            self.n, self.mean, self.m2 = float(n), mean.copy(), m2.copy()
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.n * n / total)
        self.n = total

    def add_inputs(self, n_each: int, means: np.ndarray, m2s: np.ndarray) -> None:
        """Merges b inputs of n_each elements each ((b, C) means and M2s) as one group."""
        means, m2s = np.asarray(means, np.float64), np.asarray(m2s, np.float64)
        if len(means) == 0:
            return
        mean = means.mean(axis=0)
        m2 = m2s.sum(axis=0) + n_each * np.square(means - mean).sum(axis=0)
        self.add(n_each * len(means), mean, m2)

    @property
    def var(self) -> np.ndarray:
        return self.m2 / self.n


# ----------------------------------------------------------------------------------------
# Host side: batching any source of model inputs
# ----------------------------------------------------------------------------------------

def _batch_source(data, batch_size: int) -> Batches:
    """A re-iterable source of (b <= batch_size, n_samples) float32 batches."""
    if callable(data):
        def batches():
            for batch in data():
                batch = np.asarray(batch, np.float32)
                if batch.ndim == 1:
                    batch = batch[None]
                for i in range(0, len(batch), batch_size):
                    yield batch[i:i + batch_size]
        return batches
    if isinstance(data, np.ndarray | jax.Array) and np.ndim(data) == 2:
        return lambda: (np.asarray(data[i:i + batch_size], np.float32)
                        for i in range(0, len(data), batch_size))
    if isinstance(data, Sequence) or isinstance(data, np.ndarray):
        items = list(data)
        return lambda: (np.stack([np.asarray(w, np.float32).reshape(-1) for w in items[i:i + batch_size]])
                        for i in range(0, len(items), batch_size))
    raise TypeError("waves_or_batches must be a (n, n_samples) array, a sequence of "
                    "(n_samples,) arrays, or a callable returning an iterable of batches "
                    f"(a new iterator for each pass), got {type(data).__name__}")


def _padded(batches: Batches, batch_size: int, n_samples: int):
    """Yields (x (batch_size, n_samples), mask (batch_size,), n_real) for every batch."""
    for batch in batches():
        if batch.ndim != 2 or batch.shape[1] != n_samples:
            raise ValueError(f"model inputs must be (b, {n_samples}) batches, got {batch.shape}")
        b = len(batch)
        if b == 0:
            continue
        x = np.zeros((batch_size, n_samples), np.float32)
        x[:b] = batch
        mask = (np.arange(batch_size) < b).astype(np.float32)
        yield x, mask, b


def placeholder_stats(model: Tagger) -> dict:
    """{'bn{i}': {'mean': 0, 'var': 1}}: the identity running statistics."""
    c = model.config.channels
    return {f"bn{i}": {"mean": np.zeros(c, np.float32), "var": np.ones(c, np.float32)}
            for i in range(1, model.config.n_layers + 1)}


def compute_dataset_stats(model: Tagger, variables: dict, waves_or_batches, *,
                          batch_size: int = 16, progress: bool = False) -> tuple[dict, float]:
    """(batch_stats, db_ref): dataset statistics of `model` (any norm; its config is used).

    waves_or_batches: model inputs of exactly `n_samples` samples each: a (n, n_samples)
    array (a memmap is fine), a sequence of (n_samples,) arrays, or a callable returning a
    fresh iterable of (b, n_samples) batches (it is called 1 + n_layers times).
    batch_stats: {'bn{i}': {'mean', 'var'}} float32, for `Tagger(norm="running")`;
    db_ref: the dataset's dB reference in dB, for `log_mel(..., ref=db_ref)`.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = model.config
    fe = cfg.frontend
    source = _batch_source(waves_or_batches, batch_size)
    running = model.clone(norm="running")
    stats = placeholder_stats(model)
    params = variables["params"]
    passes = tqdm(total=1 + cfg.n_layers, desc="dataset stats", disable=not progress)

    db_ref, n_inputs = -math.inf, 0
    for x, mask, b in _padded(source, batch_size, fe.n_samples):
        db_ref = max(db_ref, float(np.max(np.asarray(_db_max(x, mask, fe)))))
        n_inputs += b
    if n_inputs == 0:
        raise ValueError("no model inputs: dataset statistics need at least one clip")
    passes.update()
    db_ref_dev = jnp.float32(db_ref)

    for k in range(1, cfg.n_layers + 1):
        moments = _Moments()
        current = {"params": params, "batch_stats": jax.tree_util.tree_map(jnp.asarray, stats)}
        for x, _, b in _padded(source, batch_size, fe.n_samples):
            mean, m2 = _layer_moments(running, current, x, db_ref_dev, k)
            n_each = _conv_size(cfg, k)
            moments.add_inputs(n_each, np.asarray(mean)[:b], np.asarray(m2)[:b])
        stats[f"bn{k}"] = {"mean": moments.mean.astype(np.float32),
                           "var": moments.var.astype(np.float32)}
        passes.update()
    passes.close()
    return stats, float(db_ref)


def _conv_size(cfg, k: int) -> int:
    """freq x time elements of conv_k's output per input."""
    h, t = cfg.frontend.n_mels, cfg.frontend.n_frames
    for pf, pt in cfg.pools[:k - 1]:
        h, t = h // pf, t // pt
    return h * t


def dataset_variables(variables: dict, batch_stats: dict) -> dict:
    """`variables` with `batch_stats` replaced by the dataset statistics (float32)."""
    return {**variables, "batch_stats": jax.tree_util.tree_map(
        lambda a: np.asarray(a, np.float32), batch_stats)}


def dataset_model(model: Tagger, variables: dict, batch_stats: dict) -> tuple[Tagger, dict]:
    """(Tagger(norm="running"), variables with the dataset statistics). Run it with the
    frontend reference `ref=db_ref` (e.g. `extract(..., ref=db_ref)`)."""
    return model.clone(norm="running"), dataset_variables(variables, batch_stats)


# ----------------------------------------------------------------------------------------
# Files: calibration from audio paths, and saving / loading the statistics
# ----------------------------------------------------------------------------------------

def stats_from_files(model: Tagger, variables: dict, paths: Sequence, *, batch_size: int = 16,
                     short_policy: str | None = None, long_policy: str = "first",
                     tmp_dir: str | os.PathLike | None = None,
                     progress: bool = False) -> tuple[dict, float, dict]:
    """Dataset statistics of audio files: (batch_stats, db_ref, info).

    Each file is decoded once (threads, `extraction.load_many`) and cut into model inputs as
    extraction would (`short_policy` tile|pad, `long_policy` first: the first input only,
    mean: every full 29 s segment); the inputs are spooled to a temporary float32 file
    (in `tmp_dir`) so that memory stays bounded, then streamed 1 + n_layers times.
    info: {'n_files', 'n_inputs', 'failures': [(path, reason)]}; files that cannot be
    decoded are left out of the statistics.
    """
    from tqdm.auto import tqdm

    from transfer_jax import audio as audio_lib
    from transfer_jax.extraction import load_many

    if long_policy not in ("first", "mean"):
        raise ValueError(f"long_policy must be 'first' or 'mean', got {long_policy!r}")
    fe = model.config.frontend
    policy = short_policy or fe.short_policy
    failures: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="calibration-", dir=tmp_dir) as tmp:
        spool = pathlib.Path(tmp) / "inputs.f32"
        n_inputs = 0
        with open(spool, "wb") as f:
            for _, w in tqdm(load_many(list(paths), fe.sample_rate), total=len(paths),
                             desc="calibration decode", disable=not progress):
                if isinstance(w, audio_lib.AudioError):
                    failures.append((w.path, w.problem))
                    continue
                segs = audio_lib.segment(w, fe.n_samples, policy)
                segs = segs[:1] if long_policy == "first" else segs
                f.write(np.ascontiguousarray(segs, np.float32).tobytes())
                n_inputs += len(segs)
        if n_inputs == 0:
            raise ValueError(f"none of the {len(paths)} calibration files could be used")
        inputs = np.memmap(spool, np.float32, "r", shape=(n_inputs, fe.n_samples))
        try:
            stats, db_ref = compute_dataset_stats(model, variables, inputs,
                                                  batch_size=batch_size, progress=progress)
        finally:
            del inputs
    info = {"n_files": len(paths) - len(failures), "n_inputs": n_inputs, "failures": failures,
            "short_policy": policy, "long_policy": long_policy}
    return stats, db_ref, info


def save_stats(path: str | os.PathLike, batch_stats: dict, db_ref: float, **info) -> pathlib.Path:
    """Writes an .npz: 'bn{i}/mean', 'bn{i}/var' (float32), 'db_ref', and scalar/str info."""
    path = pathlib.Path(path)
    arrays = {f"{layer}/{name}": np.asarray(v, np.float32)
              for layer, d in batch_stats.items() for name, v in d.items()}
    arrays["db_ref"] = np.float64(db_ref)
    for key, value in info.items():
        arrays[f"info/{key}"] = np.asarray(value)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_stats(path: str | os.PathLike) -> tuple[dict, float, dict]:
    """(batch_stats, db_ref, info) from `save_stats`' file."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read dataset statistics ({e})") from None
    if "db_ref" not in data:
        raise ValueError(f"{path}: not a dataset statistics file (no 'db_ref')")
    stats: dict = {}
    info: dict = {}
    for key, value in data.items():
        if key.startswith("info/"):
            info[key[5:]] = value.item()
        elif key != "db_ref":
            layer, name = key.split("/")
            stats.setdefault(layer, {})[name] = value.astype(np.float32)
    if not stats or any(set(d) != {"mean", "var"} for d in stats.values()):
        raise ValueError(f"{path}: incomplete dataset statistics ({sorted(data)})")
    return stats, float(data["db_ref"]), info


def check_stats(model: Tagger, batch_stats: dict) -> None:
    """Raises ValueError unless `batch_stats` fits `model` (layers and channels)."""
    want = {f"bn{i}" for i in range(1, model.config.n_layers + 1)}
    if set(batch_stats) != want:
        raise ValueError(f"statistics for layers {sorted(batch_stats)}, model has {sorted(want)}")
    c = model.config.channels
    bad = [f"{k}/{n}" for k, d in batch_stats.items() for n, v in d.items()
           if np.shape(v) != (c,) or not np.all(np.isfinite(v))]
    if bad:
        raise ValueError(f"statistics do not fit {c} channels or are not finite: {bad}")


def read_path_list(path: str | os.PathLike, root: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """(entries as written, resolved paths) of a list file: one path a line, blank lines
    skipped, surrounding whitespace stripped; relative paths are taken from `root`
    (default: the current directory)."""
    path = pathlib.Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the list of audio files ({e})") from None
    entries = [ln.strip() for ln in lines if ln.strip()]
    base = pathlib.Path(root) if root is not None else pathlib.Path.cwd()
    resolved = [str(p if (p := pathlib.Path(e).expanduser()).is_absolute() else base / p) for e in entries]
    return entries, resolved
