"""Transfer evaluation of one task: feature sets in, a table of probe scores out.

Feature sets follow the paper: `convnet` (the trained tagger, any layer combination),
`random` (the same network with random weights, several seeds), `mfcc` (120-d) and
`mfcc+convnet` (MFCC with layers 12345). Each is scored under one or more protocols:

- `faithful`: the authors' protocol (no standardisation, scikit-learn 0.18 folds over the
  row order, fold-size weighted best_score_; `probe.evaluate(scale=False)`);
- `scaled`: the same best_score_ with a real StandardScaler in each training fold (what
  the authors meant to run; still optimistic);
- `nested`: honest nested CV with a real scaler, mean +- std over outer folds
  (`probe.nested_evaluate`);
- `heldout`: a fixed train / valid / test split (GTZAN's fault-filtered split, from split
  files, `transfer_jax.splits`): a real scaler, each setting fitted on train and scored on
  valid, the best refitted on train + valid and scored on test once (`probe.heldout_evaluate`);
- `ridge`: the JAX linear-probe screen (`transfer_jax.linear_probe`), best over its
  regularisation values (optimistic like best_score_; a screen, not the paper's SVM).

Results are cached per (task, feature set, protocol) as JSON files keyed by a hash of the
features, targets, folds and protocol, so an interrupted or repeated run redoes nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from transfer_jax import folds as folds_lib
from transfer_jax import probe
from transfer_jax import splits as splits_lib
from transfer_jax.extraction import select_layers

COLUMNS = ("task", "feature", "layers", "seed", "protocol", "score", "score_std", "n_splits",
           "best_params", "fold_scores", "exact_fits")
PROTOCOLS = ("faithful", "scaled", "nested", "heldout", "ridge")
PROTOCOL_LABELS = {
    "faithful": "faithful (paper: no scaling, sklearn 0.18 folds, best_score_)",
    "scaled": "scaled (best_score_ with a real StandardScaler)",
    "nested": "nested (honest: scaler + inner CV, mean ± std over outer folds)",
    "heldout": "heldout (honest: scaler, chosen on valid, refit on train+valid, test once)",
    "ridge": "ridge (JAX linear probe screen, best over lambda)",
}
# The authors' data_csv target columns; emoMusic gives two tasks.
PAPER_TASKS = {
    "ballroom_extended": ("ballroom_extended", "label", "classification"),
    "gtzan_genre": ("gtzan_genre", "label", "classification"),
    "gtzan_speechmusic": ("gtzan_speechmusic", "label", "classification"),
    "emoMusic_a": ("emoMusic", "label_arousal", "regression"),
    "emoMusic_v": ("emoMusic", "label_valence", "regression"),
    "jamendo_vd": ("jamendo_vd", "label", "classification"),
    "urbansound": ("urbansound", "label", "classification"),
}


@dataclasses.dataclass
class FeatureSets:
    """convnet: (n, 5, 32); random: {seed: (n, 5, 32)}; mfcc: (n, 120)."""

    convnet: np.ndarray
    mfcc: np.ndarray
    random: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Task:
    """A downstream task ready to evaluate.

    folds: the faithful protocol's folds (None: `probe.make_folds` over the row order);
    honest_folds: the nested protocol's outer folds (None: shuffled k-fold); a task with
    predefined folds (UrbanSound8K) or a fixed split (Jamendo) uses them for both.
    clips: a name per row (file path or name), for matching split files;
    heldout: the `heldout` protocol's train / valid / test rows (`transfer_jax.splits`).
    """

    name: str
    task_type: str
    y: np.ndarray
    sets: FeatureSets
    folds: folds_lib.Folds | None = None
    honest_folds: folds_lib.Folds | None = None
    clips: list[str] | None = None
    heldout: splits_lib.HeldOutSplit | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """One (feature set, protocol) evaluation."""

    feature: str
    layers: str
    seed: int | None
    protocol: str
    X: np.ndarray


def load_precomputed(feats_dir: str | pathlib.Path, csv_dir: str | pathlib.Path, task: str,
                     split_dir: str | pathlib.Path | None = None) -> Task:
    """The authors' layout: `<feats_dir>/<base>_layer_<0..4>.npy` (N x 32), `<base>_mfcc.npy`
    (N x 120) and `<csv_dir>/<base>.csv` (rows in feature order; `fold` -> predefined folds,
    `category` -> train+valid vs test). emoMusic_a / emoMusic_v share emoMusic's files.
    split_dir: split files for the `heldout` protocol, matched to the csv's file names
    (`clip_names`)."""
    if task not in PAPER_TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(PAPER_TASKS)}")
    base, column, task_type = PAPER_TASKS[task]
    feats_dir, csv_dir = pathlib.Path(feats_dir), pathlib.Path(csv_dir)
    paths = [feats_dir / f"{base}_layer_{k}.npy" for k in range(5)] + [feats_dir / f"{base}_mfcc.npy",
                                                                      csv_dir / f"{base}.csv"]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{task}: missing {', '.join(missing)}")
    df = pd.read_csv(paths[-1])
    convnet = np.stack([np.load(p) for p in paths[:5]], axis=1).astype(np.float64)
    mfcc = np.load(paths[5]).astype(np.float64)
    if not len(df) == len(convnet) == len(mfcc):
        raise ValueError(f"{task}: {len(df)} csv rows, {len(convnet)} convnet rows, {len(mfcc)} mfcc rows")
    y = df[column].to_numpy()
    y = y.astype(np.float64) if task_type == "regression" else y
    folds = split_folds(df)
    clips = clip_names(df)
    heldout = None
    if split_dir is not None:
        if clips is None:
            raise ValueError(f"{paths[-1]}: no column names the clips uniquely (looked for "
                             f"{', '.join(CLIP_COLUMNS)}; columns: {', '.join(map(str, df.columns))}), "
                             f"so the split files in {split_dir} cannot be matched to its rows")
        heldout = splits_lib.load_split_dir(split_dir, clips)
        splits_lib.check_split_labels(heldout, y, task_type)
    return Task(task, task_type, y, FeatureSets(convnet=convnet, mfcc=mfcc), folds=folds, honest_folds=folds,
                clips=clips, heldout=heldout)


CLIP_COLUMNS = ("filepath", "file", "path", "filename", "id")


def clip_names(df: pd.DataFrame) -> list[str] | None:
    """A name per row for split matching: the first of CLIP_COLUMNS present whose names
    identify the rows (the authors' `filepath`; GTZAN's `id` is only the genre); None if none."""
    for column in CLIP_COLUMNS:
        if column in df.columns:
            names = df[column].astype(str).tolist()
            if len({splits_lib.clip_key(n, 2) for n in names}) == len(names):
                return names
    return None


def split_folds(df: pd.DataFrame) -> folds_lib.Folds | None:
    """Predefined folds from a csv: `fold` (UrbanSound8K) or `category` (Jamendo:
    train+valid vs test, one split); None when the task uses k-fold CV."""
    if "fold" in df.columns:
        return folds_lib.predefined_folds(df["fold"].to_numpy())
    if "category" in df.columns:
        test = df["category"].to_numpy() == "test"
        return [(np.flatnonzero(~test), np.flatnonzero(test))]
    return None


def feature_jobs(sets: FeatureSets, combos: Sequence[str], protocols: Sequence[str]) -> list[Job]:
    """Every (feature set, protocol): convnet combos, random 12345 per seed, mfcc, mfcc+12345."""
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {PROTOCOLS}")
    sets_ = [("convnet", c, None, select_layers(sets.convnet, c)) for c in combos]
    sets_ += [("random", "12345", s, select_layers(f, "12345")) for s, f in sets.random.items()]
    sets_ += [("mfcc", "", None, np.asarray(sets.mfcc)),
              ("mfcc+convnet", "12345",
               None, np.concatenate([sets.mfcc, select_layers(sets.convnet, "12345")], 1))]
    return [Job(f, l, s, p, X) for p in protocols if p != "ridge" for f, l, s, X in sets_]


def ridge_rows(task: Task, combos: Sequence[str], n_splits: int = 10) -> list[dict]:
    """The `ridge` protocol for every feature set at once (`linear_probe.screen`): convnet
    combinations, mfcc and mfcc+12345 in one call over [mfcc | layers 1..5], and each
    random seed's layers 12345."""
    from transfer_jax import linear_probe

    folds = task.folds or probe.make_folds(task.y, task.task_type, n_splits)
    n_layers = task.sets.convnet.shape[1]
    blocks = [task.sets.mfcc.shape[1]] + [task.sets.convnet.shape[2]] * n_layers
    names = [("convnet", c, None) for c in combos] + [("mfcc", "", None), ("mfcc+convnet", "12345", None)]
    index_sets = [[int(d) for d in c] for c in combos] + [[0], list(range(n_layers + 1))]
    X = np.concatenate([task.sets.mfcc, task.sets.convnet.reshape(len(task.y), -1)], 1)
    jobs = [(X, names, index_sets)]
    for seed, feats in task.sets.random.items():
        Xr = np.concatenate([task.sets.mfcc, np.asarray(feats).reshape(len(task.y), -1)], 1)
        jobs.append((Xr, [("random", "12345", seed)], [list(range(1, n_layers + 1))]))
    rows = []
    for Xj, names_j, idx_j in jobs:
        res = linear_probe.screen(Xj, task.y, linear_probe.block_masks(blocks, idx_j), folds,
                                  task_type=task.task_type)
        for (feature, layers, seed), (_, score, lam, fs) in zip(names_j, res.best()):
            rows.append({"feature": feature, "layers": layers, "seed": seed, "protocol": "ridge",
                         "score": score, "score_std": float(np.std(fs)), "n_splits": len(folds),
                         "best_params": {"lambda": lam}, "fold_scores": [float(v) for v in fs],
                         "exact_fits": 0})
    return rows


