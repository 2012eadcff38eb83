"""tf.data input pipeline over prepared MSD log-mel shards (`prepare_msd.py`), numpy out.

    shards of this host -> (per-epoch file order) -> interleave -> shuffle -> take/skip
        -> batch (drop remainder) -> parse (float16 mel, uint8 labels) -> prefetch

Multi-host: shard files are dealt to hosts (file k -> host k % process_count), so hosts
read disjoint examples that together cover the split; every host stops after the same
number of steps (the smallest host's count), and each feeds its slice of the global batch.
Deterministic mode (default, needed for exact resumption): the file order and shuffle of
epoch e depend only on (seed, e, host), and `epoch(e, start)` yields the same batches as
the tail of `epoch(e)`. Non-deterministic mode lets tf.data reorder for speed.

TensorFlow only reads files here: it is kept off every GPU (`tf.config.set_visible_devices`)
so that JAX owns the accelerators.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np

from data_pipelines import prepare_msd

tf = prepare_msd.tf_cpu()

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
    """The complete shards of one split. files/counts: shard paths and examples per shard."""

    split: str
    files: tuple[str, ...]
    counts: tuple[int, ...]
    n_mels: int
    n_frames: int
    tags: tuple[str, ...]
    frontend: dict

    def __len__(self) -> int:
        return int(sum(self.counts))

    def subset(self, keep: Sequence[int]) -> "PreparedSplit":
        """The same split restricted to the shards at positions `keep`."""
        return dataclasses.replace(self, files=tuple(self.files[k] for k in keep),
                                   counts=tuple(self.counts[k] for k in keep))


def read_meta(tfrecord_dir: str | os.PathLike) -> dict:
    """meta.json of a prepared folder; errors name the folder and the problem."""
    path = pathlib.Path(tfrecord_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a folder written by data_pipelines/prepare_msd.py")
    meta = json.loads(path.read_text())
    if meta.get("format") != prepare_msd.FORMAT or meta.get("version") != prepare_msd.FORMAT_VERSION:
        raise ValueError(f"{path}: format {meta.get('format')!r} v{meta.get('version')}, expected "
                         f"{prepare_msd.FORMAT!r} v{prepare_msd.FORMAT_VERSION}")
    return meta


def open_split(tfrecord_dir: str | os.PathLike, split: str, *, require_complete: bool = True) -> PreparedSplit:
    """The prepared shards of `split`; raises if some are missing (unless require_complete=False)."""
    root = pathlib.Path(tfrecord_dir)
    meta = read_meta(root)
    info_path = root / split / "split.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} not found: split {split!r} was not prepared in {root}")
    info = json.loads(info_path.read_text())
    plans = prepare_msd.plan_shards(split, info["n_rows"], meta["shard_size"])
    files, counts, missing = [], [], []
    for plan in plans:
        side = prepare_msd.read_sidecar(root, plan)
        if side is None:
            missing.append(plan.name)
        elif side["n_examples"]:
            files.append(str(prepare_msd.shard_file(root, plan)))
            counts.append(int(side["n_examples"]))
    if missing and require_complete:
        raise ValueError(f"{root / split}: {len(missing)} of {len(plans)} shards are not complete "
                         f"(e.g. {missing[:3]}); rerun prepare_msd.py to finish them")
    if not files:
        raise ValueError(f"{root / split}: no complete shard with examples")
    return PreparedSplit(split, tuple(files), tuple(counts), int(meta["n_mels"]), int(meta["n_frames"]),
                         tuple(meta["tags"]), dict(meta["frontend"]))


def host_split(prepared: PreparedSplit, process_index: int, process_count: int) -> PreparedSplit:
    """The shards host `process_index` of `process_count` reads: positions k % count == index."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if len(prepared.files) < process_count:
        raise ValueError(f"{len(prepared.files)} shard files cannot feed {process_count} hosts; "
                         "prepare with a smaller --shard_size")
    return prepared.subset(range(process_index, len(prepared.files), process_count))


