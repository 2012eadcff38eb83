"""MSD tag labels from the Last.fm tag database (`lastfm_tags.db`, SQLite).

Why: the MSD split release has no `train_y.npy`; the paper's labels are "the 50 tags, a
tag counts when its Last.fm score is > 50", which this module computes from the public
database of the Last.fm dataset (millionsongdataset.com/lastfm).

The database schema (as released, joined through SQLite rowids):

    tags(tag TEXT)                 one tag a row; its ROWID identifies the tag
    tids(tid TEXT)                 one MSD track id a row; its ROWID identifies the track
    tid_tag(tid INT, tag INT, val) tid = tids.ROWID, tag = tags.ROWID, val = score 0-100

Tag names are matched exactly (case-sensitive: "Mellow", "Hip-Hop" and "House" are
spelled as in `config.MSD_TAGS`). Tracks absent from `tids` get all-zero rows and are
counted in `LastfmLabels.n_unknown`.

    python data_pipelines/lastfm.py --db lastfm_tags.db --split_dir DIR --split train --out DIR
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sqlite3
import sys
from collections.abc import Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from transfer_jax.config import MSD_TAGS  # noqa: E402

THRESHOLD = 50.0  # a tag counts when its score is strictly greater
_SCHEMA: dict[str, tuple[str, ...]] = {"tags": ("tag",), "tids": ("tid",), "tid_tag": ("tid", "tag", "val")}


@dataclasses.dataclass
class LastfmLabels:
    """labels: (n_tracks, n_tags) uint8; n_unknown: tracks not in the database."""

    labels: np.ndarray
    n_unknown: int


def connect(db_path: str | os.PathLike) -> sqlite3.Connection:
    """Open the database read-only and check its schema; errors name the file."""
    path = pathlib.Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"Last.fm tag database not found: {path}")
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        check_schema(conn, str(path))
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{path}: not a readable SQLite database ({e})") from None
    return conn


def check_schema(conn: sqlite3.Connection, where: str = "lastfm_tags.db") -> None:
    """ValueError naming `where` unless tables tags(tag), tids(tid), tid_tag(tid, tag, val) exist."""
    for table, cols in _SCHEMA.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            raise ValueError(f"{where}: table {table!r} missing; expected the Last.fm schema "
                             "tags(tag), tids(tid), tid_tag(tid, tag, val)")
        missing = [c for c in cols if c not in have]
        if missing:
            raise ValueError(f"{where}: table {table!r} lacks column(s) {missing}; has {sorted(have)}")


def tag_rowids(conn: sqlite3.Connection, tags: Sequence[str], where: str = "lastfm_tags.db") -> list[int]:
    """ROWIDs of `tags` in the tags table, in the order given; ValueError if any is absent."""
    rowids = {}
    for rowid, tag in conn.execute("SELECT ROWID, tag FROM tags"):
        rowids.setdefault(tag, rowid)  # the released table has each tag once
    missing = [t for t in tags if t not in rowids]
    if missing:
        raise ValueError(f"{where}: tag(s) {missing} not in table 'tags' (names are case-sensitive)")
    return [rowids[t] for t in tags]


def labels_for_tracks(db_path: str | os.PathLike, msd_ids: Sequence[str],
                      tags: Sequence[str] = MSD_TAGS, threshold: float = THRESHOLD) -> LastfmLabels:
    """0/1 labels (len(msd_ids), len(tags)): 1 where the track's score for the tag > threshold.

    One pass over the rows of tid_tag for the wanted tags, so 200k tracks take seconds,
    not 200k queries.
    """
    conn = connect(db_path)
    try:
        tag_col = {rowid: j for j, rowid in enumerate(tag_rowids(conn, tags, str(db_path)))}
        row_of = {tid: i for i, tid in enumerate(msd_ids)}
        if len(row_of) != len(msd_ids):
            raise ValueError("msd_ids contains duplicates")
        known = np.zeros(len(msd_ids), bool)
        for tid, in conn.execute("SELECT tid FROM tids"):
            i = row_of.get(tid)
            if i is not None:
                known[i] = True
        y = np.zeros((len(msd_ids), len(tags)), np.uint8)
        marks = ",".join("?" * len(tag_col))
        sql = (f"SELECT tids.tid, tid_tag.tag FROM tid_tag JOIN tids ON tids.ROWID = tid_tag.tid "
               f"WHERE tid_tag.val > ? AND tid_tag.tag IN ({marks})")
        for tid, tag in conn.execute(sql, (float(threshold), *tag_col)):
            i = row_of.get(tid)
            if i is not None:
                y[i, tag_col[tag]] = 1
    finally:
        conn.close()
    return LastfmLabels(labels=y, n_unknown=int((~known).sum()))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of equal entries of two (n, n_tags) 0/1 label arrays (a check against a y.npy)."""
    if a.shape != b.shape:
        raise ValueError(f"label shapes differ: {a.shape} vs {b.shape}")
    return float(np.mean(np.asarray(a, bool) == np.asarray(b, bool)))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write `<split>_y.npy` for a split from the database; compare if one exists."""
    from data_pipelines import msd_layout

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="lastfm_tags.db")
    p.add_argument("--split_dir", required=True, help="folder of {split}_x_msd_id.txt ...")
    p.add_argument("--split", default="train", choices=msd_layout.SPLITS)
    p.add_argument("--out", required=True, help="folder for <split>_y.npy")
    p.add_argument("--threshold", type=float, default=THRESHOLD)
    args = p.parse_args(argv)
    index = msd_layout.read_split(args.split_dir, args.split)
    result = labels_for_tracks(args.db, index.msd_ids, msd_layout.read_tag_names(args.split_dir),
                               args.threshold)
    out = pathlib.Path(args.out) / f"{args.split}_y.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result.labels)
    print(f"{out}: {result.labels.shape}, {result.n_unknown} track(s) not in {args.db}, "
          f"{int(result.labels.any(1).sum())} with at least one tag")
    if index.labels is not None:
        print(f"agreement with {args.split}_y.npy: {agreement(result.labels, index.labels):.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
