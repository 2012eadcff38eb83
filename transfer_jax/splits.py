"""Held-out train / valid / test splits from split files (GTZAN's fault-filtered split).

The usual GTZAN split without its faults (Kereliuk, Sturm & Larsen 2015; Sturm 2013:
repetitions, mislabellings and distortions removed): 443 train, 197 valid and 290 test
clips, 930 of the 1,000, distributed as three plain-text lists

    train_filtered.txt  valid_filtered.txt  test_filtered.txt

with one clip per line, `genre/file` (e.g. `blues/blues.00029.wav`; `.au` or no
extension work too; a tab and anything after it on a line is ignored). A split folder
may also name them `train.txt`, `valid.txt`, `test.txt`.

Clips are matched by name, not by path: the key of a clip is its file name without the
audio extension, lower-cased (`blues.00029`); when these stems are not unique in the
dataset (e.g. `0.wav` in every class folder), the parent folder is added
(`blues/blues.00029`). Clips of the dataset that no split lists are left out of the
held-out protocol (70 of GTZAN's 1,000).

Errors name the file: a missing or empty split file, an entry that is not in the
dataset, an entry listed twice, and splits that overlap.
"""
from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "valid", "test")
_AUDIO_EXTENSIONS = frozenset({".wav", ".au", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".npy", ".m4a"})


@dataclasses.dataclass(frozen=True)
class HeldOutSplit:
    """Row indices (into the task's rows) of the train, valid and test parts."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    source: str = ""

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.valid), len(self.test)

    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(train, valid), (train + valid, test)]: selection, then the single test."""
        return [(self.train, self.valid), (np.sort(np.concatenate([self.train, self.valid])), self.test)]

    def subset(self, keep: np.ndarray) -> tuple["HeldOutSplit", int]:
        """The split over the rows where `keep` (bool, per row) is True, renumbered; and how
        many listed rows were dropped (e.g. files that failed to load)."""
        keep = np.asarray(keep, dtype=bool)
        new_index = np.cumsum(keep) - 1
        parts = [getattr(self, s) for s in SPLITS]
        dropped = sum(int((~keep[p]).sum()) for p in parts)
        return HeldOutSplit(*(new_index[p[keep[p]]] for p in parts), source=self.source), dropped


def clip_key(name: str, depth: int = 1) -> str:
    """`blues/blues.00029.wav` -> `blues.00029` (depth 1) or `blues/blues.00029` (depth 2):
    the last `depth` path components, audio extension dropped, lower case."""
    parts = pathlib.PurePosixPath(str(name).strip().replace("\\", "/")).parts
    last = parts[-1] if parts else ""
    suffix = pathlib.PurePosixPath(last).suffix
    if suffix.lower() in _AUDIO_EXTENSIONS:
        last = last[: -len(suffix)]
    return "/".join([*parts[-depth:-1], last]).lower() if depth > 1 else last.lower()


def split_paths(split_dir: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """{split: file} in split_dir: `<split>_filtered.txt`, else `<split>.txt`."""
    split_dir = pathlib.Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder {split_dir} does not exist or is not a folder")
    out = {}
    for split in SPLITS:
        candidates = [split_dir / f"{split}_filtered.txt", split_dir / f"{split}.txt"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise FileNotFoundError(f"split file {candidates[0]} is missing (nor is there {candidates[1].name}); "
                                    f"a split folder needs {', '.join(f'{s}_filtered.txt' for s in SPLITS)}")
        out[split] = found[0]
    return out


def read_split_file(path: str | pathlib.Path) -> list[str]:
    """The clip entries of one split file (blank lines and `#` comments skipped; a tab and
    what follows it ignored). Empty is an error."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} is missing")
    entries = []
    for line in path.read_text().splitlines():
        entry = line.split("\t")[0].strip()
        if entry and not entry.startswith("#"):
            entries.append(entry)
    if not entries:
        raise ValueError(f"split file {path} is empty (expected one clip per line, e.g. blues/blues.00029.wav)")
    return entries


def _key_depth(clips: Sequence[str]) -> int:
    """1 when file stems identify the clips, else 2 (folder/stem); an error if neither does."""
    for depth in (1, 2):
        keys = [clip_key(c, depth) for c in clips]
        if len(set(keys)) == len(keys):
            return depth
    seen, dups = set(), []
    for k in keys:
        if k in seen:
            dups.append(k)
        seen.add(k)
    raise ValueError(f"the dataset's clip names are not unique even with their folder ({', '.join(dups[:5])}); "
                     "cannot match split files to rows")


def heldout_split(clips: Sequence[str], split_files: dict[str, str | pathlib.Path]) -> HeldOutSplit:
    """Rows of `clips` (the task's clip names or paths, one per row) in each split file."""
    clips = [str(c) for c in clips]
    depth = _key_depth(clips)
    row_of = {clip_key(c, depth): i for i, c in enumerate(clips)}
    owner: dict[int, tuple[str, pathlib.Path]] = {}
    parts = {}
    for split in SPLITS:
        path = pathlib.Path(split_files[split])
        rows = []
        missing = []
        for entry in read_split_file(path):
            key = clip_key(entry, depth)
            if key not in row_of:
                missing.append(entry)
                continue
            row = row_of[key]
            if row in owner:
                other_split, other_path = owner[row]
                if other_path == path:
                    raise ValueError(f"clip {entry!r} is listed twice in split file {path}")
                raise ValueError(f"clip {entry!r} is in both {other_path} and {path}: the {other_split} and "
                                 f"{split} splits overlap")
            owner[row] = (split, path)
            rows.append(row)
        if missing:
            raise ValueError(f"split file {path} lists {len(missing)} clip(s) not in the dataset "
                             f"({len(clips)} clips), e.g. {', '.join(repr(m) for m in missing[:5])}; "
                             f"clips are matched by {'file name' if depth == 1 else 'folder/file name'} "
                             "without extension")
        parts[split] = np.array(sorted(rows), dtype=np.int64)
    return HeldOutSplit(parts["train"], parts["valid"], parts["test"],
                        source=str(pathlib.Path(split_files["train"]).parent))


def load_split_dir(split_dir: str | pathlib.Path, clips: Sequence[str]) -> HeldOutSplit:
    """`heldout_split` over the split files found in split_dir (`split_paths`)."""
    return heldout_split(clips, split_paths(split_dir))


def check_split_labels(split: HeldOutSplit, y: np.ndarray, task_type: str) -> None:
    """Classification: every class of valid and test must occur in train (and >= 2 classes)."""
    if task_type != "classification":
        return
    y = np.asarray(y)
    train_classes = set(np.unique(y[split.train]).tolist())
    if len(train_classes) < 2:
        raise ValueError(f"held-out split {split.source}: the train split has {len(train_classes)} class(es)")
    for name in ("valid", "test"):
        extra = set(np.unique(y[getattr(split, name)]).tolist()) - train_classes
        if extra:
            raise ValueError(f"held-out split {split.source}: the {name} split has classes absent from train: "
                             f"{sorted(extra)}")
