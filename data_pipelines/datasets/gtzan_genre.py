"""GTZAN genre (Tzanetakis & Cook 2002): 10 genres x 100 clips of 30 s (.au), 10-fold CV.

Layout (manual_dir, manual_dir/genres or manual_dir/gtzan_genre/genres):

    blues/blues.00000.au ... rock/rock.00099.au   (.wav copies are accepted too)

Labels: the genres in alphabetical order (blues 0 ... rock 9). Order: by label, then
file name - the order of the authors' example list `gtzan_genre.csv`.
"""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from data_pipelines.datasets.common import (AudioTaskBuilder, Example, check_counts,
                                            class_folder_examples, find_root)

CLASSES: tuple[str, ...] = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal",
                            "pop", "reggae", "rock")
_EXPECTED = "ROOT/<genre>/<genre>.000NN.au for the 10 genres (blues ... rock)"


def list_examples(manual_dir: pathlib.Path) -> list[Example]:
    """All clips, label = index in CLASSES, sorted by genre then file name."""
    root = find_root(manual_dir, ["", "genres", "gtzan_genre/genres"], CLASSES[0], "GTZAN genre tree", _EXPECTED)
    examples = class_folder_examples([root / genre for genre in CLASSES], (".au", ".wav"))
    return check_counts(examples, root, "GTZAN clips")


class GtzanGenre(AudioTaskBuilder):
    """GTZAN genre: 10 genres, 1,000 clips of 30 s; the paper uses 10-fold CV (accuracy)."""

    ORDER_CSV = "gtzan_genre.csv"
    HOMEPAGE = "http://marsyas.info/downloads/datasets.html"
    CITATION = ("@article{tzanetakis2002musical, author={Tzanetakis, George and Cook, Perry}, "
                "title={Musical genre classification of audio signals}, journal={IEEE TSAP}, year={2002}}")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download genres.tar.gz (GTZAN, {HOMEPAGE}) and extract it into manual_dir, giving
    manual_dir/genres/blues/blues.00000.au ... ({_EXPECTED}).
    """
    list_examples = staticmethod(list_examples)

    def label_features(self):
        return {"label": tfds.features.ClassLabel(names=list(CLASSES))}
