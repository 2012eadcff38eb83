"""Tests for data_pipelines.synthetic: determinism, layout, idempotence, and that tags are real.

The tag tests compute a plain signal feature per clip and require it to separate the
clips carrying a tag from the others with ROC-AUC >= 0.8 over ~120 clips; shuffled labels
give about 0.5, so these would fail if tags and sounds were not tied together.
"""
from __future__ import annotations

import json
import pathlib

import librosa
import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

from data_pipelines import msd_layout, synthetic
from data_pipelines.synthetic import SR, TAG_INDEX, TAGS, TARGET_TASKS

SMALL = dict(n_train=12, n_valid=8, n_test=6, seconds=2.0, seed=3)


def _read_corpus(root: pathlib.Path) -> dict[str, tuple[msd_layout.SplitIndex, list[np.ndarray]]]:
    """{split: (index, decoded audio list)} for a written tagging corpus."""
    out = {}
    for split in msd_layout.SPLITS:
        idx = msd_layout.read_split(root / "split", split)
        audio = []
        for fn in idx.filenames:
            x, sr = sf.read(msd_layout.audio_path(root / "audio", fn), dtype="float32")
            assert sr == SR
            audio.append(x)
        out[split] = (idx, audio)
    return out


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> pathlib.Path:
    return synthetic.write_tagging_corpus(tmp_path_factory.mktemp("tag") / "corpus", workers=1, **SMALL)


# ----------------------------------------------------------------------------- layout

def test_layout_is_readable_and_complete(small_corpus):
    split_dir = small_corpus / "split"
    assert msd_layout.read_tag_names(split_dir) == TAGS
    corpus = _read_corpus(small_corpus)
    all_7d = []
    for split, n in (("train", 12), ("valid", 8), ("test", 6)):
        idx, audio = corpus[split]
        assert len(idx) == n and idx.labels.shape == (n, len(TAGS))
        assert idx.labels.dtype == np.uint8 and idx.labels.sum(1).min() >= 2  # several tags each
        for id7, fn, msd, x in zip(idx.ids_7d, idx.filenames, idx.msd_ids, audio):
            assert fn == f"{id7[0]}/{id7[1]}/{id7}.npy" and len(msd) == 18
            assert msd_layout.audio_path(small_corpus / "audio", fn).name == f"{id7}.clip.mp3"
            assert x.shape == (int(SMALL["seconds"] * SR),) and 0.3 < np.abs(x).max() < 1.0
        all_7d += idx.ids_7d
    assert len(set(all_7d)) == len(all_7d)
    manifest = json.loads((small_corpus / "manifest.json").read_text())
    assert manifest["params"]["counts"] == {"train": 12, "valid": 8, "test": 6}


def test_files_hold_the_labelled_clip(small_corpus):
    """Row i of valid_y.npy and the file of row i are make_clip's clip (seed, 'valid', i)."""
    idx, audio = _read_corpus(small_corpus)["valid"]
    refs = []
    for i in range(len(idx)):
        ref, tags = synthetic.make_clip(synthetic.clip_rng(SMALL["seed"], 1, i), SMALL["seconds"])
        assert np.array_equal(tags, idx.labels[i])
        refs.append(_logmel(ref).ravel())
    decoded = [_logmel(x).ravel() for x in audio]
    corr = np.corrcoef(np.stack(refs), np.stack(decoded))[: len(refs), len(refs):]
    assert np.diag(corr).min() > 0.9  # MP3 keeps the clip ...
    assert (corr.argmax(1) == np.arange(len(refs))).all()  # ... and each file is its own row


def test_determinism_and_workers_do_not_change_content(small_corpus, tmp_path):
    same = synthetic.write_tagging_corpus(tmp_path / "same", workers=2, **SMALL)
    other = synthetic.write_tagging_corpus(tmp_path / "other", workers=1, **{**SMALL, "seed": 4})
    a, b, c = _read_corpus(small_corpus), _read_corpus(same), _read_corpus(other)
    for split in msd_layout.SPLITS:
        (ia, xa), (ib, xb) = a[split], b[split]
        assert (ia.msd_ids, ia.ids_7d, ia.filenames) == (ib.msd_ids, ib.ids_7d, ib.filenames)
        assert np.array_equal(ia.labels, ib.labels)
        assert all(np.array_equal(x, y) for x, y in zip(xa, xb))
    assert a["train"][0].ids_7d != c["train"][0].ids_7d
    assert not np.array_equal(a["train"][0].labels, c["train"][0].labels)
    assert not np.allclose(a["train"][1][0], c["train"][1][0])


