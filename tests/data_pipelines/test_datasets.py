"""The six TFDS builders: built offline from fixture trees in each dataset's real layout.

Audio is tiny (0.1-0.2 s). Listing tests use trees of empty files named after the
authors' example lists (`../shared/anchors/choi2017/data_csv`), skipped without them.
"""
from __future__ import annotations

import csv
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import datasets
from data_pipelines.datasets import (ballroom_extended, emomusic, gtzan_genre, gtzan_speechmusic, jamendo_vd,
                                     urbansound8k)
from data_pipelines.datasets.common import SR, AudioConfig, LayoutError

# libsndfile decodes by content: where it cannot write MP3/OGG, WAV data under that name still reads
_FORMATS = {ext: fmt if fmt in sf.available_formats() else "WAV"
            for ext, fmt in {".mp3": "MP3", ".au": "AU", ".ogg": "OGG", ".wav": "WAV"}.items()}


def write_audio(path: pathlib.Path, seconds: float = 0.2, sr: int = 22_050, freq: float = 440.0) -> None:
    """A short sine in the format of the suffix (mp3, au, ogg, wav)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr,
             format=_FORMATS[path.suffix.lower()])


def touch(path: pathlib.Path, **_) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def read_anchor(anchors: pathlib.Path, name: str) -> list[dict]:
    with open(anchors / "data_csv" / name, newline="") as f:
        return list(csv.DictReader(f))


def stem(filepath: str) -> str:
    return pathlib.PurePosixPath(filepath).stem


def build(name: str, manual_dir: pathlib.Path, tmp_path: pathlib.Path, split: str = "train") -> list[dict]:
    import tensorflow_datasets as tfds

    b = datasets.build(name, manual_dir, tmp_path / "tfds")
    return list(tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False)))


# ----------------------------------------------------------------------------- tree writers

def ballroom_tree(root: pathlib.Path, ids: dict[str, list[str]], xml: bool = True, write=write_audio,
                  official_names: bool = False) -> None:
    for genre, gids in ids.items():
        for i in gids:
            write(root / genre / (f"{genre}.{i}.mp3" if official_names else f"{i}.mp3"))
    if xml:
        body = "".join(f"<{g}>" + "".join(f'<song id="{i}" bpm="120"/>' for i in gids) + f"</{g}>"
                       for g, gids in ids.items())
        (root / "extendedballroom_v1.1.xml").write_text(f"<?xml version='1.0'?><extendedballroom>{body}</extendedballroom>")


def emo_tree(root: pathlib.Path, rows: list[tuple[int, float, float]], write=write_audio) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    with open(root / "annotations" / "static_annotations.csv", "w") as f:
        f.write("song_id, mean_arousal, std_arousal, mean_valence, std_valence\n")
        for song, a, v in rows:
            f.write(f"{song},{a!r},0.5,{v!r},0.5\n")
            write(root / "clips_45seconds" / f"{song}.mp3")


def jamendo_tree(root: pathlib.Path, songs: dict[str, list[tuple[str, list[tuple[float, float, str]]]]],
                 zenodo: bool = False, write=write_audio) -> None:
    for split, items in songs.items():
        for name, segs in items:
            audio = root / ("audio" if zenodo else split) / f"{name}.ogg"
            write(audio, seconds=max(e for _, e, _ in segs) + 0.05)
            lab = root / ("labels" if zenodo else "jamendo_lab") / f"{name}.lab"
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text("".join(f"{s} {e} {lbl}\n" for s, e, lbl in segs))
        if zenodo:
            (root / "filelists").mkdir(parents=True, exist_ok=True)
            (root / "filelists" / split).write_text("".join(f"{n}.ogg\n" for n, _ in items))


def urbansound_tree(root: pathlib.Path, rows: list[tuple[str, int, int]], write=write_audio) -> None:
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        for name, fold, label in rows:
            w.writerow([name, name.split("-")[0], 0.0, 4.0, 1, fold, label, urbansound8k.CLASSES[label]])
            write(root / "audio" / f"fold{fold}" / name, seconds=0.1)


# ----------------------------------------------------------------------------- builds

def test_gtzan_genre_builds_in_label_then_name_order(tmp_path):
    manual = tmp_path / "manual"
    for g in gtzan_genre.CLASSES:
        for k in (1, 0):
            write_audio(manual / "genres" / g / f"{g}.{k:05d}.au", freq=200 + 50 * k)
    rows = build("gtzan_genre", manual, tmp_path)
    assert [r["id"].decode() for r in rows] == [f"{g}.{k:05d}" for g in gtzan_genre.CLASSES for k in (0, 1)]
    assert [int(r["label"]) for r in rows] == [i for i in range(10) for _ in (0, 1)]
    audio = rows[0]["audio"]
    assert audio.dtype == np.float32 and len(audio) == int(0.2 * SR)  # resampled 22.05 -> 12 kHz
    assert rows[0]["duration"] == pytest.approx(0.2, abs=1e-3)
    b = datasets.builder("gtzan_genre", tmp_path / "tfds")
    assert b.info.features["audio"].sample_rate == SR and b.info.supervised_keys == ("audio", "label")


def test_ballroom_xml_order_official_names_and_labels(tmp_path):
    manual = tmp_path / "manual"
    ids = {g: [str(100000 + 10 * k + j) for j in (3, 1, 2)] for k, g in enumerate(ballroom_extended.CLASSES)}
    ballroom_tree(manual / "extendedballroom_v1.1", ids, official_names=True)
    rows = build("ballroom_extended", manual, tmp_path)
    assert len(rows) == 39
    assert [r["id"].decode() for r in rows] == [i for g in ballroom_extended.CLASSES for i in ids[g]]  # XML order
    assert [int(r["label"]) for r in rows] == [k for k in range(13) for _ in range(3)]
    assert ballroom_extended.CLASSES[-1] == "Quickstep"  # label 12, as in the authors' list


def test_ballroom_without_xml_sorts_ids(tmp_path):
    ids = {g: [f"{k}12", f"{k}9", f"{k}11"] for k, g in enumerate(ballroom_extended.CLASSES, 1)}
    ballroom_tree(tmp_path, ids, xml=False, write=touch)
    ex = ballroom_extended.list_examples(tmp_path)
    assert [e.key for e in ex[:3]] == ["19", "111", "112"]  # numeric order


def test_speechmusic_builds(tmp_path):
    manual = tmp_path / "m"
    for name in ("ballad", "bagpipe"):
        write_audio(manual / "music_speech" / "music_wav" / f"{name}.wav")
    for name in ("acomic", "voice", "news1"):
        write_audio(manual / "music_speech" / "speech_wav" / f"{name}.wav", sr=16_000)
    rows = build("gtzan_speechmusic", manual, tmp_path)
    assert [r["id"].decode() for r in rows] == ["bagpipe", "ballad", "acomic", "news1", "voice"]
    assert [int(r["label"]) for r in rows] == [0, 0, 1, 1, 1]


def test_emomusic_builds_targets_divided_by_9(tmp_path):
    manual = tmp_path / "m"
    emo_tree(manual / "emoMusic45s", [(10, 4.5, 3.6), (2, 3.1, 3.0), (3, 7.2, 5.4)])
    write_audio(manual / "emoMusic45s" / "clips_45seconds" / "999.mp3")  # not annotated: not an example
    rows = build("emomusic", manual, tmp_path)
    assert [r["id"].decode() for r in rows] == ["2", "3", "10"]
    np.testing.assert_allclose([r["arousal"] for r in rows], [3.1 / 9, 7.2 / 9, 4.5 / 9], rtol=1e-6)
    np.testing.assert_allclose([r["valence"] for r in rows], [3.0 / 9, 5.4 / 9, 3.6 / 9], rtol=1e-6)


def test_jamendo_cuts_segments_into_splits(tmp_path):
    manual = tmp_path / "m"
    songs = {"train": [("02 - B song", [(0.0, 0.1, "nosing"), (0.1, 0.25, "sing")]),
                       ("01 - A song", [(0.0, 0.2, "sing")])],
             "valid": [("05 - V", [(0.0, 0.05, "nosing"), (0.05, 0.1, "sing"), (0.1, 0.3, "nosing")])],
             "test": [("03 - T", [(0.0, 0.15, "sing")])]}
    jamendo_tree(manual / "jamendo", songs, zenodo=True)
    train = build("jamendo_vd", manual, tmp_path, "train")
    # Zenodo layout: songs in filelist order, segments in .lab order
    assert [r["id"].decode() for r in train] == ["02 - B song_0", "02 - B song_1", "01 - A song_0"]
    assert [int(r["label"]) for r in train] == [0, 1, 1]
    assert [len(r["audio"]) for r in train] == [1200, 1800, 2400]  # [start, end) at 12 kHz
    valid = build("jamendo_vd", manual, tmp_path, "valid")
    assert [int(r["label"]) for r in valid] == [0, 1, 0]
    everything = build("jamendo_vd", manual, tmp_path, "train+test+valid")
    assert [r["id"].decode() for r in everything][3] == "03 - T_0"  # the example list's split order


def test_jamendo_tarball_layout_sorts_songs(tmp_path):
    songs = {s: [(f"0{k} - {s}{k}", [(0.0, 0.1, "sing"), (0.1, 0.2, "nosing")]) for k in (2, 1)]
             for s in ("train", "valid", "test")}
    jamendo_tree(tmp_path, songs, write=touch)
    ex = jamendo_vd.list_examples(tmp_path)
    assert [e.key for e in ex[:4]] == ["01 - train1_0", "01 - train1_1", "02 - train2_0", "02 - train2_1"]
    assert [e.split for e in ex][::2] == ["train", "train", "test", "test", "valid", "valid"]


def test_urbansound_builds_with_official_folds(tmp_path):
    manual = tmp_path / "m"
    rows_in = [("7061-6-0-0.wav", 1, 6), ("100032-3-0-0.wav", 5, 3), ("15544-5-0-0.wav", 10, 5)]
    urbansound_tree(manual / "UrbanSound8K", rows_in)
    rows = build("urbansound8k", manual, tmp_path)
    assert [r["id"].decode() for r in rows] == ["100032-3-0-0", "15544-5-0-0", "7061-6-0-0"]  # name order
    assert [int(r["label"]) for r in rows] == [3, 5, 6] and [int(r["fold"]) for r in rows] == [5, 10, 1]


def test_first29s_truncates_full_keeps_everything(tmp_path):
    manual = tmp_path / "m"
    for g in gtzan_genre.CLASSES:
        write_audio(manual / g / f"{g}.00000.au", seconds=0.3)
    short = gtzan_genre.GtzanGenre(data_dir=str(tmp_path / "t"), config=AudioConfig(name="x", max_seconds=0.1))
    ex = short.ordered_examples(manual)
    got = list(short._generate_examples(ex[:1]))
    assert len(got[0][1]["audio"]) == 1200 and got[0][1]["duration"] == pytest.approx(0.3, abs=1e-3)
    full = gtzan_genre.GtzanGenre(data_dir=str(tmp_path / "t"), config="full")
    assert len(next(iter(full._generate_examples(ex[:1])))[1]["audio"]) == 3600


# ----------------------------------------------------------------------------- example-list order

def test_order_csv_fixes_the_order_and_is_checked(tmp_path):
    ids = {g: [f"{k}1", f"{k}2"] for k, g in enumerate(ballroom_extended.CLASSES, 1)}
    ballroom_tree(tmp_path, ids, xml=False, write=touch)
    order = [("12", "Chacha", 0), ("11", "Chacha", 0)] + [(i, g, k) for k, g in enumerate(ballroom_extended.CLASSES)
                                                          for i in ids[g] if k > 0]
    lines = [",id,filepath,label"] + [f"{n},{i},ballroom_extended_2016/{g}/{i}.mp3,{k}" for n, (i, g, k) in enumerate(order)]
    (tmp_path / "ballroom_extended.csv").write_text("\n".join(lines) + "\n")
    b = ballroom_extended.BallroomExtended(data_dir=str(tmp_path / "t"))
    assert [e.key for e in b.ordered_examples(tmp_path)][:3] == ["12", "11", "21"]
    (tmp_path / "ballroom_extended.csv").write_text("\n".join(lines[:-1]) + "\n")  # one row short
    with pytest.raises(LayoutError, match="found but not listed"):
        b.ordered_examples(tmp_path)
    lines[1] = lines[1].replace(",0", ",5")  # wrong label
    (tmp_path / "ballroom_extended.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(LayoutError, match="label=5"):
        b.ordered_examples(tmp_path)


# ----------------------------------------------------------------------------- real example lists

def test_listings_reproduce_the_authors_lists(anchors, tmp_path):
    """Trees of empty files named after the anchors' lists give their rows, labels, folds, order."""
    gz = read_anchor(anchors, "gtzan_genre.csv")
    for r in gz:
        touch(tmp_path / "gz" / r["filepath"])
    ex = gtzan_genre.list_examples(tmp_path / "gz")
    assert [(e.key, e.labels["label"]) for e in ex] == [(stem(r["filepath"]), int(r["label"])) for r in gz]

    sm = read_anchor(anchors, "gtzan_speechmusic.csv")
    for r in sm:
        touch(tmp_path / "sm" / r["filepath"])
    ex = gtzan_speechmusic.list_examples(tmp_path / "sm")
    assert [(e.key, e.labels["label"]) for e in ex] == [(r["id"], int(r["label"])) for r in sm]

    emo = read_anchor(anchors, "emoMusic.csv")
    rows = [(int(r["id"]), float(r["label_arousal"]) * 9, float(r["label_valence"]) * 9) for r in emo]
    emo_tree(tmp_path / "emo" / "emoMusic45s", rows[::-1], write=touch)
    ex = emomusic.list_examples(tmp_path / "emo")
    assert [e.key for e in ex] == [r["id"] for r in emo]
    np.testing.assert_allclose([e.labels["arousal"] for e in ex], [float(r["label_arousal"]) for r in emo], atol=1e-6)

    us = read_anchor(anchors, "urbansound.csv")
    urbansound_tree(tmp_path / "us", [(pathlib.PurePosixPath(r["filepath"]).name, int(r["fold"]), int(r["label"]))
                                      for r in us[::-1]], write=touch)
    ex = urbansound8k.list_examples(tmp_path / "us")
    assert [(e.key, e.labels["label"], int(e.labels["fold"])) for e in ex] == \
        [(r["id"], int(r["label"]), int(r["fold"])) for r in us]
    assert len(ex) == 8732


