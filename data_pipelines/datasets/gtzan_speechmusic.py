"""GTZAN music/speech (Tzanetakis 1999): 64 music + 64 speech clips of 30 s, 10-fold CV.

Layout (manual_dir, manual_dir/music_speech or manual_dir/gtzan_music_speech/music_speech):

    music_wav/bagpipe.wav ...     speech_wav/acomic.wav ...

Labels: music 0, speech 1. Order: music then speech, file names sorted - the order of
the authors' example list `gtzan_speechmusic.csv`.
"""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from data_pipelines.datasets.common import (AudioTaskBuilder, Example, check_counts,
                                            class_folder_examples, find_root)

CLASSES: tuple[str, ...] = ("music", "speech")
_EXPECTED = "ROOT/music_wav/*.wav and ROOT/speech_wav/*.wav"


def list_examples(manual_dir: pathlib.Path) -> list[Example]:
    root = find_root(manual_dir, ["", "music_speech", "gtzan_music_speech/music_speech"], "music_wav",
                     "GTZAN music/speech tree", _EXPECTED)
    examples = class_folder_examples([root / f"{name}_wav" for name in CLASSES], (".wav", ".au"))
    return check_counts(examples, root, "music/speech clips")


class GtzanSpeechmusic(AudioTaskBuilder):
    """GTZAN music/speech: 128 clips of 30 s, 2 classes; the paper uses 10-fold CV (accuracy)."""

    ORDER_CSV = "gtzan_speechmusic.csv"
    HOMEPAGE = "http://marsyas.info/downloads/datasets.html"
    CITATION = ("@misc{tzanetakis1999musicspeech, author={Tzanetakis, George}, "
                "title={GTZAN Music/Speech collection}, year={1999}}")
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download music_speech.tar.gz (GTZAN music/speech, {HOMEPAGE}) and extract it into
    manual_dir, giving manual_dir/music_speech/music_wav/*.wav and .../speech_wav/*.wav.
    """
    list_examples = staticmethod(list_examples)

    def label_features(self):
        return {"label": tfds.features.ClassLabel(names=list(CLASSES))}
