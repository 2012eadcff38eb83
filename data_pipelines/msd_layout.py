"""Read and write the MSD tagging split layout (keunwoochoi/MSD_split_for_tagging).

A split directory holds, per split s in SPLITS, three aligned text files (one entry a
line) and optional labels:

    s_x_msd_id.txt     MSD track ids        e.g. TRAAAAK128F9318786
    s_x_7d_id.txt      7digital ids         e.g. 36122424
    s_x_filename.txt   relative .npy paths  e.g. 3/6/36122424.npy
    s_y.npy            (n, n_tags) 0/1 labels (absent for the real train split)
    tags.txt           optional, one tag name a line (else config.MSD_TAGS)

The audio for `3/6/36122424.npy` is the 7digital preview `<audio_root>/3/6/36122424.clip.mp3`.
The synthetic corpus (data_pipelines.synthetic) writes this same layout, so one reader
serves both.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile

import numpy as np

from transfer_jax.config import MSD_TAGS

SPLITS: tuple[str, ...] = ("train", "valid", "test")
_TEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("msd_ids", "x_msd_id"), ("ids_7d", "x_7d_id"), ("filenames", "x_filename"))
AUDIO_EXTS: tuple[str, ...] = ("mp3", "wav", "flac", "ogg", "au")

PathLike = str | os.PathLike


@dataclasses.dataclass
class SplitIndex:
    """One split: aligned ids and filenames, labels (n, n_tags) uint8 or None."""

    msd_ids: list[str]
    ids_7d: list[str]
    filenames: list[str]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.msd_ids)

    def validate(self, where: str = "SplitIndex") -> None:
        """Raise ValueError when the fields disagree in length or labels are malformed."""
        n = len(self.msd_ids)
        for name, _ in _TEXT_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{where}: {name} has {len(getattr(self, name))} entries, "
                                 f"msd_ids has {n}")
        if self.labels is not None:
            _check_labels(self.labels, n, where)


def _check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Return y as uint8 (n, n_tags); ValueError naming `where` if it is not 2-D 0/1 with n rows."""
    if y.ndim != 2:
        raise ValueError(f"{where}: labels must be 2-D (n, n_tags), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{where}: {y.shape[0]} label rows but {n} tracks in the id files")
    if y.dtype != np.bool_:
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            vals = np.unique(np.asarray(y)[bad])[:5]
            raise ValueError(f"{where}: labels must be 0/1, found values {vals.tolist()}")
    return np.asarray(y).astype(np.uint8)


def split_file(split_dir: PathLike, split: str, suffix: str) -> pathlib.Path:
    """Path of `<split>_<suffix>` in split_dir, e.g. ('valid', 'x_7d_id.txt')."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return pathlib.Path(split_dir) / f"{split}_{suffix}"


def _read_lines(path: pathlib.Path) -> list[str]:
    """Non-empty stripped lines of a text file; FileNotFoundError naming it when absent."""
    if not path.is_file():
        raise FileNotFoundError(f"MSD split file missing: {path}")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def read_split(split_dir: PathLike, split: str) -> SplitIndex:
    """Read one split's id/filename files and optional `<split>_y.npy` into a SplitIndex."""
    fields: dict[str, list[str]] = {}
    for name, suffix in _TEXT_FIELDS:
        fields[name] = _read_lines(split_file(split_dir, split, suffix + ".txt"))
    ref_path = split_file(split_dir, split, "x_msd_id.txt")
    n = len(fields["msd_ids"])
    for name, suffix in _TEXT_FIELDS[1:]:
        if len(fields[name]) != n:
            raise ValueError(
                f"{split_file(split_dir, split, suffix + '.txt')}: {len(fields[name])} lines, "
                f"but {ref_path} has {n}")
    y_path = split_file(split_dir, split, "y.npy")
    labels = None
    if y_path.is_file():
        labels = _check_labels(np.load(y_path, allow_pickle=False), n, str(y_path))
    return SplitIndex(labels=labels, **fields)


def _atomic_write_bytes(path: pathlib.Path, write) -> None:
    """Call write(fileobj) on a temp file beside `path`, then os.replace it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_lines(path: PathLike, lines: list[str]) -> None:
    """Atomically write one entry a line (trailing newline)."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    _atomic_write_bytes(pathlib.Path(path), lambda f: f.write(data))


def write_split(split_dir: PathLike, split: str, index: SplitIndex) -> None:
    """Inverse of read_split: atomic writes of the three text files and `<split>_y.npy`.

    With index.labels None an existing `<split>_y.npy` is removed so the directory
    round-trips to the same SplitIndex.
    """
    index.validate(f"write_split({split!r})")
    for name, suffix in _TEXT_FIELDS:
        write_lines(split_file(split_dir, split, suffix + ".txt"), list(getattr(index, name)))
    y_path = split_file(split_dir, split, "y.npy")
    if index.labels is None:
        y_path.unlink(missing_ok=True)
    else:
        y = np.asarray(index.labels).astype(np.uint8)
        _atomic_write_bytes(y_path, lambda f: np.save(f, y, allow_pickle=False))


def read_tag_names(split_dir: PathLike) -> tuple[str, ...]:
    """Tag names in label order: `tags.txt` when present, else the 50 MSD tags."""
    path = pathlib.Path(split_dir) / "tags.txt"
    if path.is_file():
        return tuple(_read_lines(path))
    return MSD_TAGS


def audio_path(audio_root: PathLike, filename: str) -> pathlib.Path:
    """Audio file for a split filename: `3/6/36122424.npy` -> `root/3/6/36122424.clip.mp3`.

    Falls back to an existing `<stem>.clip.{wav,flac,ogg,au}`; when none exists returns
    the .clip.mp3 path and leaves reporting the missing file to the caller.
    """
    rel = pathlib.PurePosixPath(filename)
    stem = rel.name[: -len(".npy")] if rel.name.endswith(".npy") else rel.stem
    base = pathlib.Path(audio_root).joinpath(*rel.parent.parts)
    candidates = [base / f"{stem}.clip.{ext}" for ext in AUDIO_EXTS]
    for cand in candidates:
        if cand.is_file():
            return cand
    return candidates[0]
