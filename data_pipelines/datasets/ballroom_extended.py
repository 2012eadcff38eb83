"""Extended Ballroom (Marchand & Peeters 2016): 13 dance genres, 4,180 clips, 10-fold CV.

Layout (manual_dir, or manual_dir/extendedballroom_v1.1 or .../ballroom_extended_2016):

    Chacha/100701.mp3 ...            one folder per genre, clips named by id; the
    Chacha/Chacha.100701.mp3 ...     official download script's `<Genre>.<id>.mp3` also works
    extendedballroom_v1.1.xml        optional metadata: <root><Chacha><song id=.../>...

Labels follow the authors' example list: Chacha 0, Foxtrot 1, Jive 2, Pasodoble 3,
Rumba 4, Salsa 5, Samba 6, Slowwaltz 7, Tango 8, Viennesewaltz 9, Waltz 10, Wcswing 11,
Quickstep 12. Order: by label, then the XML's song order when the XML is present
(otherwise ids ascending); `ballroom_extended.csv` in manual_dir fixes the exact order.
"""
from __future__ import annotations

import pathlib
import xml.etree.ElementTree as ET

import tensorflow_datasets as tfds

from data_pipelines.datasets.common import (AudioTaskBuilder, Example, LayoutError, audio_files,
                                            check_counts, find_root)

CLASSES: tuple[str, ...] = ("Chacha", "Foxtrot", "Jive", "Pasodoble", "Rumba", "Salsa", "Samba",
                            "Slowwaltz", "Tango", "Viennesewaltz", "Waltz", "Wcswing", "Quickstep")
_EXPECTED = "ROOT/<Genre>/<id>.mp3 for the 13 genres (Chacha ... Quickstep), optional ROOT/extendedballroom_v1.1.xml"


def _clip_id(path: pathlib.Path, genre: str) -> str:
    stem = path.stem
    return stem[len(genre) + 1:] if stem.startswith(genre + ".") else stem


def _xml_order(xml_path: pathlib.Path) -> dict[str, list[str]]:
    """Genre -> song ids in document order."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise LayoutError(f"{xml_path}: cannot parse the metadata XML ({e})") from None
    order: dict[str, list[str]] = {}
    for genre in root:
        if genre.tag not in CLASSES:
            raise LayoutError(f"{xml_path}: unknown genre node <{genre.tag}>; expected one of {CLASSES}")
        ids = [song.get("id") for song in genre]
        if any(not i for i in ids):
            raise LayoutError(f"{xml_path}: a song node of <{genre.tag}> has no id attribute")
        order[genre.tag] = ids
    return order


def list_examples(manual_dir: pathlib.Path) -> list[Example]:
    """All clips, label = index in CLASSES; see the module docstring for the order."""
    root = find_root(manual_dir, ["", "extendedballroom_v1.1", "ballroom_extended_2016"],
                     CLASSES[0], "Extended Ballroom tree", _EXPECTED)
    pattern = "extendedballroom_v*.xml"
    xmls = sorted(root.glob(pattern)) or sorted(pathlib.Path(manual_dir).glob(pattern))
    xml_order = _xml_order(xmls[-1]) if xmls else None  # the highest version present
    examples = []
    for label, genre in enumerate(CLASSES):
        files = {_clip_id(p, genre): p for p in audio_files(root / genre, (".mp3", ".wav"))}
        if xml_order is None:
            ids = sorted(files, key=lambda i: (len(i), i))  # numeric ids ascending
        else:
            ids = xml_order.get(genre, [])
            missing = [i for i in ids if i not in files]
            if missing:
                raise LayoutError(f"{root / genre}: {len(missing)} clip(s) listed in {xmls[-1].name} are "
                                  f"missing, e.g. {missing[:3]} (expected {root / genre}/<id>.mp3)")
        if not ids:
            raise LayoutError(f"{root / genre}: no clips for genre {genre}")
        examples += [Example(i, files[i], "train", {"label": label}) for i in ids]
    return check_counts(examples, root, "Extended Ballroom clips")


class BallroomExtended(AudioTaskBuilder):
    """Extended Ballroom: 13 dance genres, 4,180 clips; the paper uses 10-fold CV (accuracy)."""

    ORDER_CSV = "ballroom_extended.csv"
    HOMEPAGE = "http://anasynth.ircam.fr/home/media/ExtendedBallroom"
    CITATION = ("@inproceedings{marchand2016extended, author={Marchand, Ugo and Peeters, Geoffroy}, "
                "title={The Extended Ballroom Dataset}, booktitle={ISMIR Late-Breaking Session}, year={2016}}")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Get extendedballroom_v1.1.zip from {HOMEPAGE}, run its getExtendedBallroomDataset.py
    to fetch the audio, and place the result in manual_dir: {_EXPECTED}.
    Optional: the authors' example list `ballroom_extended.csv` in manual_dir fixes the row order.
    """
    list_examples = staticmethod(list_examples)

    def label_features(self):
        return {"label": tfds.features.ClassLabel(names=list(CLASSES))}
