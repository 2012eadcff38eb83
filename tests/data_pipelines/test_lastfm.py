"""MSD labels from a small lastfm_tags.db in the released schema (rowid joins, val 0-100)."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from data_pipelines import lastfm, msd_layout
from transfer_jax.config import MSD_TAGS


def make_db(path, tids, tags, rows):
    """tags(tag), tids(tid), tid_tag(tid -> tids.ROWID, tag -> tags.ROWID, val), as released."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE tags (tag TEXT)")
    con.execute("CREATE TABLE tids (tid TEXT)")
    con.execute("CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT)")
    con.executemany("INSERT INTO tags VALUES (?)", [(t,) for t in tags])
    con.executemany("INSERT INTO tids VALUES (?)", [(t,) for t in tids])
    tid_row = {t: r for r, t in con.execute("SELECT ROWID, tid FROM tids")}
    tag_row = {t: r for r, t in con.execute("SELECT ROWID, tag FROM tags")}
    con.executemany("INSERT INTO tid_tag VALUES (?, ?, ?)", [(tid_row[a], tag_row[b], v) for a, b, v in rows])
    con.commit()
    con.close()
    return path


@pytest.fixture
def db(tmp_path):
    # all 50 tags, in an order unlike MSD_TAGS, plus tags outside the 50 (a lower-case
    # 'mellow' that must not count for 'Mellow')
    tags = ["seen live", "mellow"] + list(reversed(MSD_TAGS))
    tids = ["TRUNUSED0000000000", "TRA", "TRB", "TRC"]
    rows = [("TRA", "rock", 100), ("TRA", "Mellow", 51), ("TRA", "jazz", 50),  # 50 is not > 50
            ("TRA", "seen live", 100), ("TRB", "mellow", 90), ("TRB", "Hip-Hop", 50.5),
            ("TRB", "House", 75), ("TRC", "happy", 10), ("TRUNUSED0000000000", "pop", 100)]
    return make_db(tmp_path / "lastfm_tags.db", tids, tags, rows)


def col(tag):
    return MSD_TAGS.index(tag)


def test_labels_follow_the_score_rule_and_the_tag_order(db):
    got = lastfm.labels_for_tracks(db, ["TRB", "TRA", "TRMISSING", "TRC"])
    y = got.labels
    assert y.shape == (4, 50) and y.dtype == np.uint8
    assert np.flatnonzero(y[1]).tolist() == sorted([col("rock"), col("Mellow")])  # jazz at 50 excluded
    assert np.flatnonzero(y[0]).tolist() == sorted([col("Hip-Hop"), col("House")])  # 'mellow' != 'Mellow'
    assert not y[2].any() and not y[3].any()
    assert got.n_unknown == 1


def test_threshold_and_tag_subset(db):
    y = lastfm.labels_for_tracks(db, ["TRA"], tags=("jazz", "rock"), threshold=49).labels
    assert y.tolist() == [[1, 1]]


def test_missing_tag_wrong_schema_and_non_database_are_clear_errors(db, tmp_path):
    with pytest.raises(ValueError, match=r"tag\(s\) \['no such tag'\] not in table 'tags'"):
        lastfm.labels_for_tracks(db, ["TRA"], tags=("rock", "no such tag"))
    bad = tmp_path / "bad.db"
    con = sqlite3.connect(bad)
    con.execute("CREATE TABLE tags (tag TEXT)")
    con.execute("CREATE TABLE tids (tid TEXT)")
    con.execute("CREATE TABLE tid_tag (tid INT, tag INT)")
    con.close()
    with pytest.raises(ValueError, match=r"bad.db: table 'tid_tag' lacks column\(s\) \['val'\]"):
        lastfm.labels_for_tracks(bad, ["TRA"])
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="junk.db: not a readable SQLite database"):
        lastfm.labels_for_tracks(junk, ["TRA"])
    with pytest.raises(FileNotFoundError, match="absent.db"):
        lastfm.labels_for_tracks(tmp_path / "absent.db", ["TRA"])


def test_cli_writes_y_and_reports_agreement(db, tmp_path, capsys):
    index = msd_layout.SplitIndex(["TRA", "TRB"], ["1", "2"], ["1/0/10.npy", "2/0/20.npy"])
    msd_layout.write_split(tmp_path / "split", "train", index)
    assert lastfm.main(["--db", str(db), "--split_dir", str(tmp_path / "split"), "--out", str(tmp_path / "y")]) == 0
    y = np.load(tmp_path / "y" / "train_y.npy")
    np.testing.assert_array_equal(y, lastfm.labels_for_tracks(db, ["TRA", "TRB"]).labels)
    # with a y.npy present the CLI compares
    msd_layout.write_split(tmp_path / "split", "train", msd_layout.SplitIndex(index.msd_ids, index.ids_7d,
                                                                              index.filenames, y))
    lastfm.main(["--db", str(db), "--split_dir", str(tmp_path / "split"), "--out", str(tmp_path / "y")])
    assert "agreement with train_y.npy: 1.000000" in capsys.readouterr().out