def test_ballroom_and_jamendo_follow_the_authors_lists(anchors, tmp_path):
    """Their row order is the authors' folder-listing order: reproduced with the list in manual_dir."""
    br = read_anchor(anchors, "ballroom_extended.csv")
    ids: dict[str, list[str]] = {g: [] for g in ballroom_extended.CLASSES}
    for r in br:
        ids[pathlib.PurePosixPath(r["filepath"]).parent.name].append(r["id"])
    ballroom_tree(tmp_path / "br", ids, write=touch)
    b = ballroom_extended.BallroomExtended(data_dir=str(tmp_path / "t"))
    ex = b.ordered_examples(tmp_path / "br")  # the XML written in the list's order
    assert [(e.key, e.labels["label"]) for e in ex] == [(r["id"], int(r["label"])) for r in br]
    assert len(ex) == 4180

    jam = read_anchor(anchors, "jamendo_vd.csv")
    songs: dict[str, dict[str, list]] = {s: {} for s in jamendo_vd.SPLITS}
    for r in jam:
        song, _, idx = r["id"].rpartition("_")
        songs[r["category"]].setdefault(song, []).append(
            (int(idx) * 1.0, int(idx) + 1.0, jamendo_vd.CLASSES[int(r["label"])]))
    jamendo_tree(tmp_path / "jam", {s: list(v.items()) for s, v in songs.items()}, write=touch)
    shutil.copy(anchors / "data_csv" / "jamendo_vd.csv", tmp_path / "jam" / "jamendo_vd.csv")
    j = jamendo_vd.JamendoVd(data_dir=str(tmp_path / "t"))
    ex = j.ordered_examples(tmp_path / "jam")
    assert [(e.key, e.labels["label"], e.split) for e in ex] == \
        [(r["id"], int(r["label"]), r["category"]) for r in jam]
    assert [sum(e.split == s for e in ex) for s in ("train", "valid", "test")] == [2592, 821, 673]


