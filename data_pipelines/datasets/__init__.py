"""TFDS builders for the paper's six target datasets, built offline from manual_dir.

    from data_pipelines import datasets
    builder = datasets.build("gtzan_genre", manual_dir="~/data/gtzan", data_dir="~/tfds")
    ds = builder.as_dataset(split="train", shuffle_files=False)   # examples in list order

or `python -m data_pipelines.datasets gtzan_genre --manual_dir ... --data_dir ...`.

No network: GCS look-ups are disabled (`gcs_utils._is_gcs_disabled = True`, set in
`common`) and `build` passes `DownloadConfig(try_download_gcs=False)`; nothing is
downloaded, every byte comes from manual_dir.
"""
from __future__ import annotations

import os
import pathlib

from data_pipelines.datasets.ballroom_extended import BallroomExtended
from data_pipelines.datasets.common import CONFIGS, AudioTaskBuilder, Example, LayoutError
from data_pipelines.datasets.emomusic import Emomusic
from data_pipelines.datasets.gtzan_genre import GtzanGenre
from data_pipelines.datasets.gtzan_speechmusic import GtzanSpeechmusic
from data_pipelines.datasets.jamendo_vd import JamendoVd
from data_pipelines.datasets.urbansound8k import Urbansound8k

BUILDERS: dict[str, type[AudioTaskBuilder]] = {
    b.name: b for b in (BallroomExtended, GtzanGenre, GtzanSpeechmusic, Emomusic, JamendoVd, Urbansound8k)}

__all__ = ["BUILDERS", "CONFIGS", "AudioTaskBuilder", "Example", "LayoutError", "build", "builder"]


def builder(name: str, data_dir: str | os.PathLike, config: str = "first29s") -> AudioTaskBuilder:
    """The builder `name` (a key of BUILDERS) writing to / reading from data_dir."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(BUILDERS)}")
    return BUILDERS[name](data_dir=str(pathlib.Path(data_dir).expanduser()), config=config)


def build(name: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
          config: str = "first29s") -> AudioTaskBuilder:
    """Prepare dataset `name` from manual_dir into data_dir (a no-op if already prepared)."""
    import tensorflow_datasets as tfds

    manual_dir = pathlib.Path(manual_dir).expanduser()
    b = builder(name, data_dir, config)
    if not b.data_path.exists():
        b.ordered_examples(manual_dir)  # layout errors before TFDS starts writing
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir), try_download_gcs=False,
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return b
