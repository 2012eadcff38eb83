"""The main job end to end, on a tiny synthetic corpus: kill -9 mid-run, resume, lose nothing."""
import csv
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "train_tagger.py"


def _args(workdir, data_root):
    return [sys.executable, str(SCRIPT), f"--config.workdir={workdir}", f"--config.data.root={data_root}",
            "--config.data.n_train=64", "--config.data.n_valid=32", "--config.data.n_test=32",
            "--config.data.clip_seconds=1.6", "--config.frontend.n_samples=18176",
            "--config.model.pools=((2,2),(3,2),(2,2),(2,2),(4,2))",
            "--config.train.epochs=6", "--config.train.batch_size=16", "--config.train.eval_batch_size=32",
            "--config.train.checkpoint_every_steps=1"]


def _steps(workdir):
    d = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    out = subprocess.run(_args(base / "run", base / "data"), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return base, out


def test_default_job_writes_everything(uninterrupted):
    base, out = uninterrupted
    run = base / "run"
    assert "valid ROC-AUC" in out.stdout and "test (best checkpoint)" in out.stdout
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(0.0 <= float(r["valid_roc_auc"]) <= 1.0 for r in rows)
    assert list((run / "tensorboard").iterdir()), "no TensorBoard event file"
    assert (run / "results.json").exists()
    from transfer_jax.checkpoint import load_pretrained

    model, variables = load_pretrained(run / "checkpoints")
    assert model.norm == "running" and model.config.n_classes == 12


def test_kill_9_then_resume_loses_nothing(uninterrupted):
    base, _ = uninterrupted
    run = base / "killed"
    proc = subprocess.Popen(_args(run, base / "data"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and not any(s >= 7 for s in _steps(run)):
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(_steps(run))
    assert 7 <= killed_at < 24

    out = subprocess.run(_args(run, base / "data"), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Resuming from step {killed_at}" in out.stdout
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]

    from transfer_jax.checkpoint import load_pretrained

    _, resumed = load_pretrained(run / "checkpoints", which="latest")
    _, reference = load_pretrained(base / "run" / "checkpoints", which="latest")
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, atol=1e-6)
