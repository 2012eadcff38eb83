"""UrbanSound8K (Salamon et al. 2014): 8,732 clips (<= 4 s) of 10 classes in the official
10 folds; the paper reports 10-fold CV accuracy over those folds.

Layout (manual_dir or manual_dir/UrbanSound8K):

    metadata/UrbanSound8K.csv    slice_file_name, fsID, start, end, salience, fold, classID, class
    audio/fold1/100032-3-0-0.wav ... audio/fold10/...

Labels: classID (0 air_conditioner ... 9 street_music); `fold` 1-10 from the metadata.
Order: slice_file_name sorted - the order of the authors' example list `urbansound.csv`.
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.datasets.common import (AudioTaskBuilder, Example, LayoutError, check_counts, find_root,
                                            read_csv_rows)

CLASSES: tuple[str, ...] = ("air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
                            "engine_idling", "gun_shot", "jackhammer", "siren", "street_music")
_EXPECTED = "ROOT/metadata/UrbanSound8K.csv and ROOT/audio/fold<k>/<slice_file_name>"


def list_examples(manual_dir: pathlib.Path) -> list[Example]:
    root = find_root(manual_dir, ["", "UrbanSound8K"], "metadata/UrbanSound8K.csv", "UrbanSound8K tree", _EXPECTED)
    meta = root / "metadata" / "UrbanSound8K.csv"
    rows = read_csv_rows(meta, ["slice_file_name", "fold", "classid"])
    examples = []
    for i, r in enumerate(rows):
        try:
            fold, label = int(r["fold"]), int(r["classid"])
        except ValueError:
            raise LayoutError(f"{meta}: row {i + 2}: fold/classID not integers: {r}") from None
        if not (1 <= fold <= 10 and 0 <= label < len(CLASSES)):
            raise LayoutError(f"{meta}: row {i + 2}: fold {fold} or classID {label} out of range")
        if r.get("class") and r["class"] != CLASSES[label]:
            raise LayoutError(f"{meta}: row {i + 2}: class {r['class']!r} but classID {label} is {CLASSES[label]!r}")
        path = root / "audio" / f"fold{fold}" / r["slice_file_name"]
        if not path.is_file():
            raise LayoutError(f"{path}: clip listed in {meta.name} (row {i + 2}) missing")
        examples.append(Example(pathlib.Path(r["slice_file_name"]).stem, path, "train",
                                {"label": label, "fold": np.int32(fold)}))
    examples.sort(key=lambda e: e.path.name)
    return check_counts(examples, meta, "clips")


class Urbansound8k(AudioTaskBuilder):
    """UrbanSound8K: 8,732 urban sound clips, 10 classes, the official 10 folds (`fold`)."""

    name = "urbansound8k"
    ORDER_CSV = "urbansound.csv"
    HOMEPAGE = "https://urbansounddataset.weebly.com/urbansound8k.html"
    CITATION = ("@inproceedings{salamon2014dataset, author={Salamon, Justin and Jacoby, Christopher and "
                "Bello, Juan Pablo}, title={A Dataset and Taxonomy for Urban Sound Research}, "
                "booktitle={ACM Multimedia}, year={2014}}")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download UrbanSound8K.tar.gz ({HOMEPAGE}) and extract it into manual_dir: {_EXPECTED}.
    """
    list_examples = staticmethod(list_examples)

    def label_features(self):
        return {"label": tfds.features.ClassLabel(names=list(CLASSES)), "fold": tfds.features.Scalar(np.int32)}
