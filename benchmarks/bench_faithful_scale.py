"""Time the faithful protocol at GTZAN and UrbanSound8K size (issue 5's speed targets).

    nice -n 5 python benchmarks/bench_faithful_scale.py gtzan [--n-jobs 2]
    nice -n 5 python benchmarks/bench_faithful_scale.py urbansound [--sets 12345,mfcc] [--folds 10]
    nice -n 5 python benchmarks/bench_faithful_scale.py urbansound --sets all [--cache-dir DIR]

There are no GTZAN genre, UrbanSound8K or Jamendo features here, so all three tasks are
synthetic stand-ins with the real tasks' labels and folds and the released features' scales:

- labels (and UrbanSound8K's predefined `fold` column, Jamendo's `category`) are the
  authors' `gtzan_genre.csv` (10 genres x 100, csv order), `urbansound.csv` (8,732 clips,
  10 classes of 374 to 1,000, 10 folds of 806 to 990) and `jamendo_vd.csv` (4,086
  segments, 2 classes, train+valid 3,413 vs test 673: one split);
- class k of the task is drawn from the k-th largest Ballroom class of the released
  features (`ballroom_extended_layer_*.npy`, `_mfcc.npy`; 10 classes of 252 to 529 rows):
  each synthetic clip is `a + u (b - a)` for two random rows a, b of that class and
  u ~ U(0, 1), the same (a, b, u) for the convnet layers (5 x 32 = 160-d) and the MFCC
  (120-d, unscaled, magnitudes up to ~400); then blended towards a random row c of any of
  the classes, (1 - l) x + l c with l ~ U(0, BLEND) (UrbanSound8K, Jamendo: 0.65, GTZAN: 0),
  so that the SVM accuracy is near the paper's for that task (see BLEND). Magnitudes and
  per-layer statistics are those of real convnet and MFCC features; the rows are new.

`gtzan`, `jamendo` (and `urbansound --sets all`): the full faithful protocol of all 33 feature sets
(31 combinations, MFCC, MFCC+12345) through `evaluation.evaluate_task(protocols=
["faithful"], n_jobs=...)`, as `transfer_eval.py` runs it; wall time against the 5-minute
(GTZAN) or 2-hour (UrbanSound8K) target. No cache unless --cache-dir (then a rerun resumes).
`urbansound`: the faithful protocol of the given feature sets (each in its own process
when n_jobs > 1) over the predefined folds, or over the first --folds of them; each
fold's wall time as it finishes (a line of JSON), per-set wall time, then a naive
extrapolation to 33 sets (mean set time x 33 / n_jobs; docs/evaluation.md weighs the
sets instead).
Prints the load average (1 min) before and after each measurement: the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from transfer_jax import evaluation, probe  # noqa: E402

ANCHORS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "anchors" / "choi2017"


# Blend towards random rows of any class, calibrated so that one fold's SVM accuracy is near
# the paper's (layers 12345: GTZAN .898, UrbanSound8K .688): measured on fold 0 with three
# RBF settings, GTZAN blend 0: .81 (12345) / .64 (MFCC); UrbanSound8K blend 0: .987 / .911
# (too easy), 0.65: .708 / .578.
BLEND = {"gtzan": 0.0, "urbansound": 0.65, "jamendo": 0.65}
CSV = {"gtzan": "gtzan_genre.csv", "urbansound": "urbansound.csv", "jamendo": "jamendo_vd.csv"}


def synthetic_task(kind: str, anchors: pathlib.Path = ANCHORS, seed: int = 0,
                   blend: float | None = None) -> evaluation.Task:
    """A GTZAN genre, UrbanSound8K or Jamendo stand-in (see the module docstring)."""
    df = pd.read_csv(anchors / "data_csv" / CSV[kind])
    y = df["label"].to_numpy()
    feats = anchors / "data_feats"
    conv = np.stack([np.load(feats / f"ballroom_extended_layer_{k}.npy") for k in range(5)], 1).astype(np.float64)
    mfcc = np.load(feats / "ballroom_extended_mfcc.npy").astype(np.float64)
    ball_y = pd.read_csv(anchors / "data_csv" / "ballroom_extended.csv")["label"].to_numpy()
    counts = pd.Series(ball_y).value_counts()  # largest first
    source_class = dict(zip(np.unique(y), counts.index[: len(np.unique(y))]))
    rng = np.random.default_rng(seed)
    a = np.empty(len(y), dtype=np.int64)
    b = np.empty(len(y), dtype=np.int64)
    for label, src in source_class.items():
        rows = np.flatnonzero(ball_y == src)
        idx = np.flatnonzero(y == label)
        a[idx] = rng.choice(rows, len(idx))
        b[idx] = rng.choice(rows, len(idx))
    u = rng.uniform(size=len(y))
    pool = np.flatnonzero(np.isin(ball_y, list(source_class.values())))
    c = rng.choice(pool, len(y))  # a row of any of the task's classes
    lam = rng.uniform(0.0, BLEND[kind] if blend is None else blend, size=len(y))

    def mix(F):
        ex = (slice(None),) + (None,) * (F.ndim - 1)
        own = F[a] + u[ex] * (F[b] - F[a])
        return (1.0 - lam[ex]) * own + lam[ex] * F[c]

    sets = evaluation.FeatureSets(convnet=mix(conv), mfcc=mix(mfcc))
    folds = evaluation.split_folds(df)  # UrbanSound8K's folds, Jamendo's train+valid vs test
    name = f"{kind}_synthetic"
    return evaluation.Task(name, "classification", y, sets, folds=folds, honest_folds=folds)


def load() -> float:
    return os.getloadavg()[0]


def bench_all(args, kind: str) -> None:
    """The whole faithful protocol (31 combinations, MFCC, MFCC+12345) as transfer_eval runs it."""
    task = synthetic_task(kind, args.anchors)
    combos = probe.layer_combinations()
    l0 = load()
    t = time.perf_counter()
    df = evaluation.evaluate_task(task, combos=combos, protocols=["faithful"], n_jobs=args.n_jobs,
                                  cache_dir=args.cache_dir, progress=True)
    wall = time.perf_counter() - t
    print(df[["feature", "layers", "score", "best_params", "exact_fits"]].to_string(index=False))
    print(json.dumps({"bench": kind, "sets": len(df), "n_jobs": args.n_jobs, "wall_s": round(wall, 1),
                      "load_before": l0, "load_after": load(), "exact_fits": int(df.exact_fits.sum()),
                      "cache_dir": str(args.cache_dir),
                      "target_s": {"gtzan": 300, "urbansound": 7200}.get(kind)}))


def _one_set(task: evaluation.Task, name: str, n_folds: int) -> dict:
    X = task.sets.mfcc if name == "mfcc" else (
        np.concatenate([task.sets.mfcc, evaluation.select_layers(task.sets.convnet, "12345")], 1)
        if name == "mfcc+12345" else evaluation.select_layers(task.sets.convnet, name))
    folds = task.folds[:n_folds]
    from transfer_jax import kernel_grid

    fold_scores, fold_times = kernel_grid.fold_scores, []

    def timed(*a, **k):  # per-fold wall time, printed as it comes (long runs)
        t0 = time.perf_counter()
        out = fold_scores(*a, **k)
        fold_times.append(round(time.perf_counter() - t0, 1))
        print(json.dumps({"set": name, "fold": len(fold_times) - 1, "seconds": fold_times[-1],
                          "exact_fits": int(out[1].sum()), "load": round(load(), 2)}), flush=True)
        return out

    kernel_grid.fold_scores = timed
    t = time.perf_counter()
    try:
        r = probe.evaluate(X, task.y, task_type="classification", scale=False, folds=folds)
    finally:
        kernel_grid.fold_scores = fold_scores
    return {"set": name, "dim": X.shape[1], "folds": len(folds), "seconds": round(time.perf_counter() - t, 1),
            "fold_seconds": fold_times, "score": round(r.score, 5), "best_params": r.best_params,
            "exact_fits": r.exact_fits}


def bench_urbansound(args) -> None:
    if args.sets == "all":
        return bench_all(args, "urbansound")
    task = synthetic_task("urbansound", args.anchors)
    names = args.sets.split(",")
    l0 = load()
    t = time.perf_counter()
    if args.n_jobs == 1:
        rows = [_one_set(task, n, args.folds) for n in names]
    else:
        from joblib import Parallel, delayed

        rows = Parallel(n_jobs=args.n_jobs)(delayed(_one_set)(task, n, args.folds) for n in names)
    wall = time.perf_counter() - t
    for r in rows:
        print(json.dumps(r))
    per_set = np.mean([r["seconds"] for r in rows]) * 10 / args.folds
    print(json.dumps({"bench": "urbansound", "sets": names, "n_jobs": args.n_jobs, "folds": args.folds,
                      "wall_s": round(wall, 1), "load_before": l0, "load_after": load(),
                      "extrapolated_33_sets_s": round(per_set * 33 / max(args.n_jobs, 1), 0),
                      "target_s": 7200}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["gtzan", "urbansound", "jamendo"])
    ap.add_argument("--anchors", type=pathlib.Path, default=ANCHORS)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--sets", default="12345,mfcc",
                    help="urbansound: feature sets (layer combos, mfcc, mfcc+12345), or 'all' (the 33 sets "
                         "through evaluation.evaluate_task, like gtzan)")
    ap.add_argument("--cache-dir", type=pathlib.Path, default=None,
                    help="gtzan, jamendo, urbansound --sets all: keep finished sets here (a rerun resumes; "
                         "delete it to time anew)")
    ap.add_argument("--folds", type=int, default=10, help="urbansound: the first N predefined folds")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}", flush=True)
    if args.which == "urbansound":
        bench_urbansound(args)
    else:
        bench_all(args, args.which)


if __name__ == "__main__":
    main()