def test_make_clip_is_deterministic():
    x1, y1 = synthetic.make_clip(np.random.default_rng(5))
    x2, y2 = synthetic.make_clip(np.random.default_rng(5))
    x3, _ = synthetic.make_clip(np.random.default_rng(6))
    assert x1.dtype == np.float32 and x1.shape == (48_000,) and y1.shape == (len(TAGS),)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)


def test_idempotent_and_half_corpus_regenerated(tmp_path):
    root = tmp_path / "c"
    params = dict(n_train=4, n_valid=2, n_test=2, seconds=1.0, seed=0, workers=1)
    synthetic.write_tagging_corpus(root, **params)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    mtimes = [p.stat().st_mtime_ns for p in files]
    synthetic.write_tagging_corpus(root, **params)
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files
    assert [p.stat().st_mtime_ns for p in files] == mtimes

    (root / "manifest.json").unlink()  # as if interrupted before completion
    (root / "audio" / "junk.txt").write_text("half-written leftovers")
    synthetic.write_tagging_corpus(root, **params)
    assert (root / "manifest.json").is_file() and not (root / "audio" / "junk.txt").exists()
    assert len(_read_corpus(root)["train"][1]) == 4

    synthetic.write_tagging_corpus(root, **{**params, "n_train": 5})  # new params: rebuilt
    assert len(msd_layout.read_split(root / "split", "train")) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary siblings left


# ----------------------------------------------------------------------------- tags are real

def _logmel(x: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=512, hop_length=256, n_mels=64)
    return librosa.power_to_db(mel, ref=np.max, top_db=60.0)


_MAJOR = np.stack([np.roll(np.eye(12)[[0, 4, 7]].sum(0), r) for r in range(12)])
_MINOR = np.stack([np.roll(np.eye(12)[[0, 3, 7]].sum(0), r) for r in range(12)])


def _features(x: np.ndarray) -> dict[str, float]:
    """Plain descriptors of a clip, one per tag family."""
    seconds = len(x) / SR
    s = np.abs(librosa.stft(x, n_fft=512, hop_length=256))
    rms = np.sqrt((s**2).mean(0))
    active = rms > 0.05 * rms.max()
    flatness = librosa.feature.spectral_flatness(S=s)[0][active].mean()
    onset_env = librosa.onset.onset_strength(y=x, sr=SR, hop_length=256)
    onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=SR, hop_length=256)
    # Median-over-time spectrum: held notes dominate it, short drum hits do not.
    s2 = np.abs(librosa.stft(x, n_fft=2048, hop_length=128))
    freqs = librosa.fft_frequencies(sr=SR, n_fft=2048)
    band = (freqs > 50) & (freqs < 3000)
    med = np.median(s2, axis=1)
    # Frame-to-frame movement (cents) of the strongest peak: vibrato moves it, held notes do not.
    sub = s2[band] + 1e-12
    k = np.clip(sub.argmax(0), 1, sub.shape[0] - 2)
    cols = np.arange(sub.shape[1])
    a, b, c = (np.log(sub[k + d, cols]) for d in (-1, 0, 1))
    peak_hz = freqs[band][0] + (k + 0.5 * (a - c) / (a - 2 * b + c - 1e-12)) * (freqs[1] - freqs[0])
    moves = np.abs(np.diff(1200 * np.log2(np.maximum(peak_hz, 30.0))))
    moves = moves[moves < 100]  # ignore note changes
    chroma = librosa.feature.chroma_stft(y=x, sr=SR, n_fft=4096, hop_length=256, tuning=0.0)
    chroma /= np.linalg.norm(chroma, axis=0, keepdims=True) + 1e-9
    return {
        "flatness": float(flatness),
        "onsets_per_s": len(onsets) / seconds,
        "onset_strength": float(onset_env.mean()),
        "median_rms_ratio": float(np.median(rms) / rms.max()),
        "dominant_hz": float(freqs[band][np.argmax(med[band])]),
        "centroid_hz": float((freqs * med).sum() / (med.sum() + 1e-12)),
        "peak_wobble_cents": float(np.median(moves)) if len(moves) else 0.0,
        "major_minus_minor": float(np.median((_MAJOR @ chroma).max(0) - (_MINOR @ chroma).max(0))),
    }


