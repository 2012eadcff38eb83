"""A tagging corpus in the MSD split layout -> log-mel arrays ready for training.

Reads the split files (`msd_layout`), decodes every clip (threads, in parallel with the
frontend), fits it to the model's input length, computes log-mels with the jitted JAX
frontend and caches them as float16 `.npy`, keyed by the frontend config and file list,
so later runs start at once. Files that cannot be used are skipped and recorded, with
the reason, in `<cache>/<split>_rejects.csv`; the run goes on.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np
from tqdm.auto import tqdm

from data_pipelines import msd_layout
from transfer_jax import audio as audio_lib
from transfer_jax import frontend
from transfer_jax.config import FrontendConfig


@dataclasses.dataclass
class LoadedSplit:
    mel: np.ndarray  # (n_ok, n_mels, frames) float16, dB
    labels: np.ndarray  # (n_ok, n_tags) uint8
    ids: list[str]  # 7digital ids of the rows kept
    rejects: list[tuple[str, str]]  # (path, reason)


def _cache_key(cfg: FrontendConfig, files: list[str]) -> str:
    blob = json.dumps([dataclasses.asdict(cfg), files]).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def _load_one(path: pathlib.Path, cfg: FrontendConfig) -> np.ndarray:
    y = audio_lib.load_audio(path, cfg.sample_rate)
    return audio_lib.fit_length(y, cfg.n_samples, cfg.short_policy)


def _atomic_save(path: pathlib.Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def load_split(split_dir: str | os.PathLike, audio_root: str | os.PathLike, split: str,
               cfg: FrontendConfig = FrontendConfig(), *, cache_dir: str | os.PathLike | None = None,
               batch_size: int = 32, workers: int | None = None, progress: bool = True) -> LoadedSplit:
    """Log-mels and labels of one split. Raises if the split has no labels or no usable clip."""
    index = msd_layout.read_split(split_dir, split)
    if index.labels is None:
        raise FileNotFoundError(
            f"{msd_layout.split_file(split_dir, split, 'y.npy')}: no labels for the {split!r} split")
    cache = pathlib.Path(cache_dir or pathlib.Path(split_dir).parent / "mel_cache")
    cache.mkdir(parents=True, exist_ok=True)
    key = _cache_key(cfg, index.filenames)
    mel_path, keep_path = cache / f"{split}_{key}_mel.npy", cache / f"{split}_{key}_keep.npy"
    rejects_path = cache / f"{split}_rejects.csv"
    if mel_path.exists() and keep_path.exists():
        keep = np.load(keep_path)
        rejects = _read_rejects(rejects_path)
        mel = np.load(mel_path, mmap_mode="r")
    else:
        paths = [msd_layout.audio_path(audio_root, f) for f in index.filenames]
        mel, keep, rejects = _compute(paths, cfg, batch_size, workers, progress, desc=split)
        _write_rejects(rejects_path, rejects)
        _atomic_save(mel_path, mel)
        _atomic_save(keep_path, keep)
    if len(mel) == 0:
        raise ValueError(f"{split_dir}: no usable audio in the {split!r} split; see {rejects_path}")
    return LoadedSplit(mel=mel, labels=index.labels[keep], ids=[index.ids_7d[i] for i in keep],
                       rejects=rejects)


def _compute(paths, cfg, batch_size, workers, progress, desc):
    mels, keep, rejects = [], [], []
    batch, batch_idx = [], []

    def flush():
        if batch:
            m = frontend.log_mel_jit(np.stack(batch + [batch[-1]] * (batch_size - len(batch))), cfg, "clip")
            mels.append(np.asarray(m[: len(batch)], np.float16))
            keep.extend(batch_idx)
            batch.clear()
            batch_idx.clear()

    workers = workers or min(8, os.cpu_count() or 1)
    with cf.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_load_one, p, cfg) for p in paths]
        for i, fut in enumerate(tqdm(futures, desc=f"log-mel {desc}", disable=not progress)):
            try:
                batch.append(fut.result())
                batch_idx.append(i)
            except audio_lib.AudioError as e:
                rejects.append((e.path, e.problem))
            if len(batch) == batch_size:
                flush()
    flush()
    empty = np.zeros((0, cfg.n_mels, cfg.n_frames), np.float16)
    return (np.concatenate(mels) if mels else empty), np.asarray(keep, np.int64), rejects


def _write_rejects(path: pathlib.Path, rejects: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows(rejects)


def _read_rejects(path: pathlib.Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return [(r["path"], r["reason"]) for r in csv.DictReader(f)]
