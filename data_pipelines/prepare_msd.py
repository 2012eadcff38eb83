"""Prepare the MSD tagging split as float16 log-mel TFRecord shards.

Decodes every 7digital preview of a split (`msd_layout`), resamples it to 12 kHz, fits it
to the model's input (first 29 s; shorter clips tiled or padded), computes the log-mel
with the core JAX frontend (`frontend.log_mel_jit`, dB referenced to each clip's own
maximum) and stores it as float16 with its labels and track ids:

    OUT/meta.json                                   frontend, tags, shard size, format
    OUT/<split>/split.json                          rows, shards, label source, fingerprint
    OUT/<split>/<split>-00012-of-00197.tfrecord     one shard: rows [12*S, 13*S) of the split
    OUT/<split>/<split>-00012-of-00197.json         its count and rejects (written last)
    OUT/<split>/rejects.csv                         all rejects so far: row, ids, path, reason

A record (tf.train.Example): `mel` float16 bytes (n_mels, n_frames) little-endian,
`labels` uint8 bytes (n_tags,), `msd_id`, `id_7d` (bytes), `row` (int64, the line of
the split files). Labels: `<split>_y.npy` when present, else `--lastfm_db`.

Resumable per shard: a shard is written to `<name>.tfrecord.incomplete`, renamed when
complete, and its `.json` is written last; a rerun skips shards whose `.json` exists and
redoes the others. Unusable audio (missing, empty, zero-length, undecodable, non-finite)
is recorded with the reason and never stops the run. Several machines split the work with
`--task_index i --num_tasks n` (shard k goes to task k % n). Decoding and log-mels run
in `--workers` processes (default: all cores).

    python data_pipelines/prepare_msd.py --split_dir msd_split --audio_root 7digital \
        --out msd_logmel [--lastfm_db lastfm_tags.db] [--splits train valid test]
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import csv
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from data_pipelines import msd_layout  # noqa: E402  (light: no JAX, no TensorFlow)

FORMAT = "msd_logmel_tfrecord"
FORMAT_VERSION = 1
DB_REF = "clip"
INCOMPLETE = ".incomplete"
REJECT_FIELDS = ("row", "msd_id", "id_7d", "path", "reason")
# Worker processes: CPU-only JAX, one thread each (the pool provides the parallelism).
WORKER_ENV = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
              "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- layout

@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Shard `index` of `n_shards` of a split: rows [start, stop) of the split files."""

    split: str
    index: int
    n_shards: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.n_shards:05d}"


def plan_shards(split: str, n_rows: int, shard_size: int) -> list[ShardPlan]:
    """Contiguous shards of `shard_size` rows (the last may be shorter), in split order."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    n_shards = max(1, -(-n_rows // shard_size))
    return [ShardPlan(split, k, n_shards, k * shard_size, min((k + 1) * shard_size, n_rows))
            for k in range(n_shards)]


def task_shards(plans: Sequence[ShardPlan], task_index: int, num_tasks: int) -> list[ShardPlan]:
    """The shards machine `task_index` of `num_tasks` prepares: index % num_tasks == task_index."""
    if not 0 <= task_index < num_tasks:
        raise ValueError(f"task_index must be in [0, {num_tasks}), got {task_index}")
    return [p for p in plans if p.index % num_tasks == task_index]


def shard_file(out: pathlib.Path, plan: ShardPlan) -> pathlib.Path:
    return pathlib.Path(out) / plan.split / f"{plan.name}.tfrecord"


def sidecar_file(out: pathlib.Path, plan: ShardPlan) -> pathlib.Path:
    return pathlib.Path(out) / plan.split / f"{plan.name}.json"


def read_sidecar(out: pathlib.Path, plan: ShardPlan) -> dict | None:
    """The completed shard's summary, or None when the shard is not complete."""
    side, shard = sidecar_file(out, plan), shard_file(out, plan)
    if not (side.is_file() and shard.is_file()):
        return None
    try:
        info = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if info.get("rows") != [plan.start, plan.stop]:
        return None
    return info


