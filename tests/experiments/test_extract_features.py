"""experiments/extract_features.py end to end, on a tiny random-weights checkpoint (no
anchors needed): output rows = `extract(...)` on the same audio in every norm mode, NaN
rows + failures.tsv for bad files, resuming after a SIGKILL, dataset statistics saved and
reused; and import_weights.py --calibrate -> tag_audio.py / extract_features.py defaults.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "extract_features.py"
N_SAMPLES = 18_176  # 1.5 s at 12 kHz, 71 frames


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint, 6 audio files (short, long, stereo, 22.05 / 8 kHz, .npy) plus a
    broken and a missing one, and the list file (relative and absolute entries)."""
    import jax
    import soundfile as sf

    from transfer_jax import checkpoint
    from transfer_jax.config import FrontendConfig, ModelConfig
    from transfer_jax.model import Tagger, init_variables

    d = tmp_path_factory.mktemp("extract_features")
    cfg = ModelConfig(pools=((2, 2), (3, 2), (2, 2), (2, 2), (4, 2)),
                      frontend=FrontendConfig(n_samples=N_SAMPLES))
    model = Tagger(cfg, norm="per_clip")
    checkpoint.save_pretrained(d / "ckpt", init_variables(model, jax.random.key(0)),
                               checkpoint.model_metadata(model, db_ref="clip"))
    rng = np.random.default_rng(0)

    def tone(seconds, sr, f0, channels=1):
        t = np.arange(int(seconds * sr)) / sr
        y = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.normal(size=t.size)
        return np.stack([y, 0.5 * y], axis=1) if channels == 2 else y

    entries = []
    for name, seconds, sr, f0, ch in (("short.wav", 0.6, 12_000, 220, 1), ("exact.flac", 1.6, 12_000, 440, 1),
                                      ("long.wav", 4.0, 22_050, 330, 1), ("stereo.wav", 2.0, 8_000, 550, 2),
                                      ("loud.ogg", 2.0, 12_000, 880, 1)):
        sf.write(d / name, tone(seconds, sr, f0, ch).astype(np.float32), sr)
        entries.append(name)
    np.save(d / "samples.npy", tone(2.2, 12_000, 150).astype(np.float32))
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    entries[2:2] = ["broken.wav", "samples.npy"]
    entries.append("missing.mp3")
    lines = [e if i % 2 else str(d / e) for i, e in enumerate(entries)]  # relative to --root
    (d / "list.txt").write_text("\n".join(lines[:4]) + "\n\n" + "\n".join(lines[4:]) + "\n")
    return {"dir": d, "ckpt": d / "ckpt", "list": d / "list.txt", "entries": lines,
            "bad": {"broken.wav", "missing.mp3"}}


def _run(setup, out, *extra):
    argv = ["--checkpoint", str(setup["ckpt"]), str(setup["list"]), str(out),
            "--root", str(setup["dir"]), "--no-progress", *extra]
    return _script("extract_features").main(argv)


def _good(setup):
    from transfer_jax.audio import load_audio

    idx = [i for i, e in enumerate(setup["entries"]) if Path(e).name not in setup["bad"]]
    waves = [load_audio(setup["dir"] / Path(setup["entries"][i]).name, 12_000) for i in idx]
    return idx, waves


def test_per_clip_rows_equal_extract_and_failures(setup, tmp_path, capsys):
    from transfer_jax import checkpoint
    from transfer_jax.extraction import extract

    out = tmp_path / "feats.npy"
    assert _run(setup, out, "--norm", "per-clip", "--chunk-size", "3", "--batch-size", "4") == 0
    feats = np.load(out)
    n = len(setup["entries"])
    assert feats.shape == (n, 160) and feats.dtype == np.float32
    bad = [i for i, e in enumerate(setup["entries"]) if Path(e).name in setup["bad"]]
    assert np.isnan(feats[bad]).all()
    idx, waves = _good(setup)
    assert np.isfinite(feats[idx]).all()
    model, variables = checkpoint.load_pretrained(setup["ckpt"])
    want = extract(variables, waves, model=model, norm="per_clip", long_policy="first", batch_size=4)
    np.testing.assert_allclose(feats[idx], want.reshape(len(idx), -1), rtol=0, atol=1e-5)

    lines = (tmp_path / "feats.failures.tsv").read_text().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [setup["entries"][i] for i in bad]
    assert all(len(ln.split("\t")) == 2 and ln.split("\t")[1] for ln in lines)
    assert "file not found" in lines[1]
    meta = json.loads((tmp_path / "feats.json").read_text())
    assert meta["norm"] == "per-clip" and meta["short_policy"] == "tile" and meta["n_failed"] == 2
    assert not (tmp_path / "feats.partial.npy").exists() and not (tmp_path / "feats.partial.json").exists()

    # a rerun with the same options has nothing to do; layer selection keeps the columns
    capsys.readouterr()
    assert _run(setup, out, "--norm", "per-clip", "--chunk-size", "3", "--batch-size", "4") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _run(setup, tmp_path / "l135.npy", "--norm", "per_clip", "--layers", "135") == 0
    cols = np.r_[0:32, 64:96, 128:160]
    np.testing.assert_allclose(np.load(tmp_path / "l135.npy"), feats[:, cols], rtol=0, atol=1e-5)
    # zero-padding instead of tiling changes only the short clip
    assert _run(setup, tmp_path / "pad.npy", "--norm", "per-clip", "--short-policy", "pad") == 0
    diff = np.abs(np.load(tmp_path / "pad.npy") - feats)[idx].max(axis=1)
    assert idx[0] == 0 and diff[0] > 1e-3 and diff[1:].max() < 1e-5