def cache_key(job: Job, y: np.ndarray, folds: folds_lib.Folds | None, settings: dict) -> str:
    """A hash of everything the score depends on."""
    h = hashlib.sha256()
    for arr in (np.ascontiguousarray(job.X, dtype=np.float64), np.asarray(y)):
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    for _, te in folds or []:
        h.update(np.asarray(te, dtype=np.int64).tobytes())
    h.update(json.dumps([job.protocol, settings], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def run_job(job: Job, task: Task, settings: dict) -> dict:
    """Score one job; a row of COLUMNS (without `task`)."""
    kw = dict(task_type=task.task_type, grid=settings["grid"])
    if job.protocol == "faithful":
        r = probe.evaluate(job.X, task.y, scale=False, folds=task.folds, n_splits=settings["n_splits"], **kw)
    elif job.protocol == "scaled":
        r = probe.evaluate(job.X, task.y, scale=True, folds=task.folds, n_splits=settings["n_splits"], **kw)
    elif job.protocol == "nested":
        r = probe.nested_evaluate(job.X, task.y, folds=task.honest_folds, n_splits=settings["n_splits"],
                                  inner_splits=settings["inner_splits"], **kw)
    elif job.protocol == "heldout":
        r = probe.heldout_evaluate(job.X, task.y, task.heldout.train, task.heldout.valid, task.heldout.test, **kw)
    else:
        raise ValueError(f"run_job does not run protocol {job.protocol!r}")
    return {"feature": job.feature, "layers": job.layers, "seed": job.seed, "protocol": job.protocol,
            "score": r.score, "score_std": r.score_std, "n_splits": r.n_splits,
            "best_params": r.best_params, "fold_scores": list(r.fold_scores), "exact_fits": r.exact_fits}


def _cached_run(job: Job, task: Task, settings: dict, path: pathlib.Path | None) -> dict:
    if path is not None and path.exists():
        return json.loads(path.read_text())
    row = run_job(job, task, settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row))
        tmp.replace(path)  # atomic: an interrupted run never leaves half a result
    return row


def evaluate_task(task: str | Task, sets: FeatureSets | None = None, y: np.ndarray | None = None, *,
                  task_type: str = "classification", combos: Sequence[str] | None = None,
                  protocols: Sequence[str] = ("faithful",), n_splits: int = 10, inner_splits: int = 5,
                  grid=probe.PAPER_GRID, n_jobs: int = 1, cache_dir: str | pathlib.Path | None = None,
                  progress: bool = False) -> pd.DataFrame:
    """One row per (feature set, protocol), columns `COLUMNS`.

    Either a `Task`, or (name, FeatureSets, y, task_type=...) for k-fold tasks. Jobs run
    in parallel over n_jobs processes; with cache_dir, finished jobs are reused.
    """
    if not isinstance(task, Task):
        task = Task(task, task_type, np.asarray(y), sets)
    combos = list(combos or ["12345"])
    if "heldout" in protocols and task.heldout is None:
        raise ValueError(f"{task.name}: the heldout protocol needs a train/valid/test split (split files, "
                         "--split-dir)")
    settings = {"grid": [dict(g) for g in grid], "n_splits": n_splits, "inner_splits": inner_splits}
    jobs = feature_jobs(task.sets, combos, protocols)
    paths = [None] * len(jobs)
    if cache_dir is not None:
        root = pathlib.Path(cache_dir) / task.name
        paths = [root / j.protocol / f"{j.feature}_{j.layers or 'none'}_{j.seed}_"
                 f"{cache_key(j, task.y, _job_folds(task, j.protocol), settings)}.json"
                 for j in jobs]
    rows = list(_run_all(jobs, task, settings, paths, n_jobs, progress))
    if "ridge" in protocols:
        rows += _cached_ridge(task, combos, n_splits, cache_dir)
    rank = {p: i for i, p in enumerate(protocols)}
    order = {(f, l, s): i for i, (f, l, s) in enumerate(dict.fromkeys((j.feature, j.layers, j.seed)
                                                                       for j in feature_jobs(task.sets, combos, ["faithful"])))}
    rows.sort(key=lambda r: (rank[r["protocol"]], order[(r["feature"], r["layers"], r["seed"])]))
    df = pd.DataFrame([{"task": task.name, **r} for r in rows], columns=COLUMNS)
    return df


def _job_folds(task: Task, protocol: str) -> folds_lib.Folds | None:
    """The folds a protocol's score depends on (for the cache key)."""
    if protocol == "nested":
        return task.honest_folds
    if protocol == "heldout":
        return task.heldout.folds()
    return task.folds


def _cached_ridge(task: Task, combos: Sequence[str], n_splits: int, cache_dir) -> list[dict]:
    if cache_dir is None:
        return ridge_rows(task, combos, n_splits)
    probe_job = Job("all", "", None, "ridge",
                    np.concatenate([task.sets.mfcc, task.sets.convnet.reshape(len(task.y), -1)]
                                   + [np.asarray(f).reshape(len(task.y), -1) for f in task.sets.random.values()], 1))
    key = cache_key(probe_job, task.y, task.folds, {"combos": list(combos), "n_splits": n_splits})
    path = pathlib.Path(cache_dir) / task.name / "ridge" / f"all_{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    rows = ridge_rows(task, combos, n_splits)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return rows


def _run_all(jobs, task, settings, paths, n_jobs, progress) -> Iterator[dict]:
    """Cached rows first, then the rest (in parallel when n_jobs != 1), with a progress bar.

    The rest run longest first (nested CV, then MFCC sets, then by dimension), so that no
    long job starts last while the other workers idle."""
    todo = [(j, p) for j, p in zip(jobs, paths) if p is None or not p.exists()]
    todo.sort(key=lambda jp: (jp[0].protocol != "nested", "mfcc" not in jp[0].feature, -jp[0].X.shape[1]))
    for j, p in zip(jobs, paths):
        if p is not None and p.exists():
            yield json.loads(p.read_text())
    if not todo:
        return
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"{task.name}", unit="set")
    if n_jobs == 1:
        results = (_cached_run(j, task, settings, p) for j, p in todo)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(_cached_run)(j, task, settings, p) for j, p in todo)
    for row in results:
        if bar is not None:
            bar.update(1)
        yield row
    if bar is not None:
        bar.close()


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's table shape: a row per (task, protocol); best convnet combination, layers
    12345, MFCC+12345, MFCC, and the random-weights control (mean ± std over seeds).
    Nested-CV cells are mean ± std over outer folds."""
    out = []
    for (task, protocol), df in results.groupby(["task", "protocol"], sort=False):
        conv = df[df.feature == "convnet"]
        best = conv.loc[conv.score.idxmax()] if len(conv) else None
        rand = df[df.feature == "random"].score
        pick = lambda f, l: df[(df.feature == f) & (df.layers.astype(str) == l)]  # noqa: E731
        out.append({
            "task": task,
            "protocol": protocol,
            "best convnet": "-" if best is None else f"{_cell(best)} ({best.layers})",
            "convnet 12345": _fmt(pick("convnet", "12345")),
            "mfcc+12345": _fmt(pick("mfcc+convnet", "12345")),
            "mfcc": _fmt(pick("mfcc", "")),
            "random 12345": f"{rand.mean():.3f} ± {rand.std(ddof=0):.3f}" if len(rand) else "-",
        })
    return pd.DataFrame(out)


def _cell(row) -> str:
    if row.protocol == "nested":
        return f"{row.score:.3f} ± {row.score_std:.3f}"
    return f"{row.score:.3f}"


def _fmt(df: pd.DataFrame) -> str:
    return _cell(df.iloc[0]) if len(df) else "-"


def plot_task(results: pd.DataFrame, path: str | pathlib.Path, reference: dict[str, float] | None = None) -> None:
    """PNG per task: all evaluated convnet combinations sorted by score (one panel per
    protocol, error bars for nested CV), baselines as horizontal lines; `reference`
    ({layers or 'mfcc' / 'mfcc+12345': score}) marks published scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(dict.fromkeys(results.protocol))
    fig, axes = plt.subplots(len(protocols), 1, figsize=(12, 3.6 * len(protocols)), squeeze=False)
    for ax, protocol in zip(axes[:, 0], protocols):
        df = results[results.protocol == protocol]
        conv = df[df.feature == "convnet"].sort_values("score", ascending=False, kind="stable")
        x = np.arange(len(conv))
        err = conv.score_std.to_numpy() if protocol == "nested" else None
        ax.bar(x, conv.score, yerr=err, color="tab:blue", alpha=0.8, label="convnet")
        if reference and protocol == "faithful":
            ref = [reference.get(str(l), np.nan) for l in conv.layers]
            ax.plot(x, ref, "k_", markersize=14, mew=2, label="published")
        styles = {"mfcc": ("tab:red", "--"), "mfcc+convnet": ("tab:green", "-."), "random": ("tab:gray", ":")}
        for feature, (color, ls) in styles.items():
            s = df[df.feature == feature].score
            if len(s):
                ax.axhline(s.mean(), color=color, ls=ls, label=f"{feature}{' 12345' if feature != 'mfcc' else ''}"
                           f" {s.mean():.3f}")
        ax.set_xticks(x, conv.layers.astype(str), rotation=90)
        lo = min([df.score.min(), *(reference or {}).values()]) if len(df) else 0.0
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, df.score.max() + 0.03) if len(df) else 1)
        ax.set_ylabel("R^2" if df.score.min() < 0 or "emo" in str(df.task.iloc[0]) else "score")
        ax.set_title(f"{df.task.iloc[0]}: {PROTOCOL_LABELS.get(protocol, protocol)}", fontsize=10)
        ax.legend(fontsize=8, loc="lower left", ncol=5)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel("layers (sorted by score)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: pd.DataFrame, out: str | pathlib.Path,
                  references: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """`<out>/<task>.csv`, `<out>/<task>.png` per task and `<out>/summary.md`; returns the summary."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for task, df in results.groupby("task", sort=False):
        as_json = {c: df[c].map(lambda v: json.dumps(v)) for c in ("best_params", "fold_scores")}
        df.assign(**as_json).to_csv(out / f"{task}.csv", index=False)
        plot_task(df, out / f"{task}.png", (references or {}).get(task))
    table = summary_table(results)
    labels = "\n".join(f"- `{p}`: {PROTOCOL_LABELS[p]}" for p in dict.fromkeys(results.protocol))
    (out / "summary.md").write_text(table.to_markdown(index=False) + "\n\nProtocols:\n" + labels + "\n")
    return table
