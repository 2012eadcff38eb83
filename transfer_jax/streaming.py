"""Long audio in bounded memory: decode, resample and extract 29 s segments as a stream.

`stream_features(variables, path, model=...)` equals
`extract(variables, [load_audio(path)], model=..., long_policy="mean")[0]` (tested), but
never holds the decoded file: blocks of `block_frames` frames are read with soundfile,
mixed to mono, resampled to the model's rate with soxr's streaming resampler (identical
output to the one-shot `soxr.resample` that `load_audio` uses), cut into model inputs,
and run through the jitted extraction `batch_size` inputs at a time, keeping a running
float64 sum of the features.

Memory bound, independent of the file's length:
    one decoded block     block_frames x channels x 4 B    (65,536 frames: 0.5 MB stereo)
  + the segment buffer    < n_samples + one resampled block (1.4 MB + 0.2 MB at 29 s)
  + one batch of inputs   batch_size x n_samples x 4 B      (16 x 1.39 MB = 22 MB)
  + the jitted forward's working memory for one batch       (the bulk: ~16.7 MB of block-1
                                                             activations per 29 s input)
  + the running sum       n_layers x channels float64.
Measured peak RSS for a 60-minute file: docs/benchmarks.md and `tests/.../test_streaming.py`.

Formats: everything soundfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1, aiff, au)
streams; `.npy` streams from a memory map; anything else falls back to decoding the whole
file with `audio.load_audio` (librosa/audioread), which is not bounded.
"""
from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from transfer_jax import audio as audio_lib
from transfer_jax import frontend
from transfer_jax.model import Tagger

BLOCK_FRAMES = 65_536


def audio_seconds(path: str | os.PathLike, npy_rate: int) -> float | None:
    """A file's duration from its header (soundfile) or shape (.npy at `npy_rate`), without
    decoding it; None when neither can tell (unreadable, or a format soundfile lacks)."""
    import soundfile as sf

    path = pathlib.Path(path)
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False).shape[-1] / npy_rate
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.frames > 0 else None
    except Exception:  # noqa: BLE001 - the decoder proper reports what is wrong
        return None


def decoded_blocks(path: str | os.PathLike, target_rate: int, block_frames: int = BLOCK_FRAMES
                   ) -> tuple[int | None, int | None, Iterator[np.ndarray]]:
    """(sample rate, frame count or None, iterator of mono float32 blocks) of a file; the
    rate is None when the blocks are already at `target_rate` (.npy, the fallback).

    Raises AudioError for missing, empty or undecodable files; the iterator raises it for
    NaN / infinite samples. Blocks are read until the decoder returns none (soundfile's
    frame count is only an estimate for mp3).
    """
    import soundfile as sf

    path = pathlib.Path(path)
    if not path.exists():
        raise audio_lib.AudioError(path, "file not found")
    if path.is_dir():
        raise audio_lib.AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise audio_lib.AudioError(path, "file is empty (0 bytes)")
    if path.suffix.lower() == ".npy":
        return _npy_blocks(path, block_frames)
    try:
        f = sf.SoundFile(str(path))
    except Exception:  # noqa: BLE001 - not soundfile's: decode whole (unbounded)
        y = audio_lib.load_audio(path, target_rate)  # raises AudioError if it cannot
        return None, len(y), iter([y])

    def blocks() -> Iterator[np.ndarray]:
        with f:
            while True:
                try:
                    b = f.read(block_frames, dtype="float32", always_2d=True)
                except Exception as e:  # noqa: BLE001 - corrupt data past the header
                    raise audio_lib.AudioError(path, f"cannot decode as audio ({e})") from None
                if len(b) == 0:
                    return
                yield _mono(path, b)

    return int(f.samplerate), int(f.frames) if f.frames > 0 else None, blocks()