# ----------------------------------------------------------------------------- errors

def test_missing_or_malformed_trees_are_clear_errors(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        gtzan_genre.list_examples(tmp_path / "nowhere")
    with pytest.raises(LayoutError, match="no GTZAN genre tree"):
        gtzan_genre.list_examples(tmp_path)
    for g in gtzan_genre.CLASSES[:-1]:
        touch(tmp_path / "genres" / g / f"{g}.00000.au")
    with pytest.raises(LayoutError, match=r"genres/rock: folder missing"):
        gtzan_genre.list_examples(tmp_path)

    urbansound_tree(tmp_path / "us", [("1-0-0-0.wav", 1, 0)], write=touch)
    (tmp_path / "us" / "audio" / "fold1" / "1-0-0-0.wav").unlink()
    with pytest.raises(LayoutError, match=r"1-0-0-0.wav: clip listed"):
        urbansound8k.list_examples(tmp_path / "us")
    (tmp_path / "us" / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name,classID\nx.wav,1\n")
    with pytest.raises(LayoutError, match=r"column\(s\) \['fold'\] missing"):
        urbansound8k.list_examples(tmp_path / "us")

    jamendo_tree(tmp_path / "jam", {s: [(f"{s}song", [(0.0, 1.0, "sing")])] for s in jamendo_vd.SPLITS}, write=touch)
    (tmp_path / "jam" / "jamendo_lab" / "trainsong.lab").write_text("0 1 singing\n")
    with pytest.raises(LayoutError, match=r"trainsong.lab: line 1"):
        jamendo_vd.list_examples(tmp_path / "jam")

    emo_tree(tmp_path / "emo", [(2, 3.0, 4.0)], write=touch)
    (tmp_path / "emo" / "clips_45seconds" / "2.mp3").unlink()
    with pytest.raises(LayoutError, match=r"2.mp3: clip of annotated song 2 missing"):
        emomusic.list_examples(tmp_path / "emo")


def test_build_refuses_a_missing_manual_dir_and_corrupt_audio(tmp_path):
    with pytest.raises(LayoutError, match="manual_dir does not exist"):
        datasets.build("gtzan_speechmusic", tmp_path / "absent", tmp_path / "tfds")
    manual = tmp_path / "m"
    write_audio(manual / "music_wav" / "a.wav")
    (manual / "speech_wav").mkdir()
    (manual / "speech_wav" / "b.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(LayoutError, match=r"speech_wav/b.wav: cannot decode"):
        datasets.build("gtzan_speechmusic", manual, tmp_path / "tfds")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.builder("gtzan", tmp_path)
