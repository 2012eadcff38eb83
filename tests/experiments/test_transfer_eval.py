"""transfer_eval.py end to end on a user's folder task, with a broken file in it
(flags with underscores and with dashes)."""
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _transfer_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "transfer_eval.py"), *args],
                          capture_output=True, text=True, timeout=600)


def _checkpoint(tmp_path, config) -> None:
    """tmp_path/ckpt: a per-clip tagger with random weights."""
    from transfer_jax import checkpoint
    from transfer_jax.model import Tagger, init_variables

    model = Tagger(config, norm="per_clip")
    checkpoint.save_pretrained(tmp_path / "ckpt", init_variables(model, jax.random.key(0)),
                               checkpoint.model_metadata(model))


def _checkpoint_and_tone_task(tmp_path, config, n_per_class: int, name) -> None:
    """`_checkpoint` and tmp_path/task/{low,high}/name(label, i): noisy tones around 200 Hz
    and 2.5 kHz, 1.7 s at 12 kHz."""
    _checkpoint(tmp_path, config)
    rng = np.random.default_rng(0)
    t = np.arange(20_000) / 12_000
    for label, freq in (("low", 200.0), ("high", 2500.0)):
        (tmp_path / "task" / label).mkdir(parents=True)
        for i in range(n_per_class):
            y = 0.4 * np.sin(2 * np.pi * freq * (1 + 0.05 * rng.normal()) * t) + 0.02 * rng.normal(size=t.size)
            sf.write(tmp_path / "task" / label / name(label, i), y.astype(np.float32), 12_000)


def test_folder_task_end_to_end(tmp_path, small_config):
    _checkpoint_and_tone_task(tmp_path, small_config, 12, lambda label, i: f"{i}.wav")
    broken = tmp_path / "task" / "high" / "broken.wav"
    broken.write_bytes(b"not audio at all")

    out = _transfer_eval(f"--checkpoint={tmp_path / 'ckpt'}", f"--audio_dir={tmp_path / 'task'}",
                         "--task=pitch", f"--out={tmp_path / 'out'}", "--layers=1,12345",
                         "--random-seeds=2", "--n-splits=3", "--inner-splits=2", "--n_jobs=1")
    assert out.returncode == 0, out.stderr[-3000:]
    df = pd.read_csv(tmp_path / "out" / "pitch.csv", keep_default_na=False)
    assert {"task", "feature", "layers", "score", "best_params", "protocol"} <= set(df.columns)
    assert list(df.protocol) == ["faithful"] * 6 + ["nested"] * 6  # the default protocols
    for _, part in df.groupby("protocol"):
        assert list(part.feature) == ["convnet", "convnet", "random", "random", "mfcc", "mfcc+convnet"]
        assert list(part.layers.astype(str)) == ["1", "12345", "12345", "12345", "", "12345"]
    assert (df.score > 0.9).all()  # pitch register is trivially separable
    assert (tmp_path / "out" / "pitch.png").exists()
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert list(failures.path) == [str(broken)]
    assert "mfcc+12345" in (tmp_path / "out" / "summary.md").read_text()