def _mono(path, block: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n,) mean over channels; rejects non-finite samples."""
    if not np.all(np.isfinite(block)):
        raise audio_lib.AudioError(path, "contains NaN or infinite samples")
    return block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]


def _npy_blocks(path: pathlib.Path, block_frames: int):
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise audio_lib.AudioError(path, f"cannot read as a .npy array ({e})") from None
    if data.ndim not in (1, 2) or not np.issubdtype(data.dtype, np.number):
        raise audio_lib.AudioError(path, f"expected 1-D or 2-D numeric samples, got {data.dtype} {data.shape}")
    n = data.shape[-1]

    def blocks():
        for i in range(0, n, block_frames):
            part = np.asarray(data[..., i:i + block_frames], np.float32)
            yield _mono(path, np.atleast_2d(part).T)

    return None, n, blocks()  # None: already at the model's rate


def resampled(blocks: Iterable[np.ndarray], in_rate: int | None, out_rate: int) -> Iterator[np.ndarray]:
    """Mono blocks at in_rate -> blocks at out_rate (soxr HQ streaming; None: as is)."""
    if in_rate is None or in_rate == out_rate:
        yield from blocks
        return
    import soxr

    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
    for b in blocks:
        out = stream.resample_chunk(np.ascontiguousarray(b, np.float32), last=False)
        if len(out):
            yield out
    tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
    if len(tail):
        yield tail


def segments(blocks: Iterable[np.ndarray], n_samples: int, policy: str = "tile",
             path: str | os.PathLike = "<stream>") -> Iterator[np.ndarray]:
    """Blocks -> consecutive (n_samples,) model inputs, as `audio.segment`: full segments,
    a shorter remainder dropped; audio shorter than one input gives one input filled by
    `policy`. Holds less than one input plus one block."""
    buf: list[np.ndarray] = []
    held, emitted = 0, 0
    for b in blocks:
        buf.append(b)
        held += len(b)
        if held < n_samples:
            continue
        joined = np.concatenate(buf)
        n_full = len(joined) // n_samples
        for k in range(n_full):
            yield joined[k * n_samples:(k + 1) * n_samples]
        emitted += n_full
        rest = joined[n_full * n_samples:]
        buf, held = [rest.copy()], len(rest)
    if emitted == 0:
        if held == 0:
            raise audio_lib.AudioError(path, "contains no samples (zero-length audio)")
        yield audio_lib.fit_length(np.concatenate(buf), n_samples, policy)


def _batches(inputs: Iterable[np.ndarray], batch_size: int, n_samples: int
             ) -> Iterator[tuple[np.ndarray, int]]:
    """(x (batch_size, n_samples) zero-padded, n_real) for consecutive inputs."""
    x, b = np.zeros((batch_size, n_samples), np.float32), 0
    for seg in inputs:
        x[b] = seg
        b += 1
        if b == batch_size:
            yield x, b
            x, b = np.zeros((batch_size, n_samples), np.float32), 0
    if b:
        yield x, b


def stream_features(variables: dict, path: str | os.PathLike, *, model: Tagger | None = None,
                    ref: frontend.Ref | None = None, batch_size: int = 16,
                    short_policy: str | None = None, block_frames: int = BLOCK_FRAMES,
                    max_inputs: int | None = None, progress: bool = False) -> np.ndarray:
    """(n_layers, channels) float32: the mean of the features of a file's consecutive model
    inputs, streamed (see the module docstring for the memory bound); the first
    `max_inputs` only, when given (1: `long_policy="first"`). Norm modes as `extract`:
    per-example modes batch-independent, "batch" over consecutive inputs."""
    from tqdm.auto import tqdm

    from transfer_jax.extraction import _default_ref, features_batch_mode, features_from_audio

    model = model or Tagger()
    if model.norm == "train":
        model = model.clone(norm="batch")
    ref = _default_ref(model.norm) if ref is None else ref
    fe = model.config.frontend
    rate, frames, blocks = decoded_blocks(path, fe.sample_rate, block_frames)
    expected = None if frames is None else max(1, int(frames * fe.sample_rate / (rate or fe.sample_rate)) // fe.n_samples)
    inputs = segments(resampled(blocks, rate, fe.sample_rate), fe.n_samples,
                      short_policy or fe.short_policy, path)
    if max_inputs is not None:
        inputs = itertools.islice(inputs, max_inputs)
        expected = None if expected is None else min(expected, max_inputs)
    total, count = np.zeros((model.config.n_layers, model.config.channels), np.float64), 0
    with tqdm(total=expected, unit="segment", desc=pathlib.Path(path).name, disable=not progress) as bar:
        for x, b in _batches(inputs, batch_size, fe.n_samples):
            if model.norm == "batch":
                feats = np.asarray(features_batch_mode(model, variables, x[:b], ref))
            else:
                feats = np.asarray(features_from_audio(model, variables, x, ref))[:b]
            total += feats.sum(axis=0, dtype=np.float64)
            count += b
            bar.update(b)
    return (total / count).astype(np.float32)


def stream_features_files(variables: dict, paths: Sequence, *, model: Tagger | None = None,
                          progress: bool = False, **kwargs) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """`stream_features` for each file: ((n_files, n_layers, channels), failures) with a
    NaN row and a (path, reason) entry for each file that cannot be used."""
    from tqdm.auto import tqdm

    model = model or Tagger()
    cfg = model.config
    feats = np.full((len(paths), cfg.n_layers, cfg.channels), np.nan, np.float32)
    failures: list[tuple[str, str]] = []
    for i, p in enumerate(tqdm(paths, unit="file", desc="extract (streamed)", disable=not progress)):
        try:
            feats[i] = stream_features(variables, p, model=model, **kwargs)
        except audio_lib.AudioError as e:
            failures.append((e.path, e.problem))
    return feats, failures

