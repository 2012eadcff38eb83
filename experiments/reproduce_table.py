"""Reproduce the authors' per-combination scores from their released features.

    python experiments/reproduce_table.py [--anchors ../shared/anchors/choi2017] [--out results/reproduce]
        [--tasks gtzan_speechmusic,emoMusic_a,emoMusic_v,ballroom_extended] [--n_jobs -1]
        [--docs docs/evaluation.md]

Runs the faithful protocol on every layer combination, MFCC and MFCC+12345 of each task,
compares with `result_transfer/` (ours vs authors, absolute difference), writes
<out>/reproduction.md and <out>/<task>.csv / .png, and replaces the block between
`<!-- reproduction:start -->` and `<!-- reproduction:end -->` in --docs (if given).
Results are cached under <out>/cache: an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from transfer_jax import evaluation, probe  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ANCHORS = ROOT.parent / "shared" / "anchors" / "choi2017"
TASKS = ("gtzan_speechmusic", "emoMusic_a", "emoMusic_v", "ballroom_extended")
START, END = "<!-- reproduction:start -->", "<!-- reproduction:end -->"


def reference_name(feature: str, layers: str) -> str:
    """Our (feature, layers) -> the authors' result_transfer key: 'mine_014', 'mfcc_4', 'mfcc+12345_4'."""
    if feature == "mfcc":
        return "mfcc_4"
    if feature == "mfcc+convnet":
        return "mfcc+12345_4"
    return "mine_" + "".join(str(int(d) - 1) for d in str(layers))


def load_references(result_dir: pathlib.Path, task: str) -> dict[str, float]:
    """{'mine_014': score, 'mfcc_4': ..., ...} from T_<task>_F_<key>_CL_<SVC|SVR>.npy."""
    refs = {}
    for path in result_dir.glob(f"T_{task}_F_*_CL_*.npy"):
        key = path.name[len(f"T_{task}_F_"):].rsplit("_CL_", 1)[0]
        refs[key] = float(np.load(path))
    return refs


def compare(results: pd.DataFrame, refs: dict[str, float]) -> pd.DataFrame:
    """Our faithful rows joined with the authors' scores (rows they did not run get NaN)."""
    df = results[results.protocol == "faithful"].copy()
    df["key"] = [reference_name(f, l) for f, l in zip(df.feature, df.layers)]
    df["authors"] = df.key.map(refs)
    df["diff"] = df.score - df.authors
    return df


def table_markdown(comparisons: dict[str, pd.DataFrame], seconds: dict[str, float]) -> str:
    """Summary per task (matched, max |diff|, time) and every compared score."""
    lines = ["| task | compared | within 0.005 | max abs diff | exact-solver linear fits | wall time of this run (s; 0 = cached) |",
             "|---|---|---|---|---|---|"]
    for task, df in comparisons.items():
        m = df.dropna(subset=["authors"])
        lines.append(f"| {task} | {len(m)} | {(m['diff'].abs() <= 0.005).sum()} | "
                     f"{m['diff'].abs().max():.5f} | {int(df.exact_fits.sum())} | {seconds[task]:.0f} |")
    lines += ["", "| task | feature | ours | authors | diff | best setting |", "|---|---|---|---|---|---|"]
    for task, df in comparisons.items():
        for r in df.dropna(subset=["authors"]).itertuples():
            name = r.feature + (f" {r.layers}" if r.layers else "")
            lines.append(f"| {task} | {name} | {r.score:.5f} | {r.authors:.5f} | {r.diff:+.5f} | "
                         f"{_params(r.best_params)} |")
    return "\n".join(lines) + "\n"


def _params(p: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(p.items()))


def update_docs(path: pathlib.Path, block: str) -> None:
    """Replace the text between START and END markers (append the block when absent)."""
    text = path.read_text() if path.exists() else ""
    new = f"{START}\n{block}{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + new + text[text.index(END) + len(END):]
    else:
        text = text + ("\n" if text else "") + new + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", type=pathlib.Path, default=DEFAULT_ANCHORS)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "results" / "reproduce")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--layers", default="all", help="'all' or a comma list like 1,12345")
    ap.add_argument("--n_jobs", "--n-jobs", type=int, default=-1)
    ap.add_argument("--docs", type=pathlib.Path, default=None)
    args = ap.parse_args(argv)
    combos = probe.layer_combinations() if args.layers == "all" else args.layers.split(",")
    comparisons, seconds, results = {}, {}, []
    for task in args.tasks.split(","):
        t0 = time.time()
        spec = evaluation.load_precomputed(args.anchors / "data_feats", args.anchors / "data_csv", task)
        df = evaluation.evaluate_task(spec, combos=combos, protocols=["faithful"], n_jobs=args.n_jobs,
                                      cache_dir=args.out / "cache", progress=True)
        seconds[task] = time.time() - t0
        refs = load_references(args.anchors / "result_transfer", task)
        comparisons[task] = compare(df, refs)
        results.append(df)
        m = comparisons[task].dropna(subset=["authors"])
        print(f"{task}: {len(m)} compared, max |diff| {m['diff'].abs().max():.5f}, {seconds[task]:.0f} s", flush=True)
    layer_refs = {task: {("mfcc" if k == "mfcc_4" else "mfcc+12345" if k.startswith("mfcc+") else
                          "".join(str(int(d) + 1) for d in k[5:])): v
                         for k, v in load_references(args.anchors / "result_transfer", task).items()}
                  for task in comparisons}
    evaluation.write_outputs(pd.concat(results, ignore_index=True), args.out, references=layer_refs)
    block = table_markdown(comparisons, seconds)
    (args.out / "reproduction.md").write_text(block)
    if args.docs:
        update_docs(args.docs, block)
    print(block.split("\n\n")[0])


if __name__ == "__main__":
    main()
