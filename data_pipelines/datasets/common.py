"""What the six target-dataset builders share: examples, layout checks, the example-list
order, and a TFDS `GeneratorBasedBuilder` base that decodes audio to 12 kHz mono float32.

Each dataset module supplies a pure `list_examples(root) -> list[Example]` that reads the
dataset's real on-disk layout (no audio decoding), so listing, labels, folds and order are
testable on trees of empty files; the builder then decodes the listed audio.

Order: every builder yields examples in a documented, deterministic order. When the
authors' example list for the task (`<task>.csv` from the paper's release, columns
`,id,filepath,label[,fold|,category]` or `label_arousal,label_valence`) is placed at the
top of `manual_dir`, the builder follows that list instead, row for row, after checking
that it names exactly the examples found on disk with the same labels, folds and splits.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from data_pipelines import prepare_msd

prepare_msd.tf_cpu()  # TensorFlow (imported by tfds) stays off the GPUs

import tensorflow_datasets as tfds  # noqa: E402
from tensorflow_datasets.core.utils import gcs_utils  # noqa: E402

gcs_utils._is_gcs_disabled = True  # never look datasets up on gs://tfds-data (offline builds)

SR = 12_000  # the model's sample rate: audio is stored resampled to it
FIRST_SECONDS = 29.0  # the model's input length; what the paper's protocol uses of each clip
_FLOAT_TOL = 1e-4  # emoMusic targets in the example lists are printed to 12 digits


class LayoutError(ValueError):
    """The manual_dir tree is missing or malformed; the message names the path and the problem."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One example before decoding.

    key: unique id, the file stem used in the authors' example list (e.g. `blues.00000`).
    path: audio file; start/end (seconds) cut a segment from it (Jamendo), end None = to the end.
    split: TFDS split name. labels: feature name -> value (class index, float target, fold).
    """

    key: str
    path: pathlib.Path
    split: str
    labels: dict[str, Any]
    start: float = 0.0
    end: float | None = None


# ----------------------------------------------------------------------------- layout helpers

def find_root(manual_dir: str | os.PathLike, candidates: Sequence[str], marker: str, what: str,
              expected: str) -> pathlib.Path:
    """The first manual_dir/<candidate> that contains `marker`; LayoutError describing the tree if none."""
    manual_dir = pathlib.Path(manual_dir)
    if not manual_dir.is_dir():
        raise LayoutError(f"{manual_dir}: manual_dir does not exist or is not a folder")
    for cand in candidates:
        root = manual_dir / cand if cand else manual_dir
        if (root / marker).exists():
            return root
    tried = ", ".join(str(manual_dir / c) if c else str(manual_dir) for c in candidates)
    raise LayoutError(f"no {what} found under {manual_dir}: looked for {marker!r} in {tried}; "
                      f"expected layout: {expected}")


def audio_files(folder: pathlib.Path, exts: Sequence[str]) -> list[pathlib.Path]:
    """Visible files in `folder` with one of `exts` (lower-case, with dot), sorted by name."""
    if not folder.is_dir():
        raise LayoutError(f"{folder}: folder missing")
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts),
                  key=lambda p: p.name)


def class_folder_examples(folders: Sequence[pathlib.Path], exts: Sequence[str]) -> list[Example]:
    """One example per audio file of each class folder; label = the folder's position."""
    examples = []
    for label, folder in enumerate(folders):
        files = audio_files(folder, exts)
        if not files:
            raise LayoutError(f"{folder}: no {'/'.join(exts)} clips for class {label} ({folder.name})")
        examples += [Example(p.stem, p, "train", {"label": label}) for p in files]
    return examples


def require_file(path: pathlib.Path, what: str) -> pathlib.Path:
    if not path.is_file():
        raise LayoutError(f"{path}: {what} missing")
    return path