@pytest.fixture(scope="module")
def tagged_clips() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels (120, n_tags) and per-feature arrays (120,) of clips from make_clip."""
    labels, feats = [], []
    for i in range(120):
        x, y = synthetic.make_clip(synthetic.clip_rng(11, 0, i))
        labels.append(y)
        feats.append(_features(x))
    return np.stack(labels), {k: np.array([f[k] for f in feats]) for k in feats[0]}


# (tag, feature, contrast tag or None for "all other clips", restrict to clips with these tags)
TAG_CHECKS = [
    ("noisy", "flatness", None, ()),
    ("percussive", "onset_strength", None, ()),
    ("sustained", "median_rms_ratio", None, ()),
    ("fast", "onsets_per_s", "slow", ()),
    ("high", "dominant_hz", "low", ()),
    ("bright", "centroid_hz", "pure", ("!noisy",)),
    ("vibrato", "peak_wobble_cents", None, ("sustained",)),
    ("major", "major_minus_minor", "minor", ()),
]


@pytest.mark.parametrize("tag, feature, contrast, within", TAG_CHECKS, ids=[c[0] for c in TAG_CHECKS])
def test_tag_is_a_property_of_the_sound(tagged_clips, tag, feature, contrast, within):
    y, feats = tagged_clips
    keep = np.ones(len(y), bool)
    for cond in within:
        keep &= (y[:, TAG_INDEX[cond.lstrip("!")]] == 1) != cond.startswith("!")
    if contrast is not None:
        keep &= (y[:, TAG_INDEX[tag]] + y[:, TAG_INDEX[contrast]]) > 0
    target, values = y[keep, TAG_INDEX[tag]], feats[feature][keep]
    assert 10 <= target.sum() <= len(target) - 10, "too few clips on one side to judge"
    auc = roc_auc_score(target, values)
    assert auc >= 0.8, f"{feature} separates {tag!r} from {contrast or 'the rest'} with AUC {auc:.2f}"
    shuffled = roc_auc_score(np.random.default_rng(0).permutation(target), values)
    assert abs(shuffled - 0.5) < 0.2


def test_tags_are_not_one_statistic(tagged_clips):
    """Tags co-occur in varied combinations: many distinct label rows, several tags per clip."""
    y, _ = tagged_clips
    assert y.sum(1).min() >= 2 and 3.0 <= y.sum(1).mean() <= 6.5
    assert len({tuple(r) for r in y}) >= 40
    assert ((y.mean(0) > 0.1) & (y.mean(0) < 0.9)).all()
    for a, b in (("slow", "fast"), ("low", "high"), ("bright", "pure"), ("major", "minor")):
        assert not (y[:, TAG_INDEX[a]] & y[:, TAG_INDEX[b]]).any()


# ----------------------------------------------------------------------------- target tasks

def test_target_tasks_layout_and_tempo(tmp_path):
    root = synthetic.write_target_tasks(tmp_path / "t", n_per_class=6, seconds=4.0, workers=1)
    onsets = {}
    for task, classes in TARGET_TASKS.items():
        assert sorted(p.name for p in (root / task).iterdir()) == sorted(classes)
        for label in classes:
            files = sorted((root / task / label).iterdir())
            assert [p.name for p in files] == sorted(f"{task}_{label}_{i}.wav" for i in range(6))
            for p in files:
                info = sf.info(p)
                assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", 48_000)
            if task == "synth_tempo":
                onsets[label] = np.mean([_features(sf.read(p, dtype="float32")[0])["onsets_per_s"] for p in files])
    assert onsets["slow"] + 0.3 < onsets["medium"] < onsets["fast"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["summary"]["synth_timbre"] == {c: 6 for c in TARGET_TASKS["synth_timbre"]}
    mtime = (root / "manifest.json").stat().st_mtime_ns
    synthetic.write_target_tasks(tmp_path / "t", n_per_class=6, seconds=4.0)
    assert (root / "manifest.json").stat().st_mtime_ns == mtime


def test_default_corpus_dirs():
    assert synthetic.default_corpus_dirs("d") == (pathlib.Path("d/synthetic_tagging"), pathlib.Path("d/synthetic_targets"))