def test_batch_and_mean_policies_equal_extract(setup, tmp_path):
    from transfer_jax import checkpoint
    from transfer_jax.extraction import extract

    model, variables = checkpoint.load_pretrained(setup["ckpt"])
    idx, waves = _good(setup)
    good = tmp_path / "good.txt"  # batch mode: the given batching holds when no file fails
    good.write_text("\n".join(setup["entries"][i] for i in idx) + "\n")
    out = tmp_path / "b.npy"
    argv = ["--checkpoint", str(setup["ckpt"]), str(good), str(out), "--root", str(setup["dir"]),
            "--norm", "batch", "--batch-size", "3", "--chunk-size", "2", "--no-progress"]
    assert _script("extract_features").main(argv) == 0
    want = extract(variables, waves, model=model, norm="batch", long_policy="first", batch_size=3)
    np.testing.assert_allclose(np.load(out), want.reshape(len(idx), -1), rtol=0, atol=1e-5)

    assert _run(setup, tmp_path / "m.npy", "--norm", "per-clip", "--long-policy", "mean") == 0
    want = extract(variables, waves, model=model, norm="per_clip", long_policy="mean", batch_size=16)
    np.testing.assert_allclose(np.load(tmp_path / "m.npy")[idx], want.reshape(len(idx), -1),
                               rtol=0, atol=1e-5)


def test_dataset_mode_saves_and_reuses_stats(setup, tmp_path, capsys):
    from transfer_jax import checkpoint
    from transfer_jax import dataset_stats as ds
    from transfer_jax.audio import segment
    from transfer_jax.extraction import extract

    model, variables = checkpoint.load_pretrained(setup["ckpt"])
    idx, waves = _good(setup)
    out = tmp_path / "d.npy"
    assert _run(setup, out, "--norm", "dataset", "--chunk-size", "4") == 0
    feats = np.load(out)
    # the statistics of the good files' first inputs (the broken ones are skipped)
    inputs = np.stack([segment(w, N_SAMPLES, "tile")[0] for w in waves])
    stats, db_ref = ds.compute_dataset_stats(model, variables, inputs, batch_size=16)
    saved, saved_ref, info = ds.load_stats(tmp_path / "d.stats.npz")
    assert saved_ref == db_ref and info["n_inputs"] == len(idx)
    for layer in stats:
        np.testing.assert_allclose(saved[layer]["var"], stats[layer]["var"], rtol=1e-5)
    dmodel, dvars = ds.dataset_model(model, variables, stats)
    want = extract(dvars, waves, model=dmodel, ref=db_ref, long_policy="first")
    np.testing.assert_allclose(feats[idx], want.reshape(len(idx), -1), rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "d.json").read_text())["db_ref"] == db_ref

    # reused with --stats: same rows; another calibration set: other rows
    assert _run(setup, tmp_path / "s.npy", "--stats", str(tmp_path / "d.stats.npz")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), feats)
    cal = tmp_path / "cal.txt"
    cal.write_text(str(setup["dir"] / "long.wav") + "\n" + str(setup["dir"] / "loud.ogg") + "\n")
    assert _run(setup, tmp_path / "c.npy", "--calibration", str(cal)) == 0
    assert np.nanmax(np.abs(np.load(tmp_path / "c.npy") - feats)) > 1e-3
    assert ds.load_stats(tmp_path / "c.stats.npz")[2]["n_files"] == 2


