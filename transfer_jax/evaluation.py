"""Transfer evaluation of one task: feature sets in, a table of probe scores out.

Feature sets follow the paper: `convnet` (the trained tagger, any layer combination),
`random` (the same network with random weights, several seeds), `mfcc` (120-d) and
`mfcc+convnet` (MFCC with layers 12345). Each is scored by `probe.evaluate`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from transfer_jax import probe
from transfer_jax.extraction import select_layers

COLUMNS = ("task", "feature", "layers", "seed", "score", "score_std", "n_splits", "best_params")


@dataclasses.dataclass
class FeatureSets:
    """convnet: (n, 5, 32); random: {seed: (n, 5, 32)}; mfcc: (n, 120)."""

    convnet: np.ndarray
    mfcc: np.ndarray
    random: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)


def evaluate_task(task: str, sets: FeatureSets, y: np.ndarray, *, task_type: str = "classification",
                  combos: list[str] | None = None, scale: bool = True, n_splits: int = 10,
                  n_jobs: int = 1) -> pd.DataFrame:
    """One row per evaluated feature set, columns `COLUMNS`."""
    combos = combos or ["12345"]
    rows = []

    def score(feature: str, layers: str, X: np.ndarray, seed: int | None = None):
        r = probe.evaluate(X, y, task_type=task_type, scale=scale, n_splits=n_splits, n_jobs=n_jobs)
        rows.append({"task": task, "feature": feature, "layers": layers, "seed": seed,
                     "score": r.score, "score_std": r.score_std, "n_splits": r.n_splits,
                     "best_params": r.best_params})

    for layers in combos:
        score("convnet", layers, select_layers(sets.convnet, layers))
    for seed, feats in sets.random.items():
        score("random", "12345", select_layers(feats, "12345"), seed)
    score("mfcc", "", sets.mfcc)
    score("mfcc+convnet", "12345", np.concatenate([sets.mfcc, select_layers(sets.convnet, "12345")], 1))
    return pd.DataFrame(rows, columns=COLUMNS)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's table shape: a row per task; best convnet combination, layers 12345,
    MFCC+12345, MFCC, and the random-weights control as mean +- std over seeds."""
    out = []
    for task, df in results.groupby("task", sort=False):
        conv = df[df.feature == "convnet"]
        best = conv.loc[conv.score.idxmax()]
        rand = df[df.feature == "random"].score
        pick = lambda f, l: df[(df.feature == f) & (df.layers == l)].score  # noqa: E731
        out.append({
            "task": task,
            "best convnet": f"{best.score:.3f} ({best.layers})",
            "convnet 12345": _fmt(pick("convnet", "12345")),
            "mfcc+12345": _fmt(pick("mfcc+convnet", "12345")),
            "mfcc": _fmt(pick("mfcc", "")),
            "random 12345": f"{rand.mean():.3f} ± {rand.std(ddof=0):.3f}" if len(rand) else "-",
        })
    return pd.DataFrame(out)


def _fmt(s: pd.Series) -> str:
    return f"{s.iloc[0]:.3f}" if len(s) else "-"
