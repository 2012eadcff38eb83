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


def test_folder_task_end_to_end(tmp_path, small_config):
    from transfer_jax import checkpoint
    from transfer_jax.model import Tagger, init_variables

    model = Tagger(small_config, norm="per_clip")
    checkpoint.save_pretrained(tmp_path / "ckpt", init_variables(model, jax.random.key(0)),
                               checkpoint.model_metadata(model))
    rng = np.random.default_rng(0)
    t = np.arange(20_000) / 12_000
    for label, freq in (("low", 200.0), ("high", 2500.0)):
        (tmp_path / "task" / label).mkdir(parents=True)
        for i in range(12):
            y = 0.4 * np.sin(2 * np.pi * freq * (1 + 0.05 * rng.normal()) * t) + 0.02 * rng.normal(size=t.size)
            sf.write(tmp_path / "task" / label / f"{i}.wav", y.astype(np.float32), 12_000)
    broken = tmp_path / "task" / "high" / "broken.wav"
    broken.write_bytes(b"not audio at all")

    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "transfer_eval.py"),
                          f"--checkpoint={tmp_path / 'ckpt'}", f"--audio_dir={tmp_path / 'task'}",
                          "--task=pitch", f"--out={tmp_path / 'out'}", "--layers=1,12345",
                          "--random-seeds=2", "--n-splits=3", "--inner-splits=2", "--n_jobs=1"],
                         capture_output=True, text=True, timeout=600)
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
    from transfer_jax import checkpoint
    from transfer_jax.model import Tagger, init_variables

    model = Tagger(small_config, norm="per_clip")
    checkpoint.save_pretrained(tmp_path / "ckpt", init_variables(model, jax.random.key(0)),
                               checkpoint.model_metadata(model))
    t = np.arange(20_000) / 12_000
    rows = []
    (tmp_path / "clips").mkdir()
    for i, freq in enumerate(np.linspace(150.0, 3000.0, 20)):
        sf.write(tmp_path / "clips" / f"{i}.wav", (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 12_000)
        rows.append({"file": f"clips/{i}.wav", "target": np.log(freq)})
    order = np.random.default_rng(0).permutation(len(rows))  # unshuffled KFold: mix the range
    pd.DataFrame([rows[i] for i in order]).to_csv(tmp_path / "targets.csv", index=False)
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "transfer_eval.py"),
                          f"--checkpoint={tmp_path / 'ckpt'}", f"--targets-csv={tmp_path / 'targets.csv'}",
                          "--task=pitch_reg", f"--out={tmp_path / 'out'}", "--layers=12345",
                          "--random_seeds=1", "--n_splits=4", "--protocols=faithful", "--n_jobs=1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    df = pd.read_csv(tmp_path / "out" / "pitch_reg.csv", keep_default_na=False)
    assert list(df.feature) == ["convnet", "random", "mfcc", "mfcc+convnet"]
    assert (df.n_splits == 4).all() and np.isfinite(df.score).all()
    assert df.set_index("feature").score["mfcc"] > 0.5  # R^2: MFCCs track the pitch