def _write_json(path: pathlib.Path, obj: dict) -> None:
    """Atomic: a temp file beside `path`, then os.replace (readers never see half a file)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _fingerprint(*parts: object) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else json.dumps(p).encode())
    return h.hexdigest()[:16]


def check_or_write_json(path: pathlib.Path, expected: dict, what: str) -> None:
    """Write `expected` to path, or, if path exists, raise unless it holds the same content.

    Guards resumption: shards prepared with another frontend, tag list, shard size or
    labels must not be mixed into one folder.
    """
    if path.is_file():
        try:
            have = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: unreadable {what} ({e}); remove it to start over") from None
        diff = sorted(k for k in set(have) | set(expected) if have.get(k) != expected.get(k))
        if diff:
            raise ValueError(f"{path}: this folder was prepared with a different {what} "
                             f"(fields {diff} differ); use another --out or remove it")
        return
    _write_json(path, expected)


# ----------------------------------------------------------------------------- records

@functools.lru_cache(maxsize=None)
def tf_cpu():
    """TensorFlow, with every GPU hidden from it (JAX owns the accelerators)."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised elsewhere in this process
        if tf.config.get_visible_devices("GPU"):
            import warnings

            warnings.warn("TensorFlow was initialised with a visible GPU before "
                          "tf.config.set_visible_devices([], 'GPU') could run", stacklevel=2)
    return tf


def serialize_example(mel: np.ndarray, labels: np.ndarray, msd_id: str, id_7d: str, row: int) -> bytes:
    """One tf.train.Example: mel (n_mels, n_frames) -> float16 bytes, labels (n_tags,) -> uint8."""
    tf = tf_cpu()

    def _bytes(b: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))

    feats = {
        "mel": _bytes(np.ascontiguousarray(mel, dtype="<f2").tobytes()),
        "labels": _bytes(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()),
        "msd_id": _bytes(msd_id.encode()), "id_7d": _bytes(id_7d.encode()),
        "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


class ShardWriter:
    """Writes one shard to `<name>.tfrecord.incomplete`; `commit` renames it, then the .json."""

    def __init__(self, out: pathlib.Path, plan: ShardPlan):
        tf = tf_cpu()

        self.out, self.plan = pathlib.Path(out), plan
        self.final = shard_file(self.out, plan)
        self.tmp = self.final.with_name(self.final.name + INCOMPLETE)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._writer = tf.io.TFRecordWriter(str(self.tmp))  # truncates a stale temp
        self.n_examples = 0
        self.rejects: list[dict] = []

    def write(self, record: bytes) -> None:
        self._writer.write(record)
        self.n_examples += 1

    def reject(self, row: int, msd_id: str, id_7d: str, path: str, reason: str) -> None:
        self.rejects.append({"row": row, "msd_id": msd_id, "id_7d": id_7d, "path": path, "reason": reason})

    def commit(self) -> dict:
        self._writer.close()
        os.replace(self.tmp, self.final)
        info = {"rows": [self.plan.start, self.plan.stop], "n_examples": self.n_examples,
                "rejects": self.rejects}
        _write_json(sidecar_file(self.out, self.plan), info)
        return info

    def abort(self) -> None:
        self._writer.close()


# ----------------------------------------------------------------------------- workers

def _init_worker(env: dict[str, str]) -> None:
    os.environ.update(env)


def process_chunk(job: tuple) -> list[tuple[int, np.ndarray | None, str | None]]:
    """Worker: (rows, paths, cfg, batch) -> [(row, mel float16 (n_mels, n_frames) | None, reason | None)].

    Decodes each file to 12 kHz mono, fits it to cfg.n_samples, and computes the log-mels
    of the usable clips in one jitted call padded to `batch` rows (one compilation).
    """
    from transfer_jax import audio as audio_lib
    from transfer_jax import frontend

    rows, paths, cfg, batch = job
    waves, ok_rows, out = [], [], {}
    for row, path in zip(rows, paths):
        try:
            y = audio_lib.load_audio(path, cfg.sample_rate)
            waves.append(audio_lib.fit_length(y, cfg.n_samples, cfg.short_policy))
            ok_rows.append(row)
        except audio_lib.AudioError as e:
            out[row] = (None, e.problem)
        except Exception as e:  # noqa: BLE001 - any other failure is recorded, never fatal
            out[row] = (None, f"unexpected error: {type(e).__name__}: {e}")
    if waves:
        x = np.stack(waves + [waves[-1]] * (batch - len(waves)))
        mel = np.asarray(frontend.log_mel_jit(x, cfg, DB_REF), np.float16)[: len(waves)]
        bad = ~np.isfinite(mel).all(axis=(1, 2))
        for k, row in enumerate(ok_rows):
            out[row] = (None, "log-mel is not finite") if bad[k] else (mel[k], None)
    return [(row, *out[row]) for row in rows]


def _map_ordered(fn, jobs: Iterator[tuple], workers: int, lookahead: int) -> Iterator:
    """fn(job) for each job, results in job order; `workers` spawn processes (0/1: in-process).

    At most `lookahead` jobs are in flight, so memory stays bounded on 200k clips.
    """
    if workers <= 1:
        for job in jobs:
            yield fn(job)
        return
    ctx = multiprocessing.get_context("spawn")  # JAX is not fork-safe
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(WORKER_ENV,)) as pool:
        pending: collections.deque = collections.deque()
        try:
            for job in jobs:
                pending.append(pool.submit(fn, job))
                if len(pending) >= lookahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BaseException:
            for f in pending:
                f.cancel()
            raise


