"""Where the tagger's training data comes from, chosen by the `data` part of a config.

- "synthetic": the embedded corpus, written on first use, loaded into memory;
- "msd": a split folder + audio root, decoded and cached as log-mels in memory
  (fine for subsets; for the full MSD prepare shards instead);
- "msd_tfrecord": shards written by `prepare_msd.py`: training streamed by tf.data,
  validation and test read into memory.
"""
from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable

from transfer_jax.config import FrontendConfig
from transfer_jax.training_loop import BatchSource, TaggingData

SOURCES = ("synthetic", "msd", "msd_tfrecord")


@dataclasses.dataclass
class TaggingSplits:
    train: TaggingData | BatchSource
    valid: TaggingData
    load_test: Callable[[], TaggingData]  # called after training, to free memory first
    tags: tuple[str, ...]
    frontend: FrontendConfig
    origin: str  # what the data is, for checkpoint metadata


def load(data, frontend: FrontendConfig, batch_size: int, seed: int) -> TaggingSplits:
    """data: the config's `data` section (attributes as in experiments/configs/default.py)."""
    if data.source == "msd_tfrecord":
        return _tfrecord(data, frontend, batch_size, seed)
    if data.source not in SOURCES:
        raise ValueError(f"unknown data.source {data.source!r} ({', '.join(SOURCES)})")
    from data_pipelines import msd_layout, synthetic, tagging

    if data.source == "synthetic":
        root = synthetic.write_tagging_corpus(
            pathlib.Path(data.root) / "synthetic_tagging", data.n_train, data.n_valid, data.n_test,
            data.clip_seconds, data.seed)
        split_dir, audio_root = root / "split", root / "audio"
    else:
        if not data.split_dir or not data.audio_root:
            raise ValueError("data.split_dir and data.audio_root are required for data.source 'msd'")
        split_dir, audio_root = pathlib.Path(data.split_dir), pathlib.Path(data.audio_root)
    splits = {}
    for s in ("train", "valid", "test"):
        d = tagging.load_split(split_dir, audio_root, s, frontend, cache_dir=data.cache_dir or None)
        print(f"{s}: {len(d.mel)} clips" + (f", {len(d.rejects)} rejected (see {s}_rejects.csv in the cache)"
                                            if d.rejects else ""))
        splits[s] = TaggingData(d.mel, d.labels)
    return TaggingSplits(splits["train"], splits["valid"], lambda: splits["test"],
                         msd_layout.read_tag_names(split_dir), frontend, str(split_dir))


def _tfrecord(data, frontend: FrontendConfig, batch_size: int, seed: int) -> TaggingSplits:
    """The frontend is the one the shards were prepared with (their meta.json)."""
    from data_pipelines import input_pipeline

    if not data.tfrecord_dir:
        raise ValueError("data.tfrecord_dir is required for data.source 'msd_tfrecord'")
    root = pathlib.Path(data.tfrecord_dir)
    meta = input_pipeline.read_meta(root)
    fe = FrontendConfig(**meta["frontend"])
    if fe.n_samples != frontend.n_samples:
        print(f"note: using the prepared frontend ({fe.n_samples} samples, {fe.n_frames} frames), "
              f"not the config's {frontend.n_samples} samples")
    train = input_pipeline.TFRecordBatches(root, batch_size, seed=seed, shuffle_buffer=data.shuffle_buffer,
                                           deterministic=data.deterministic)

    def arrays(split: str) -> TaggingData:
        mel, labels, _ = input_pipeline.load_arrays(root, split)
        return TaggingData(mel, labels)

    valid = arrays("valid")
    print(f"train: {len(train.prepared)} clips streamed from {root / 'train'} "
          f"({train.steps_per_epoch} steps/epoch); valid: {len(valid)} clips")
    return TaggingSplits(train, valid, lambda: arrays("test"), tuple(meta["tags"]), fe, str(root))
