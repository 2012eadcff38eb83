"""emoMusic (Soleymani et al. 2013, "1000 songs"): 744 clips of 45 s with static
arousal/valence annotations; the paper regresses each with 10-fold CV (R^2), first 29 s.

Layout (manual_dir or manual_dir/emoMusic45s):

    clips_45seconds/2.mp3 ... 1000.mp3
    annotations/static_annotations.csv    song_id, mean_arousal, std_arousal,
                                          mean_valence, std_valence (1-9 scale);
                                          also accepted at ROOT/static_annotations.csv

Targets: arousal = mean_arousal / 9 and valence = mean_valence / 9, as in the authors'
example list. Only annotated songs are examples. Order: song_id ascending - the order of
`emoMusic.csv`. The dataset's own development/evaluation split is not used (the paper's).
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets.common import (AudioTaskBuilder, Example, LayoutError, check_counts, find_root,
                                            read_csv_rows)

SCALE = 9.0
_EXPECTED = "ROOT/clips_45seconds/<song_id>.mp3 and ROOT/annotations/static_annotations.csv"


def list_examples(manual_dir: pathlib.Path) -> list[Example]:
    root = find_root(manual_dir, ["", "emoMusic45s", "emoMusic"], "clips_45seconds", "emoMusic tree", _EXPECTED)
    candidates = [root / "annotations" / "static_annotations.csv", root / "static_annotations.csv",
                  pathlib.Path(manual_dir) / "annotations" / "static_annotations.csv"]
    ann = next((p for p in candidates if p.is_file()), None)
    if ann is None:
        raise LayoutError(f"{candidates[0]}: static annotations missing (expected {_EXPECTED})")
    rows = read_csv_rows(ann, ["song_id", "mean_arousal", "mean_valence"])
    examples = []
    for i, r in enumerate(rows):
        try:
            song, arousal, valence = int(float(r["song_id"])), float(r["mean_arousal"]), float(r["mean_valence"])
        except ValueError:
            raise LayoutError(f"{ann}: row {i + 2} is not numeric: {r}") from None
        if not (np.isfinite(arousal) and np.isfinite(valence)):
            raise LayoutError(f"{ann}: row {i + 2} (song {song}) has a missing arousal/valence value")
        clip = root / "clips_45seconds" / f"{song}.mp3"
        if not clip.is_file():
            raise LayoutError(f"{clip}: clip of annotated song {song} missing")
        examples.append(Example(str(song), clip, "train",
                                {"arousal": np.float32(arousal / SCALE), "valence": np.float32(valence / SCALE)}))
    examples.sort(key=lambda e: int(e.key))
    return check_counts(examples, ann, "annotated songs")


class Emomusic(AudioTaskBuilder):
    """emoMusic: 744 clips of 45 s; arousal and valence (mean / 9); 10-fold CV regression (R^2)."""

    ORDER_CSV = "emoMusic.csv"
    SUPERVISED_KEY = None  # two targets
    HOMEPAGE = "https://cvml.unige.ch/databases/emoMusic/"
    CITATION = ("@inproceedings{soleymani20131000, author={Soleymani, Mohammad and Caro, Micheal N. and "
                "Schmidt, Erik M. and Sha, Cheng-Ya and Yang, Yi-Hsuan}, title={1000 songs for emotional "
                "analysis of music}, booktitle={CrowdMM}, year={2013}}")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Request emoMusic at {HOMEPAGE} (clips_45seconds.tar.gz and annotations.tar.gz) and
    extract both into manual_dir: {_EXPECTED}.
    """
    list_examples = staticmethod(list_examples)

    def label_features(self):
        return {"arousal": tfds.features.Scalar(np.float32), "valence": tfds.features.Scalar(np.float32)}