# ----------------------------------------------------------------------------- preparing

@dataclasses.dataclass
class SplitSource:
    """A split's ids, audio paths and labels (n, n_tags) uint8, with where the labels came from."""

    split: str
    index: msd_layout.SplitIndex
    paths: list[str]
    labels: np.ndarray
    label_source: str


def load_source(split_dir: str | os.PathLike, audio_root: str | os.PathLike, split: str,
                tags: Sequence[str], lastfm_db: str | os.PathLike | None = None) -> SplitSource:
    """Read a split; labels from `<split>_y.npy`, else from the Last.fm database."""
    index = msd_layout.read_split(split_dir, split)
    if index.labels is not None:
        labels, source = index.labels, f"{split}_y.npy"
    elif lastfm_db:
        from data_pipelines import lastfm

        result = lastfm.labels_for_tracks(lastfm_db, index.msd_ids, tags)
        labels, source = result.labels, f"{pathlib.Path(lastfm_db).name} (score > {lastfm.THRESHOLD:g})"
        if result.n_unknown:
            print(f"{split}: {result.n_unknown} track(s) not in {lastfm_db}: all-zero labels")
    else:
        raise FileNotFoundError(
            f"{msd_layout.split_file(split_dir, split, 'y.npy')}: no labels for the {split!r} split; "
            "supply that file or --lastfm_db lastfm_tags.db")
    if labels.shape[1] != len(tags):
        raise ValueError(f"{split}: labels have {labels.shape[1]} columns but there are {len(tags)} tags")
    paths = [str(msd_layout.audio_path(audio_root, f)) for f in index.filenames]
    return SplitSource(split, index, paths, np.asarray(labels, np.uint8), source)