def test_regression_from_targets_csv(tmp_path, small_config):
    _checkpoint(tmp_path, small_config)
    t = np.arange(20_000) / 12_000
    rows = []
    (tmp_path / "clips").mkdir()
    for i, freq in enumerate(np.linspace(150.0, 3000.0, 20)):
        sf.write(tmp_path / "clips" / f"{i}.wav", (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 12_000)
        rows.append({"file": f"clips/{i}.wav", "target": np.log(freq)})
    order = np.random.default_rng(0).permutation(len(rows))  # unshuffled KFold: mix the range
    pd.DataFrame([rows[i] for i in order]).to_csv(tmp_path / "targets.csv", index=False)
    out = _transfer_eval(f"--checkpoint={tmp_path / 'ckpt'}", f"--targets-csv={tmp_path / 'targets.csv'}",
                         "--task=pitch_reg", f"--out={tmp_path / 'out'}", "--layers=12345",
                         "--random_seeds=1", "--n_splits=4", "--protocols=faithful", "--n_jobs=1")
    assert out.returncode == 0, out.stderr[-3000:]
    df = pd.read_csv(tmp_path / "out" / "pitch_reg.csv", keep_default_na=False)
    assert list(df.feature) == ["convnet", "random", "mfcc", "mfcc+convnet"]
    assert (df.n_splits == 4).all() and np.isfinite(df.score).all()
    assert df.set_index("feature").score["mfcc"] > 0.5  # R^2: MFCCs track the pitch


def _gtzan_layout(root, per_genre=8):
    """The authors' precomputed layout for a small GTZAN-like task (3 genres)."""
    genres = ["blues", "jazz", "rock"]
    y = np.repeat([0, 1, 2], per_genre)
    rng = np.random.default_rng(0)
    (root / "feats").mkdir()
    (root / "csv").mkdir()
    for k in range(5):
        np.save(root / "feats" / f"gtzan_genre_layer_{k}.npy",
                (rng.normal(size=(len(y), 32)) + 1.5 * y[:, None]).astype(np.float32))
    np.save(root / "feats" / "gtzan_genre_mfcc.npy", rng.normal(size=(len(y), 120)) * 20 + 10 * y[:, None])
    pd.DataFrame({"id": np.repeat(genres, per_genre),
                  "filepath": [f"gtzan_genre/genres/{g}/{g}.{i:05d}.au" for g in genres for i in range(per_genre)],
                  "label": y}).to_csv(root / "csv" / "gtzan_genre.csv")
    splits = root / "splits"
    splits.mkdir()
    for name, ids in (("train", range(0, 4)), ("valid", range(4, 6)), ("test", range(6, 8))):
        (splits / f"{name}_filtered.txt").write_text("".join(f"{g}/{g}.{i:05d}.wav\n" for g in genres for i in ids))
    return splits


def test_precomputed_task_with_split_dir(tmp_path):
    splits = _gtzan_layout(tmp_path)
    args = [f"--precomputed-dir={tmp_path / 'feats'}", f"--csv-dir={tmp_path / 'csv'}", "--task=gtzan_genre",
            f"--out={tmp_path / 'out'}", "--layers=1,12345", "--protocols=faithful", "--n-splits=3", "--n_jobs=1"]
    out = _transfer_eval(*args, f"--split-dir={splits}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "held-out split 12/6/6" in out.stdout
    df = pd.read_csv(tmp_path / "out" / "gtzan_genre.csv", keep_default_na=False)
    assert list(df.protocol) == ["faithful"] * 4 + ["heldout"] * 4  # added by --split-dir
    held = df[df.protocol == "heldout"]
    assert (held.n_splits == 1).all() and (held.score > 0.8).all()
    assert "heldout" in (tmp_path / "out" / "summary.md").read_text()
    (splits / "valid_filtered.txt").write_text("")
    bad = _transfer_eval(*args, f"--split-dir={splits}")
    assert bad.returncode != 0 and "valid_filtered.txt is empty" in bad.stderr
    nosplit = _transfer_eval(*args[:-4], "--protocols=heldout")
    assert nosplit.returncode != 0 and "needs --split_dir" in nosplit.stderr


def test_audio_task_with_split_dir_drops_broken_listed_files(tmp_path, small_config):
    _checkpoint_and_tone_task(tmp_path, small_config, 6, lambda label, i: f"{label}.{i:05d}.wav")
    (tmp_path / "task" / "high" / "high.00099.wav").write_bytes(b"not audio at all")
    splits = tmp_path / "splits"
    splits.mkdir()
    lines = {"train": [0, 1, 2], "valid": [3], "test": [4]}  # clip 5 of each class: in no split
    for name, ids in lines.items():
        extra = ["high/high.00099.au"] if name == "test" else []  # listed, but fails to load
        (splits / f"{name}_filtered.txt").write_text(
            "\n".join([f"{c}/{c}.{i:05d}.au" for c in ("low", "high") for i in ids] + extra) + "\n")
    out = _transfer_eval(f"--checkpoint={tmp_path / 'ckpt'}", f"--audio-dir={tmp_path / 'task'}", "--task=pitch",
                         f"--out={tmp_path / 'out'}", "--layers=12345", "--random-seeds=1", "--n-splits=3",
                         "--protocols=faithful", f"--split-dir={splits}", "--n_jobs=1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "held-out split 6/2/2 (train/valid/test), 1 listed clip(s) dropped" in out.stdout
    df = pd.read_csv(tmp_path / "out" / "pitch.csv", keep_default_na=False)
    held = df[df.protocol == "heldout"]
    assert list(held.feature) == ["convnet", "random", "mfcc", "mfcc+convnet"]
    assert held.set_index("feature").score["mfcc"] == 1.0  # pitch register: trivially separable