def read_csv_rows(path: pathlib.Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV with stripped, lower-cased header names; LayoutError if a column is missing."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            rows = [dict(zip(header, (v.strip() for v in r))) for r in reader if any(v.strip() for v in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LayoutError(f"{path}: cannot read as CSV ({e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise LayoutError(f"{path}: column(s) {missing} missing; header is {header}")
    return rows


def check_counts(examples: Sequence[Example], where: pathlib.Path, what: str) -> list[Example]:
    if not examples:
        raise LayoutError(f"{where}: no {what} found")
    keys = [e.key for e in examples]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise LayoutError(f"{where}: duplicate example ids {dup}")
    return list(examples)


# ----------------------------------------------------------------------------- example-list order

_CSV_COLUMNS = {"label": "label", "fold": "fold", "label_arousal": "arousal", "label_valence": "valence"}


def apply_order_csv(examples: Sequence[Example], csv_path: pathlib.Path) -> list[Example]:
    """Examples in the row order of the authors' example list at csv_path (if it exists).

    The list must name exactly the examples found (by file stem); its label, fold,
    category (= split) and emotion columns must agree with the dataset's own. LayoutError
    otherwise, naming the list and a few offending rows.
    """
    if not csv_path.is_file():
        return list(examples)
    rows = read_csv_rows(csv_path, ["filepath"])
    by_key = {e.key: e for e in examples}
    keys = [pathlib.PurePosixPath(r["filepath"].replace("\\", "/")).stem for r in rows]
    unknown = [k for k in keys if k not in by_key]
    absent = sorted(set(by_key) - set(keys))
    if unknown or absent or len(set(keys)) != len(keys):
        raise LayoutError(
            f"{csv_path}: the example list does not match the data on disk: {len(rows)} rows, "
            f"{len(by_key)} examples found; listed but not found: {unknown[:5]} ({len(unknown)}), "
            f"found but not listed: {absent[:5]} ({len(absent)})")
    bad = []
    for i, (key, row) in enumerate(zip(keys, rows)):
        ex = by_key[key]
        for col, feat in _CSV_COLUMNS.items():
            if row.get(col, "") == "" or feat not in ex.labels:
                continue
            want, have = float(row[col]), float(ex.labels[feat])
            if abs(want - have) > (_FLOAT_TOL if feat in ("arousal", "valence") else 0):
                bad.append(f"row {i} {key}: {col}={row[col]} but the data says {ex.labels[feat]}")
        if row.get("category") and row["category"] != ex.split:
            bad.append(f"row {i} {key}: category={row['category']} but the data says {ex.split}")
    if bad:
        raise LayoutError(f"{csv_path}: {len(bad)} disagreement(s) with the data, e.g. {bad[:3]}")
    return [by_key[k] for k in keys]


# ----------------------------------------------------------------------------- builder base

@dataclasses.dataclass(eq=False)
class AudioConfig(tfds.core.BuilderConfig):
    """max_seconds: keep the first max_seconds of each example (None: all of it)."""

    max_seconds: float | None = FIRST_SECONDS


CONFIGS = [
    AudioConfig(name="first29s", description="12 kHz mono float32, the first 29 s of each example "
                "(what the paper's protocol uses).", max_seconds=FIRST_SECONDS),
    AudioConfig(name="full", description="12 kHz mono float32, whole examples.", max_seconds=None),
]


class AudioTaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base: examples from `list_examples(manual_dir)`, audio decoded to 12 kHz mono float32.

    Features: audio (n,) float32 at 12 kHz, id (the example-list stem), duration (seconds
    before truncation) and the dataset's label features. Order is kept (no shuffling).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: offline build from manual_dir."}
    BUILDER_CONFIGS = CONFIGS
    ORDER_CSV: ClassVar[str] = ""  # the authors' example-list file name for this task
    HOMEPAGE: ClassVar[str] = ""
    CITATION: ClassVar[str] = ""
    SUPERVISED_KEY: ClassVar[str | None] = "label"
    list_examples: ClassVar[Callable[[pathlib.Path], list[Example]]]

    def label_features(self) -> dict[str, tfds.features.FeatureConnector]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        feats = {"audio": tfds.features.Audio(shape=(None,), dtype=np.float32, sample_rate=SR),
                 "id": tfds.features.Text(), "duration": tfds.features.Scalar(np.float32),
                 **self.label_features()}
        return tfds.core.DatasetInfo(
            builder=self, description=(type(self).__doc__ or "").strip(),
            features=tfds.features.FeaturesDict(feats),
            supervised_keys=("audio", self.SUPERVISED_KEY) if self.SUPERVISED_KEY else None,
            homepage=self.HOMEPAGE, citation=self.CITATION, disable_shuffling=True)

    def ordered_examples(self, manual_dir: pathlib.Path) -> list[Example]:
        """The examples of manual_dir, in the example list's order when it is present."""
        examples = type(self).list_examples(pathlib.Path(manual_dir))
        return apply_order_csv(examples, pathlib.Path(manual_dir) / self.ORDER_CSV)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        examples = self.ordered_examples(pathlib.Path(dl_manager.manual_dir))
        splits = list(dict.fromkeys(e.split for e in examples))
        return {s: self._generate_examples([e for e in examples if e.split == s]) for s in splits}

    def _generate_examples(self, examples: Sequence[Example]) -> Iterator[tuple[str, dict]]:
        from transfer_jax import audio as audio_lib

        max_n = None if self.builder_config.max_seconds is None else int(round(self.builder_config.max_seconds * SR))
        cached: tuple[pathlib.Path | None, np.ndarray | None] = (None, None)
        for ex in examples:
            if cached[0] != ex.path:  # Jamendo cuts many segments from one song: decode once
                try:
                    cached = (ex.path, audio_lib.load_audio(ex.path, SR))
                except audio_lib.AudioError as e:
                    raise LayoutError(f"{e.path}: {e.problem} (example {ex.key})") from None
            y = cached[1]
            a = int(round(ex.start * SR))
            b = len(y) if ex.end is None else min(int(round(ex.end * SR)), len(y))
            if b <= a:
                raise LayoutError(f"{ex.path}: segment {ex.key} [{ex.start}, {ex.end}] s is empty "
                                  f"(audio is {len(y) / SR:.2f} s)")
            seg = y[a:b]
            yield ex.key, {"audio": seg[:max_n] if max_n else seg, "id": ex.key,
                           "duration": np.float32((b - a) / SR), **ex.labels}