def meta_dict(cfg, tags: Sequence[str], shard_size: int) -> dict:
    """The folder-wide settings every shard shares (meta.json)."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "frontend": dataclasses.asdict(cfg),
            "db_ref": DB_REF, "dtype": "float16", "n_mels": cfg.n_mels, "n_frames": cfg.n_frames,
            "tags": list(tags), "shard_size": int(shard_size)}


def _jobs(src: SplitSource, plans: Sequence[ShardPlan], cfg, batch: int) -> Iterator[tuple]:
    for plan in plans:
        for a in range(plan.start, plan.stop, batch):
            rows = list(range(a, min(a + batch, plan.stop)))
            yield rows, [src.paths[r] for r in rows], cfg, batch


def prepare_split(src: SplitSource, out: str | os.PathLike, cfg, *, shard_size: int = 1024,
                  task_index: int = 0, num_tasks: int = 1, workers: int | None = None,
                  batch: int = 16, progress: bool = True) -> dict:
    """Write this task's missing shards of one split; returns a summary dict.

    Summary: n_shards, shards_done_before, shards_written, complete (all shards of the
    split, by any task), n_examples and n_rejects over the complete shards.
    """
    from tqdm.auto import tqdm

    out = pathlib.Path(out)
    plans = plan_shards(src.split, len(src.index), shard_size)
    check_or_write_json(out / src.split / "split.json", {
        "split": src.split, "n_rows": len(src.index), "n_shards": len(plans), "label_source": src.label_source,
        "fingerprint": _fingerprint(src.index.msd_ids, src.index.filenames, src.labels)}, "split content")
    mine = task_shards(plans, task_index, num_tasks)
    todo = [p for p in mine if read_sidecar(out, p) is None]
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = tqdm(total=sum(p.stop - p.start for p in todo), unit="clip", disable=not progress,
               desc=f"{src.split} ({len(mine) - len(todo)}/{len(mine)} shards done)")
    results = _map_ordered(process_chunk, _jobs(src, todo, cfg, batch), workers, lookahead=4 * max(workers, 1))
    t0 = time.time()
    for plan in todo:
        writer = ShardWriter(out, plan)
        try:
            done = plan.start
            while done < plan.stop:
                for row, mel, reason in next(results):
                    ix = src.index
                    if mel is None:
                        writer.reject(row, ix.msd_ids[row], ix.ids_7d[row], src.paths[row], reason)
                    else:
                        writer.write(serialize_example(mel, src.labels[row], ix.msd_ids[row], ix.ids_7d[row], row))
                    done += 1
                    bar.update(1)
        except BaseException:
            writer.abort()
            raise
        writer.commit()
    bar.close()
    summary = summarize_split(out, plans)
    write_rejects_csv(out, plans)
    summary.update(shards_done_before=len(mine) - len(todo), shards_written=len(todo),
                   seconds=round(time.time() - t0, 2))
    return summary


def summarize_split(out: pathlib.Path, plans: Sequence[ShardPlan]) -> dict:
    """Counts over the complete shards of a split (by any task)."""
    infos = [read_sidecar(out, p) for p in plans]
    done = [i for i in infos if i is not None]
    return {"n_shards": len(plans), "complete": len(done) == len(plans), "shards_complete": len(done),
            "n_examples": sum(i["n_examples"] for i in done),
            "n_rejects": sum(len(i["rejects"]) for i in done)}


def write_rejects_csv(out: pathlib.Path, plans: Sequence[ShardPlan]) -> pathlib.Path:
    """OUT/<split>/rejects.csv: the rejects of all complete shards, in row order."""
    rows = []
    for p in plans:
        info = read_sidecar(out, p)
        rows += info["rejects"] if info else []
    path = pathlib.Path(out) / plans[0].split / "rejects.csv"
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=REJECT_FIELDS)
        w.writeheader()
        w.writerows(sorted(rows, key=lambda r: r["row"]))
    os.replace(tmp, path)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Prepare MSD log-mel TFRecord shards (see module docstring).")
    p.add_argument("--split_dir", required=True, help="{split}_x_msd_id.txt, _x_7d_id.txt, _x_filename.txt, _y.npy")
    p.add_argument("--audio_root", required=True, help="7digital clips: ROOT/3/6/36122424.clip.mp3")
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--splits", nargs="+", default=list(msd_layout.SPLITS), choices=msd_layout.SPLITS)
    p.add_argument("--lastfm_db", default=None, help="lastfm_tags.db, for splits without <split>_y.npy")
    p.add_argument("--shard_size", type=int, default=1024, help="clips per shard (about 261 kB each at 29 s)")
    p.add_argument("--task_index", type=int, default=0, help="this machine's index when several split the work")
    p.add_argument("--num_tasks", type=int, default=1, help="machines splitting the work (shard k -> task k %% n)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores; 1: in-process)")
    p.add_argument("--batch", type=int, default=16, help="clips per worker job / log-mel call")
    p.add_argument("--n_samples", type=int, default=348_000, help="input length at 12 kHz (348,000 = 29 s)")
    p.add_argument("--short_policy", choices=("tile", "pad"), default="tile", help="how shorter clips are filled")
    p.add_argument("--no_progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from transfer_jax.config import FrontendConfig

    cfg = FrontendConfig(n_samples=args.n_samples, short_policy=args.short_policy)
    tags = msd_layout.read_tag_names(args.split_dir)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_or_write_json(out / "meta.json", meta_dict(cfg, tags, args.shard_size), "frontend/tags/shard size")
    print(f"log-mel {cfg.n_mels} x {cfg.n_frames} float16 (dB re each clip's max; short clips: "
          f"{cfg.short_policy}) -> {out}; task {args.task_index}/{args.num_tasks}", flush=True)
    for split in args.splits:
        src = load_source(args.split_dir, args.audio_root, split, tags, args.lastfm_db)
        s = prepare_split(src, out, cfg, shard_size=args.shard_size, task_index=args.task_index,
                          num_tasks=args.num_tasks, workers=args.workers, batch=args.batch,
                          progress=not args.no_progress)
        state = "complete" if s["complete"] else f"{s['shards_complete']}/{s['n_shards']} shards complete"
        print(f"{split}: wrote {s['shards_written']} shard(s), skipped {s['shards_done_before']} done; "
              f"split {state}: {s['n_examples']} clips, {s['n_rejects']} rejected "
              f"(see {out / split / 'rejects.csv'}); labels from {src.label_source}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