def steps_per_epoch(prepared: PreparedSplit, global_batch: int, process_count: int = 1) -> int:
    """Steps every host can take: min over hosts of (host examples // per-host batch)."""
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} is not divisible by {process_count} hosts")
    per_host = global_batch // process_count
    return min(len(host_split(prepared, h, process_count)) // per_host for h in range(process_count))


def _parse_batch(n_mels: int, n_frames: int, n_tags: int):
    spec = {"mel": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.FixedLenFeature([], tf.string),
            "msd_id": tf.io.FixedLenFeature([], tf.string), "id_7d": tf.io.FixedLenFeature([], tf.string),
            "row": tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        mel = tf.reshape(tf.io.decode_raw(ex["mel"], tf.float16), [-1, n_mels, n_frames])
        labels = tf.reshape(tf.io.decode_raw(ex["labels"], tf.uint8), [-1, n_tags])
        return {"mel": mel, "labels": labels, "msd_id": ex["msd_id"], "id_7d": ex["id_7d"], "row": ex["row"]}

    return parse


def _seed(seed: int, epoch: int, host: int) -> int:
    return int(np.random.default_rng([seed, epoch, host]).integers(2**31 - 1))


def make_dataset(prepared: PreparedSplit, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 epoch: int = 0, host: int = 0, shuffle_buffer: int = 2048, cycle_length: int = 16,
                 deterministic: bool = True, drop_remainder: bool = True, take_batches: int | None = None,
                 skip_batches: int = 0) -> "tf.data.Dataset":
    """Batches of dicts: mel (B, n_mels, n_frames) float16, labels (B, n_tags) uint8, msd_id, id_7d, row.

    shuffle=False reads the shards in order, records in split order (evaluation).
    take_batches caps the epoch (equal step counts on all hosts); skip_batches resumes
    mid-epoch without parsing the skipped records.
    """
    files = list(prepared.files)
    seed_e = _seed(seed, epoch, host)
    if shuffle:
        files = [files[i] for i in np.random.default_rng(seed_e).permutation(len(files))]
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            lambda f: tf.data.TFRecordDataset(f, buffer_size=4 << 20),
            cycle_length=min(cycle_length, len(files)), block_length=1,
            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        ds = ds.shuffle(shuffle_buffer, seed=seed_e, reshuffle_each_iteration=False)
    else:
        ds = tf.data.TFRecordDataset(files, buffer_size=4 << 20)
    if take_batches is not None:
        ds = ds.take(take_batches * batch_size)
    if skip_batches:
        ds = ds.skip(skip_batches * batch_size)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(_parse_batch(prepared.n_mels, prepared.n_frames, len(prepared.tags)),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)


def numpy_batches(ds: "tf.data.Dataset") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(mel (B, n_mels, n_frames) float16, labels (B, n_tags) float32) numpy pairs."""
    for b in ds.as_numpy_iterator():
        yield b["mel"], b["labels"].astype(np.float32)


@dataclasses.dataclass
class TFRecordBatches:
    """Training batches from prepared shards: a `training_loop.BatchSource`.

    Each host reads its own shards and yields its slice (global_batch // process_count)
    of every global batch, for `steps_per_epoch` steps.
    """

    tfrecord_dir: str | os.PathLike
    global_batch: int
    split: str = "train"
    seed: int = 0
    shuffle_buffer: int = 2048
    cycle_length: int = 16
    deterministic: bool = True
    process_index: int | None = None
    process_count: int | None = None

    def __post_init__(self):
        import jax

        self.process_index = jax.process_index() if self.process_index is None else self.process_index
        self.process_count = jax.process_count() if self.process_count is None else self.process_count
        self.prepared = open_split(self.tfrecord_dir, self.split)
        self.host = host_split(self.prepared, self.process_index, self.process_count)
        self.steps_per_epoch = steps_per_epoch(self.prepared, self.global_batch, self.process_count)
        self.n_frames = self.prepared.n_frames

    def dataset(self, epoch: int, start: int = 0) -> "tf.data.Dataset":
        return make_dataset(self.host, self.global_batch // self.process_count, seed=self.seed, epoch=epoch,
                            host=self.process_index, shuffle_buffer=self.shuffle_buffer,
                            cycle_length=self.cycle_length, deterministic=self.deterministic,
                            take_batches=self.steps_per_epoch, skip_batches=start)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return numpy_batches(self.dataset(epoch, start))


def load_arrays(tfrecord_dir: str | os.PathLike, split: str, batch_size: int = 256
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A whole split in memory, in split order: mel (n, n_mels, n_frames) float16, labels (n, n_tags) uint8, msd ids.

    For validation/test (12,634 / 28,540 clips at 29 s: about 3.3 / 7.4 GB).
    """
    prepared = open_split(tfrecord_dir, split)
    mel = np.empty((len(prepared), prepared.n_mels, prepared.n_frames), np.float16)
    labels = np.empty((len(prepared), len(prepared.tags)), np.uint8)
    ids: list[str] = []
    i = 0
    for b in make_dataset(prepared, batch_size, shuffle=False, drop_remainder=False).as_numpy_iterator():
        n = len(b["mel"])
        mel[i:i + n], labels[i:i + n] = b["mel"], b["labels"]
        ids += [s.decode() for s in b["msd_id"]]
        i += n
    if i != len(prepared):
        raise ValueError(f"{tfrecord_dir}/{split}: read {i} records, the shard summaries say {len(prepared)}")
    return mel, labels, ids
