"""Jamendo vocal detection (Ramona et al. 2008): 93 songs with sing/nosing annotations,
cut into one example per annotated segment (the paper's 4,086 segments: 2,592 train /
821 valid / 673 test); the paper trains on train+valid and reports test accuracy.

Two on-disk layouts are read (manual_dir or manual_dir/jamendo):

    Ramona's tarballs (jam_{train,valid,test}_audio.tar.gz, jam_annote.tar.gz):
        train/<song>.ogg  valid/<song>.ogg  test/<song>.ogg  (or .mp3)
        jamendo_lab/<song>.lab
    the Zenodo release:
        audio/<song>.ogg|.mp3   labels/<song>.lab   filelists/{train,valid,test} (one file name a line)

A .lab file has one segment a line: `<start s> <end s> sing|nosing`. Segment i of song S
is example `S_i` (label nosing 0, sing 1) in the split of its song; the audio is the
song's [start, end) at 12 kHz. Order: splits train, test, valid (as in the authors'
example list); songs in filelist order (Zenodo) or by name (tarballs); segments in .lab
order. The authors' list `jamendo_vd.csv` in manual_dir fixes the exact order (their song
order was their folder-listing order). Read `split="train+test+valid"` for the list's order.
"""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from data_pipelines.datasets.common import (AudioTaskBuilder, Example, LayoutError, audio_files,
                                            check_counts, find_root, require_file)

CLASSES: tuple[str, ...] = ("nosing", "sing")
SPLITS: tuple[str, ...] = ("train", "test", "valid")  # the example list's order
_AUDIO = (".ogg", ".mp3", ".wav", ".flac")
_EXPECTED = ("ROOT/{train,valid,test}/<song>.ogg + ROOT/jamendo_lab/<song>.lab, or "
             "ROOT/audio/<song>.ogg + ROOT/labels/<song>.lab + ROOT/filelists/{train,valid,test}")


def read_lab(path: pathlib.Path) -> list[tuple[float, float, int]]:
    """Segments (start s, end s, label 0 nosing / 1 sing) of a .lab file, in file order."""
    segs = []
    text = require_file(path, "annotation").read_text(encoding="utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[2] not in CLASSES:
            raise LayoutError(f"{path}: line {n} is not '<start> <end> sing|nosing': {line!r}")
        try:
            start, end = float(parts[0]), float(parts[1])
        except ValueError:
            raise LayoutError(f"{path}: line {n} has non-numeric times: {line!r}") from None
        if end <= start:
            raise LayoutError(f"{path}: line {n} has end <= start: {line!r}")
        segs.append((start, end, CLASSES.index(parts[2])))
    if not segs:
        raise LayoutError(f"{path}: no segments")
    return segs


def _songs(root: pathlib.Path) -> tuple[dict[str, list[pathlib.Path]], pathlib.Path]:
    """Split -> song audio files in order, and the folder of .lab files."""
    if (root / "filelists").is_dir():
        songs = {}
        for split in SPLITS:
            lst = require_file(root / "filelists" / split, "file list")
            names = [ln.strip() for ln in lst.read_text(encoding="utf-8").splitlines() if ln.strip()]
            paths = [root / "audio" / n for n in names]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise LayoutError(f"{lst}: {len(missing)} listed song(s) missing, e.g. {missing[:2]}")
            songs[split] = paths
        return songs, root / "labels"
    songs = {split: audio_files(root / split, _AUDIO) for split in SPLITS}
    return songs, root / "jamendo_lab"


def list_examples(manual_dir: pathlib.Path) -> list[Example]:
    root = pathlib.Path(manual_dir)
    for cand in ("", "jamendo"):
        r = root / cand if cand else root
        if (r / "filelists").is_dir() or (r / "jamendo_lab").is_dir():
            root = r
            break
    else:
        find_root(manual_dir, ["", "jamendo"], "jamendo_lab", "Jamendo tree", _EXPECTED)  # raises
    songs, lab_dir = _songs(root)
    examples = []
    for split in SPLITS:
        if not songs[split]:
            raise LayoutError(f"{root}: no songs in the {split!r} split (expected {_EXPECTED})")
        for audio in songs[split]:
            for i, (start, end, label) in enumerate(read_lab(lab_dir / f"{audio.stem}.lab")):
                examples.append(Example(f"{audio.stem}_{i}", audio, split, {"label": label}, start, end))
    return check_counts(examples, root, "Jamendo segments")


class JamendoVd(AudioTaskBuilder):
    """Jamendo vocal detection: 4,086 sing/nosing segments of 93 songs; splits train/valid/test."""

    ORDER_CSV = "jamendo_vd.csv"
    HOMEPAGE = "http://www.mathieuramona.com/wp/data/jamendo/"
    CITATION = ("@inproceedings{ramona2008vocal, author={Ramona, Mathieu and Richard, Gael and David, Bertrand}, "
                "title={Vocal detection in music with support vector machines}, booktitle={ICASSP}, year={2008}}")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Get the Jamendo corpus for vocal detection ({HOMEPAGE}: jam_{{train,valid,test}}_audio.tar.gz
    and jam_annote.tar.gz) and extract it into manual_dir: {_EXPECTED}.
    Optional: the authors' example list `jamendo_vd.csv` in manual_dir fixes the row order.
    """
    list_examples = staticmethod(list_examples)

    def label_features(self):
        return {"label": tfds.features.ClassLabel(names=list(CLASSES))}
