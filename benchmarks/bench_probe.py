"""Time the downstream evaluation: naive GridSearchCV vs precomputed kernels vs the JAX ridge screen.

    python benchmarks/bench_probe.py [--anchors DIR] [--naive-jobs 2] [--skip-naive]

On the authors' features (../shared/anchors/choi2017), one feature set per task:
- naive: GridSearchCV(Pipeline(passthrough, SVC/SVR), the paper's 32 settings, the 0.18
  folds, n_jobs=--naive-jobs), as the authors ran it (they also searched a no-op scaler
  switch, i.e. twice these settings);
- kernels: `probe.evaluate(scale=False)` (precomputed kernels shared across folds, C
  values and equal gammas; one process);
- ridge: `linear_probe.screen` of all 33 feature sets x 7 lambdas x 10 folds at once
  (first call includes jit compilation, second is warm).
Plus the ridge screen on random features of UrbanSound8K's size (8,732 x 280, 10 classes).
Prints a markdown table (seconds, and the scores, which must agree between naive and kernels).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.svm import SVC, SVR  # noqa: E402

from transfer_jax import evaluation, linear_probe, probe  # noqa: E402
from transfer_jax.folds import paper_folds  # noqa: E402

ANCHORS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "anchors" / "choi2017"
CASES = (("gtzan_speechmusic", "12345"), ("emoMusic_a", "12345"), ("ballroom_extended", "1"))


def naive(X, y, task_type, n_jobs):
    """The authors' GridSearchCV (without the duplicate no-op scaler half)."""
    folds = paper_folds(y, task_type)
    pipe = Pipeline([("scaler", "passthrough"), ("model", SVC() if task_type == "classification" else SVR())])
    grid = [{f"model__{k}": v for k, v in g.items()} for g in probe.PAPER_GRID]
    # iid=True weighting by hand (removed from scikit-learn in 0.24)
    search = GridSearchCV(pipe, grid, cv=folds, n_jobs=n_jobs, refit=False,
                          scoring="accuracy" if task_type == "classification" else "r2").fit(X, y)
    sizes = np.array([len(te) for _, te in folds])
    splits = np.stack([search.cv_results_[f"split{k}_test_score"] for k in range(len(folds))], 1)
    return float((splits @ sizes / sizes.sum()).max())


def ridge_all(task, repeats=2):
    """All 33 feature sets at once; returns (seconds per call, best scores)."""
    combos = probe.layer_combinations()
    blocks = [task.sets.mfcc.shape[1]] + [32] * 5
    idx = [[int(d) for d in c] for c in combos] + [[0], list(range(6))]
    X = np.concatenate([task.sets.mfcc, task.sets.convnet.reshape(len(task.y), -1)], 1)
    folds = task.folds or paper_folds(task.y, task.task_type)
    masks = linear_probe.block_masks(blocks, idx)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = linear_probe.screen(X, task.y, masks, folds, task_type=task.task_type)
        times.append(time.perf_counter() - t)
    return times, res


def urbansound_size(repeats=2):
    rng = np.random.default_rng(0)
    n = 8732
    y = rng.integers(0, 10, n)
    X = rng.normal(size=(n, 280)).astype(np.float32) + y[:, None] * 0.05
    folds = paper_folds(y, "classification")
    combos = probe.layer_combinations()
    idx = [[int(d) for d in c] for c in combos] + [[0], list(range(6))]
    masks = linear_probe.block_masks([120] + [32] * 5, idx)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        linear_probe.screen(X, y, masks, folds)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", type=pathlib.Path, default=ANCHORS)
    ap.add_argument("--naive-jobs", type=int, default=2)
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print("| task | feature set | naive GridSearchCV (s) | precomputed kernels (s) | speed-up | "
          "score naive | score kernels | ridge, 33 sets, cold / warm (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, layers in CASES:
        task = evaluation.load_precomputed(args.anchors / "data_feats", args.anchors / "data_csv", name)
        X = task.sets.convnet[:, [int(d) - 1 for d in layers]].reshape(len(task.y), -1)
        s_naive, t_naive = float("nan"), float("nan")
        if not args.skip_naive:
            t = time.perf_counter()
            s_naive = naive(X, task.y, task.task_type, args.naive_jobs)
            t_naive = time.perf_counter() - t
        t = time.perf_counter()
        s_fast = probe.evaluate(X, task.y, task_type=task.task_type, scale=False).score
        t_fast = time.perf_counter() - t
        ridge_times, _ = ridge_all(task)
        print(f"| {name} | {layers} | {t_naive:.1f} | {t_fast:.1f} | {t_naive / t_fast:.1f}x | {s_naive:.5f} | "
              f"{s_fast:.5f} | {ridge_times[0]:.1f} / {ridge_times[1]:.1f} |", flush=True)
    us = urbansound_size()
    print(f"\nridge screen, UrbanSound8K size (8,732 x 280, 10 classes, 33 sets x 7 lambdas x 10 folds): "
          f"cold {us[0]:.1f} s, warm {us[1]:.1f} s")


if __name__ == "__main__":
    main()
