"""The embedded default corpus: synthetic tagged audio clips whose tags are real sound properties.

Why: the real MSD previews are not redistributable, so the project ships a generator that
writes the *same* split layout (data_pipelines.msd_layout) with a genuine multi-label
tagging problem, plus small synthetic downstream tasks for transfer evaluation.

A clip (12 kHz mono float32, peak 0.5-0.9) mixes up to three independent layers:
  * percussion (p=0.65): a drum pattern on the beat -> `percussive` and a tempo band,
    `slow` (60-90 BPM) or `fast` (140-180 BPM); kicks are decaying pitch-swept sines,
    snares decaying noise bursts, with random accents and levels.
  * sustained chords (p=0.7, always when there is no percussion): 2-3 held triads of one
    quality -> `sustained`, `major`/`minor`, register `low` (root 65-165 Hz) or `high`
    (root 440-1050 Hz), timbre `bright` (sawtooth- or square-like, many harmonics) or
    `pure` (sine-like), and `vibrato` (p=0.35; 4.5-7 Hz, 25-60 cents).
  * background noise (p=0.35): white or pink noise at 0-10 dB below the music -> `noisy`.
Levels, pitches, tempi, voicings and patterns are random, so no single statistic gives
all tags. Per-clip randomness comes from a numpy Generator seeded from (seed, split, i),
so output does not depend on the order or the process that computes a clip.

Audio is written as `<7d id>.clip.mp3` via soundfile (libsndfile + LAME, 12 kHz, constant
bitrate at the best quality: about 64 kbit/s), mirroring the 7digital previews; if the
installed libsndfile cannot write MP3, clips are written as `.clip.wav` (16-bit PCM)
instead, which `msd_layout.audio_path` finds just the same.
Timing: the default corpus (1,600 clips of 4 s, 57 MB) costs ~38 CPU-seconds (MP3 encoding
is ~80% of it): about 19 s wall on 2 cores with the default 2 worker processes (measured
19-43 s while other jobs shared those 2 cores); the default target tasks (360 clips) ~2.5 s.
Target tasks (`write_target_tasks`) are 16-bit wav files, class per folder.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf

from data_pipelines import msd_layout

SR = 12_000
TAGS: tuple[str, ...] = (
    "percussive", "sustained", "slow", "fast", "low", "high",
    "bright", "pure", "noisy", "major", "minor", "vibrato",
)
TAG_INDEX = {t: i for i, t in enumerate(TAGS)}
TARGET_TASKS: dict[str, tuple[str, ...]] = {
    "synth_tempo": ("slow", "medium", "fast"),
    "synth_timbre": ("flute", "clarinet", "brass", "plucked"),
    "synth_speech_music": ("music", "speech"),
}
CORPUS_VERSION = 1
_SPLIT_CODE = {"train": 0, "valid": 1, "test": 2}
_MAX_HARMONIC_HZ = 5_500.0


# ----------------------------------------------------------------------------- layers

def _midi_hz(m: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
    """(n,) linear attack, flat, linear release: a held note's amplitude shape."""
    env = np.ones(n)
    a, r = min(attack, n // 2), min(release, n // 2)
    env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    if r:
        env[n - r:] = np.linspace(1.0, 0.0, r)
    return env


def _harmonic_weights(rng: np.random.Generator, f0: float, timbre: str) -> np.ndarray:
    """Amplitudes of harmonics 1..K below the harmonic ceiling for a timbre.

    bright: sawtooth (1/k) or square (odd 1/k) series; pure: fundamental plus a faint 2nd.
    """
    k = np.arange(1, max(1, int(_MAX_HARMONIC_HZ // f0)) + 1, dtype=np.float64)
    if timbre == "pure":
        w = np.where(k == 1, 1.0, 0.0) + np.where(k == 2, rng.uniform(0.0, 0.08), 0.0)
    elif timbre == "bright":
        w = 1.0 / k ** rng.uniform(0.8, 1.1)
        if rng.random() < 0.5:  # square-like: odd harmonics only
            w = np.where(k % 2 == 1, w, 0.0)
    else:
        raise ValueError(f"unknown timbre {timbre!r}")
    return w


def _wavetable(rng: np.random.Generator, weights: np.ndarray, size: int = 4096) -> np.ndarray:
    """(size + 1,) one period of sum_k w_k sin(2 pi k x + phi_k), last sample = first (wrap)."""
    x = np.arange(size + 1) / size
    k = np.nonzero(weights)[0]
    phis = rng.uniform(0, 2 * np.pi, len(k))
    return (weights[k, None] * np.sin(2 * np.pi * (k[:, None] + 1) * x + phis[:, None])).sum(0)


def _tone(rng: np.random.Generator, freq: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n,) band-limited tone with instantaneous frequency `freq` (n,) Hz and harmonic weights.

    Wavetable synthesis: cost O(n) whatever the number of harmonics.
    """
    table = _wavetable(rng, weights)
    size = len(table) - 1
    cycles = np.cumsum(freq) / SR + rng.uniform()
    pos = (cycles - np.floor(cycles)) * size
    i = pos.astype(np.int64)
    frac = pos - i
    return table[i] * (1.0 - frac) + table[i + 1] * frac


def _chords(rng: np.random.Generator, n: int, register: str, timbre: str, quality: str,
            vibrato: bool) -> np.ndarray:
    """(n,) 2-3 held triads of one quality in one register and timbre, optional vibrato."""
    third = 4 if quality == "major" else 3
    lo, hi = (36, 52) if register == "low" else (69, 84)
    n_chords = int(rng.integers(2, 4))
    bounds = np.linspace(0, n, n_chords + 1).astype(int)
    t = np.arange(n) / SR
    out = np.zeros(n)
    for c in range(n_chords):
        start, stop = bounds[c], bounds[c + 1]
        m = stop - start
        root = rng.integers(lo, hi + 1)
        intervals = [0, third, 7]
        if rng.random() < 0.3:  # first inversion keeps the quality, changes the voicing
            intervals = [third, 7, 12]
        env = _envelope(m, int(rng.uniform(0.05, 0.25) * SR), int(0.08 * SR))
        for iv in intervals:
            f0 = float(_midi_hz(root + iv))
            freq = np.full(m, f0)
            if vibrato:
                rate, depth = rng.uniform(4.5, 7.0), rng.uniform(25, 60)
                cents = depth * np.sin(2 * np.pi * rate * t[start:stop] + rng.uniform(0, 6.3))
                freq = f0 * 2.0 ** (cents / 1200.0)
            w = _harmonic_weights(rng, f0 * 1.04 if vibrato else f0, timbre)
            out[start:stop] += rng.uniform(0.7, 1.0) * env * _tone(rng, freq, w)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _kick(rng: np.random.Generator, length: int) -> np.ndarray:
    """(length,) pitch-swept decaying sine (bass drum)."""
    t = np.arange(length) / SR
    f = rng.uniform(45, 70) + rng.uniform(60, 120) * np.exp(-t / 0.03)
    return np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / rng.uniform(0.08, 0.15))


def _noise_hit(rng: np.random.Generator, length: int, decay: float) -> np.ndarray:
    """(length,) decaying white-noise burst (snare / hat)."""
    t = np.arange(length) / SR
    return rng.standard_normal(length) * np.exp(-t / decay)


def _drums(rng: np.random.Generator, n: int, bpm: float) -> np.ndarray:
    """(n,) drum pattern with one hit per beat at `bpm`: kicks on 1/3, snares on 2/4."""
    period = 60.0 / bpm * SR
    offset = rng.uniform(0.0, 0.5) * period
    hit_len = int(0.3 * SR)
    out = np.zeros(n + hit_len)
    snare_decay = rng.uniform(0.03, 0.08)
    kick_level, snare_level = rng.uniform(0.6, 1.0), rng.uniform(0.3, 0.7)
    for b, pos in enumerate(np.arange(offset, n, period)):
        p = int(pos)
        accent = rng.uniform(0.7, 1.0)
        if b % 2 == 0:
            out[p:p + hit_len] += accent * kick_level * _kick(rng, hit_len)
        else:
            out[p:p + hit_len] += accent * snare_level * _noise_hit(rng, hit_len, snare_decay)
    out = out[:n]
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _background_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) unit-RMS white or pink (1/f power) noise."""
    x = rng.standard_normal(n)
    if rng.random() < 0.5:
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n, 1.0 / SR)
        spec /= np.sqrt(np.maximum(f, 20.0))
        x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _peak_normalise(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """float32 audio with a random peak in [0.5, 0.9]."""
    return (x * (rng.uniform(0.5, 0.9) / (np.max(np.abs(x)) + 1e-12))).astype(np.float32)


# ----------------------------------------------------------------------------- clips

def make_clip(rng: np.random.Generator, seconds: float = 4.0,
              sr: int = SR) -> tuple[np.ndarray, np.ndarray]:
    """One tagged clip: audio (round(seconds*sr),) float32 and tags (len(TAGS),) uint8."""
    if sr != SR:
        raise ValueError(f"the synthetic corpus is generated at {SR} Hz, got sr={sr}")
    n = int(round(seconds * sr))
    tags = np.zeros(len(TAGS), np.uint8)
    has_perc = rng.random() < 0.65
    has_tonal = (not has_perc) or rng.random() < 0.55
    mix = np.zeros(n)
    if has_perc:
        band = "slow" if rng.random() < 0.5 else "fast"
        bpm = rng.uniform(60, 90) if band == "slow" else rng.uniform(140, 180)
        mix += rng.uniform(0.5, 1.0) * _drums(rng, n, bpm)
        tags[[TAG_INDEX["percussive"], TAG_INDEX[band]]] = 1
    if has_tonal:
        register = "low" if rng.random() < 0.5 else "high"
        timbre = "bright" if rng.random() < 0.5 else "pure"
        quality = "major" if rng.random() < 0.5 else "minor"
        vibrato = bool(rng.random() < 0.35)
        mix += rng.uniform(0.5, 1.0) * _chords(rng, n, register, timbre, quality, vibrato)
        for tag in ("sustained", register, timbre, quality) + (("vibrato",) if vibrato else ()):
            tags[TAG_INDEX[tag]] = 1
    if rng.random() < 0.35:
        rms = np.sqrt(np.mean(mix**2))
        mix += rms * 10.0 ** (-rng.uniform(0.0, 10.0) / 20.0) * _background_noise(rng, n)
        tags[TAG_INDEX["noisy"]] = 1
    return _peak_normalise(rng, mix), tags


def clip_rng(seed: int, *key: int) -> np.random.Generator:
    """Independent Generator for one clip, keyed by (seed, *key): order/process independent."""
    return np.random.default_rng([int(seed), *(int(k) for k in key)])


# ----------------------------------------------------------------------------- target tasks

def _melody(rng: np.random.Generator, n: int, family: str) -> np.ndarray:
    """(n,) a monophonic melody of 4-8 notes played by one instrument family.

    flute: sine-like with breath noise and gentle vibrato; clarinet: odd harmonics;
    brass: all harmonics, slow attack that brightens; plucked: fast attack, exponential
    decay, upper harmonics dying first.
    """
    n_notes = int(rng.integers(4, 9))
    bounds = np.sort(rng.choice(np.arange(1, 20), n_notes - 1, replace=False)) / 20 * n
    bounds = np.concatenate([[0], bounds.astype(int), [n]])
    k = np.arange(1, 41, dtype=np.float64)
    out = np.zeros(n)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        m = stop - start
        f0 = float(_midi_hz(rng.integers(55, 80)))
        t = np.arange(m) / SR
        k_max = k <= _MAX_HARMONIC_HZ / (f0 * 1.02)
        if family == "flute":
            freq = f0 * 2.0 ** (rng.uniform(5, 15) * np.sin(2 * np.pi * rng.uniform(4, 6) * t) / 1200)
            w = np.where(k == 1, 1.0, 0.0) + np.where((k == 2) | (k == 3), rng.uniform(0.02, 0.1), 0.0)
            env = _envelope(m, int(0.06 * SR), int(0.05 * SR))
            note = _tone(rng, freq, w * k_max) + rng.uniform(0.05, 0.15) * _breath(rng, m)
            note *= env
        elif family == "clarinet":
            w = np.where(k % 2 == 1, 1.0 / k, 0.0) * k_max
            note = _tone(rng, np.full(m, f0), w) * _envelope(m, int(0.03 * SR), int(0.03 * SR))
        elif family == "brass":
            att = int(rng.uniform(0.06, 0.15) * SR)
            env = _envelope(m, att, int(0.05 * SR))
            bright = _tone(rng, np.full(m, f0), k_max / k**0.7)
            dull = _tone(rng, np.full(m, f0), k_max * (k <= 3) / k)
            mixw = np.clip(np.arange(m) / max(att, 1), 0, 1)
            note = env * (mixw * bright + (1 - mixw) * dull)
        elif family == "plucked":
            decay = rng.uniform(0.2, 0.6)
            bright = _tone(rng, np.full(m, f0), k_max / k)
            dull = _tone(rng, np.full(m, f0), k_max * (k <= 2) / k)
            note = (np.exp(-t / (decay / 4)) * bright + np.exp(-t / decay) * dull)
            note *= _envelope(m, int(0.002 * SR), int(0.01 * SR))
        else:
            raise ValueError(f"unknown instrument family {family!r}")
        out[start:stop] += rng.uniform(0.6, 1.0) * note
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _breath(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) unit-RMS band-passed noise (1-4 kHz), the air of a flute."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    spec *= (f > 1000) & (f < 4000)
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


_VOWELS = np.array([  # F1, F2, F3 in Hz: a, e, i, o, u, ae, er
    [730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410],
    [300, 870, 2240], [660, 1720, 2410], [490, 1350, 1690]], dtype=np.float64)


def _formant_filter(x: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """x through a cascade of 2-pole resonators at `formants` (Hz), bandwidth ~80-120 Hz."""
    from scipy.signal import lfilter

    for i, f in enumerate(formants):
        bw = 80.0 + 20.0 * i
        r = np.exp(-np.pi * bw / SR)
        a = [1.0, -2.0 * r * np.cos(2 * np.pi * f / SR), r * r]
        x = lfilter([1.0 - r], a, x)
    return x


def _speech(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) speech-like signal: formant-filtered glottal buzz in syllables (~4 Hz AM).

    Syllables of 120-320 ms, each a vowel (formants jittered), f0 90-250 Hz with a falling
    phrase contour; some syllables open with a fricative (high-passed noise burst); short
    pauses between phrases.
    """
    out = np.zeros(n)
    base_f0 = rng.uniform(90, 250)
    pos = int(rng.uniform(0, 0.2) * SR)
    while pos < n:
        if rng.random() < 0.15:  # pause between phrases
            pos += int(rng.uniform(0.15, 0.4) * SR)
            continue
        m = min(int(rng.uniform(0.12, 0.32) * SR), n - pos)
        if m < 200:
            break
        t = np.arange(m) / SR
        f0 = base_f0 * (1.0 + rng.uniform(-0.15, 0.15)) * (1.0 - 0.3 * t)
        k = np.arange(1, 41, dtype=np.float64)
        buzz = _tone(rng, f0, (k <= _MAX_HARMONIC_HZ / f0.max()) / k)
        formants = _VOWELS[rng.integers(len(_VOWELS))] * rng.uniform(0.9, 1.15)
        syl = _formant_filter(buzz, formants)
        syl *= np.sin(np.pi * np.arange(m) / m) ** 2  # syllabic amplitude modulation
        syl /= np.sqrt(np.mean(syl**2)) + 1e-12
        if rng.random() < 0.35:
            fr = min(int(rng.uniform(0.04, 0.1) * SR), m)
            hiss = np.diff(rng.standard_normal(fr + 1)) * np.hanning(fr) * rng.uniform(0.3, 0.8)
            syl[:fr] += hiss
        out[pos:pos + m] += rng.uniform(0.5, 1.0) * syl
        pos += m + int(rng.uniform(0.01, 0.08) * SR)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


_TEMPO_BPM = {"slow": (60.0, 80.0), "medium": (100.0, 120.0), "fast": (150.0, 180.0)}


def make_target_clip(rng: np.random.Generator, task: str, label: str,
                     seconds: float = 4.0) -> np.ndarray:
    """(round(seconds*SR),) float32 clip of class `label` for a TARGET_TASKS task."""
    if label not in TARGET_TASKS.get(task, ()):
        raise ValueError(f"unknown task/class {task!r}/{label!r}; see TARGET_TASKS")
    n = int(round(seconds * SR))
    if task == "synth_tempo":
        x = _drums(rng, n, rng.uniform(*_TEMPO_BPM[label]))
        if rng.random() < 0.5:  # an unrelated chord bed, so level/timbre do not give the class
            x = x + rng.uniform(0.2, 0.8) * _chords(
                rng, n, rng.choice(["low", "high"]), rng.choice(["bright", "pure"]),
                rng.choice(["major", "minor"]), bool(rng.random() < 0.3))
    elif task == "synth_timbre":
        x = _melody(rng, n, label)
    else:
        x = make_clip(rng, seconds)[0].astype(np.float64) if label == "music" else _speech(rng, n)
    if rng.random() < 0.3:
        x = x + 10.0 ** (-rng.uniform(10, 25) / 20) * _background_noise(rng, n)
    return _peak_normalise(rng, x)


# ----------------------------------------------------------------------------- writing

def default_corpus_dirs(data_root: str | os.PathLike = "data") -> tuple[pathlib.Path, pathlib.Path]:
    """(tagging_root, targets_root) under data_root: synthetic_tagging, synthetic_targets."""
    root = pathlib.Path(data_root)
    return root / "synthetic_tagging", root / "synthetic_targets"


def _mp3_writable() -> bool:
    """Whether this libsndfile can write MP3 that decodes back to the same length."""
    import io

    try:
        buf = io.BytesIO()
        sf.write(buf, np.zeros(SR // 10, np.float32), SR, format="MP3")
        buf.seek(0)
        return len(sf.read(buf)[0]) == SR // 10
    except Exception:  # noqa: BLE001 - any failure means: fall back to wav
        return False


def _write_audio(path: pathlib.Path, audio: np.ndarray) -> None:
    """Write mono 12 kHz audio; MP3 (best-quality constant bitrate) or 16-bit wav by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp3":
        sf.write(path, audio, SR, format="MP3", compression_level=0.0, bitrate_mode="CONSTANT")
    else:
        sf.write(path, audio, SR, subtype="PCM_16")


def _manifest_matches(root: pathlib.Path, params: dict) -> bool:
    path = root / "manifest.json"
    try:
        return json.loads(path.read_text())["params"] == params
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build_atomically(root: pathlib.Path, params: dict, build) -> pathlib.Path:
    """Run build(tmp_dir) in a temporary sibling of root, write manifest.json last, swap in.

    Idempotent: returns at once when root/manifest.json holds the same params. A corpus
    without a matching manifest (interrupted or stale) is replaced as a whole.
    """
    root = pathlib.Path(root)
    if _manifest_matches(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        summary = build(tmp)
        manifest = {"params": params, "summary": summary}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        old = None
        if root.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / root.name)
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _7d_ids(seed: int, total: int) -> list[str]:
    """`total` distinct pseudo-random 7-8 digit 7digital-style ids (deterministic in seed)."""
    ids = clip_rng(seed, 99).choice(99_000_000, size=total, replace=False) + 1_000_000
    return [str(int(i)) for i in ids]


def _chunks(n: int, k: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n, k + 1).astype(int)
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def write_tagging_corpus(root: str | os.PathLike, n_train: int = 1200, n_valid: int = 200,
                         n_test: int = 200, seconds: float = 4.0, seed: int = 0,
                         workers: int | None = None) -> pathlib.Path:
    """Write the synthetic tagging corpus in the MSD split layout; return root.

    root/split/{split}_x_{msd_id,7d_id,filename}.txt, {split}_y.npy, tags.txt;
    root/audio/<a>/<b>/<7d id>.clip.mp3 (a, b: first two digits of the id);
    root/manifest.json last. `workers` processes (default min(cpu count, 4)) only
    change speed, never content.
    """
    ext = "mp3" if _mp3_writable() else "wav"
    counts = {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
    params = {"kind": "synthetic_tagging", "version": CORPUS_VERSION, "sr": SR,
              "seconds": float(seconds), "seed": int(seed), "counts": counts,
              "tags": list(TAGS), "audio_ext": ext}

    def build(tmp: pathlib.Path) -> dict:
        n_workers = workers or min(os.cpu_count() or 1, 4)
        all_ids = _7d_ids(seed, sum(counts.values()))
        split_ids, start = {}, 0
        for split in msd_layout.SPLITS:
            split_ids[split] = all_ids[start:start + counts[split]]
            start += counts[split]
        jobs = [(tmp / "audio", split, seed, seconds, split_ids[split][a:b], ext, a)
                for split in msd_layout.SPLITS for a, b in _chunks(counts[split], n_workers)]
        results = _map(_tagging_chunk, jobs, n_workers)
        summary = {}
        for split, ids in split_ids.items():
            parts = [y for job, y in zip(jobs, results) if job[1] == split]
            y = np.concatenate(parts) if parts else np.zeros((0, len(TAGS)), np.uint8)
            code = _SPLIT_CODE[split]
            index = msd_layout.SplitIndex(
                msd_ids=[f"TRSYN{code * 10**7 + i + 1:013d}" for i in range(len(ids))],
                ids_7d=ids, filenames=[f"{d[0]}/{d[1]}/{d}.npy" for d in ids], labels=y)
            msd_layout.write_split(tmp / "split", split, index)
            summary[split] = {"n": len(ids), "tag_counts": dict(zip(TAGS, y.sum(0).tolist()))}
        msd_layout.write_lines(tmp / "split" / "tags.txt", list(TAGS))
        return summary

    return _build_atomically(pathlib.Path(root), params, build)


def _tagging_chunk(args: tuple) -> np.ndarray:
    """Worker: write clips [offset, offset+len(ids)) of one split; labels (len(ids), n_tags)."""
    audio_root, split, seed, seconds, ids, ext, offset = args
    labels = np.zeros((len(ids), len(TAGS)), np.uint8)
    for j, id7 in enumerate(ids):
        audio, labels[j] = make_clip(clip_rng(seed, _SPLIT_CODE[split], offset + j), seconds)
        _write_audio(pathlib.Path(audio_root) / id7[0] / id7[1] / f"{id7}.clip.{ext}", audio)
    return labels


def _target_chunk(args: tuple) -> int:
    """Worker: write clips [a, b) of one class of one target task; returns the count."""
    out_dir, task, label, seed, seconds, a, b = args
    t_idx, c_idx = list(TARGET_TASKS).index(task), TARGET_TASKS[task].index(label)
    for i in range(a, b):
        audio = make_target_clip(clip_rng(seed, t_idx, c_idx, i), task, label, seconds)
        _write_audio(pathlib.Path(out_dir) / task / label / f"{task}_{label}_{i}.wav", audio)
    return b - a


def write_target_tasks(root: str | os.PathLike, n_per_class: int = 40, seconds: float = 4.0,
                       seed: int = 1, workers: int | None = None) -> pathlib.Path:
    """Write the synthetic downstream tasks; return root.

    root/<task>/<class>/<task>_<class>_<i>.wav (16-bit PCM, 12 kHz) for every task and
    class in TARGET_TASKS, n_per_class clips each, then root/manifest.json last.
    """
    params = {"kind": "synthetic_targets", "version": CORPUS_VERSION, "sr": SR,
              "seconds": float(seconds), "seed": int(seed), "n_per_class": int(n_per_class),
              "tasks": {t: list(c) for t, c in TARGET_TASKS.items()}}

    def build(tmp: pathlib.Path) -> dict:
        n_workers = workers or min(os.cpu_count() or 1, 4)
        args = [(tmp, task, label, seed, seconds, a, b)
                for task, labels in TARGET_TASKS.items() for label in labels
                for a, b in _chunks(int(n_per_class), n_workers)]
        for task, labels in TARGET_TASKS.items():
            for label in labels:
                (tmp / task / label).mkdir(parents=True, exist_ok=True)
        _map(_target_chunk, args, n_workers)
        return {task: {label: int(n_per_class) for label in labels}
                for task, labels in TARGET_TASKS.items()}

    return _build_atomically(pathlib.Path(root), params, build)


def _map(fn, args: list, workers: int) -> list:
    """[fn(a) for a in args], in `workers` processes when > 1.

    Fork start when JAX has not been imported (fast, no `__main__` guard needed); spawn
    once it has, since forking a multithreaded JAX process can deadlock.
    """
    if workers <= 1 or len(args) <= 1:
        return [fn(a) for a in args]
    import multiprocessing
    import sys

    method = "spawn" if "jax" in sys.modules else "fork"
    try:
        ctx = multiprocessing.get_context(method)
    except ValueError:  # no fork on this platform: stay in-process
        return [fn(a) for a in args]
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(fn, args))