def _wait_and_kill(cmd, partial_json, timeout=120.0):
    """Starts cmd, SIGKILLs it once a chunk is recorded; returns rows done then (0 if the
    run finished before it could be caught)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = json.loads(partial_json.read_text())["done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done > 0:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return done
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stdout.read().decode()
    return 0


def test_resume_after_sigkill(setup, tmp_path):
    """A run killed with SIGKILL after its first chunks resumes where it stopped, and the
    result equals an uninterrupted run (dataset statistics reused, not recomputed)."""
    n_files = 48
    entries = [str(setup["dir"] / Path(e).name) for e in setup["entries"]]
    big = tmp_path / "big.txt"
    big.write_text("\n".join(entries[i % len(entries)] for i in range(n_files)) + "\n")
    out = tmp_path / "r.npy"
    args = ["--checkpoint", str(setup["ckpt"]), str(big), str(out), "--norm", "dataset",
            "--chunk-size", "4", "--batch-size", "4", "--no-progress"]
    for _ in range(3):  # a fast machine may finish before the kill: start over
        for p in tmp_path.glob("r.*"):
            p.unlink()
        done = _wait_and_kill([sys.executable, str(SCRIPT), *args], tmp_path / "r.partial.json")
        if 0 < done < n_files and (tmp_path / "r.partial.npy").exists():
            break
    else:
        pytest.fail("the run always finished before it could be killed")
    assert not out.exists()
    got = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    resumed = int(got.stdout.split("resuming at row ")[1].split()[0])
    print(f"killed after {done} rows, resumed at row {resumed}")
    assert done <= resumed < n_files and resumed % 4 == 0
    assert "reusing dataset statistics" in got.stderr
    assert not (tmp_path / "r.partial.npy").exists()

    ref = tmp_path / "ref.npy"
    assert _script("extract_features").main([*args[:2], str(big), str(ref), *args[4:]]) == 0
    np.testing.assert_allclose(np.load(out), np.load(ref), rtol=0, atol=1e-6, equal_nan=True)
    assert len((tmp_path / "r.failures.tsv").read_text().splitlines()) == 2 * n_files // len(entries)


def test_bad_arguments(setup, tmp_path, capsys):
    assert _run(setup, tmp_path / "x.npy", "--layers", "16") == 1
    assert "layers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(setup, tmp_path / "x.npy", "--norm", "batch", "--stats", "s.npz")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert _script("extract_features").main(["--checkpoint", str(setup["ckpt"]), str(empty),
                                             str(tmp_path / "e.npy")]) == 1


def test_calibrated_import_is_the_default_for_tagging_and_extraction(setup, tmp_path, capsys):
    """import_weights --calibrate stores dataset statistics; tag_audio and extract_features
    then use them (norm running + the stored dB reference) for single files."""
    import dataclasses

    sys.path.insert(0, str(REPO / "tests" / "transfer_jax"))
    from test_weights import write_h5

    from transfer_jax import checkpoint, frontend
    from transfer_jax.audio import fit_length, load_audio
    from transfer_jax.extraction import extract
    from transfer_jax.model import Tagger
    from transfer_jax.weights import load_choi2017_h5, tag_probabilities

    h5 = write_h5(tmp_path / "weights.hdf5")
    files = [setup["dir"] / n for n in ("short.wav", "long.wav", "samples.npy")]
    cal = tmp_path / "cal.txt"
    cal.write_text("\n".join(map(str, files + [setup["dir"] / "broken.wav"])) + "\n")
    ck = tmp_path / "calibrated"
    assert _script("import_weights").main(["--h5", str(h5), "--out", str(ck), "--calibrate", str(cal)]) == 0
    meta = checkpoint.load_metadata(ck)
    assert meta["norm"] == "running" and meta["calibrated_on"] == 3 and meta["calibration_failed"] == 1
    model, variables = checkpoint.load_pretrained(ck)
    assert model.norm == "running"

    published, _ = load_choi2017_h5(h5)
    clips = np.stack([fit_length(load_audio(f), 348_000) for f in files])
    raw = frontend.log_mel(clips, dataclasses.replace(model.config.frontend, top_db=np.inf), 0.0)
    assert meta["db_ref"] == pytest.approx(float(np.max(raw)), abs=1e-5)  # the batch maximum
    # a single file tagged with the calibrated checkpoint = that file in the calibration batch
    want = tag_probabilities(Tagger(norm="batch"), published, clips)
    capsys.readouterr()
    assert _script("tag_audio").main(["--checkpoint", str(ck), "--top-k", "50", str(files[1])]) == 0
    text = capsys.readouterr().out
    assert f"norm=running db_ref={meta['db_ref']}" in text
    printed = {ln.rsplit(None, 1)[0].strip(): float(ln.rsplit(None, 1)[1])
               for ln in text.splitlines() if ln.startswith("  ")}
    assert len(printed) == 50
    from transfer_jax.config import MSD_TAGS

    for tag, p in printed.items():
        assert p == pytest.approx(want[1][MSD_TAGS.index(tag)], abs=2e-3)

    lst = tmp_path / "one.txt"
    lst.write_text(str(files[1]) + "\n")
    out = tmp_path / "one.npy"
    assert _script("extract_features").main(["--checkpoint", str(ck), str(lst), str(out), "--no-progress"]) == 0
    assert json.loads((tmp_path / "one.json").read_text())["norm"] == "dataset"
    batch_feats = extract(published, clips, model=Tagger(norm="batch"), batch_size=3, long_policy="first")
    np.testing.assert_allclose(np.load(out)[0], batch_feats[1].reshape(-1), rtol=0, atol=1e-4)
