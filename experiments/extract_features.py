"""Convnet features of many audio files with a pretrained tagger checkpoint.

    python experiments/extract_features.py --checkpoint checkpoints/choi2017_msd files.txt feats.npy
    python experiments/extract_features.py --checkpoint DIR --norm batch --batch-size 256 files.txt f.npy
    python experiments/extract_features.py --checkpoint DIR --norm dataset --calibration cal.txt files.txt f.npy

AUDIO_LIST holds one path a line (.wav .flac .ogg .mp3 .au .aiff, or .npy of samples at
the model's rate, 12 kHz); blank lines are skipped, relative paths are taken from
`--root` (default: the current directory). OUT.npy is (n_files, 32 x n_layers) float32 in
list order, layers in ascending order (default 1..5 = 160 dims, the paper's "12345").

The model is loaded once; files are decoded in threads ahead of the jitted, batched model
(`transfer_jax.extraction.extract_files`). Audio shorter than one model input (29 s) is tiled
or zero-padded (`--short-policy`), longer audio gives its first input (`--long-policy
first`, the original) or the mean over all full 29 s segments (`mean`).

Normalisation (`--norm`; default: "dataset" when the checkpoint stores dataset statistics
(`import_weights.py --calibrate`) or is the published model without them (statistics then
come from the files processed), else the checkpoint's own mode):
- per-clip: every input normalised by its own statistics, dB reference its own maximum:
  the published one-file extractor, batch-independent (but for the published tagger a
  nearly constant layer 5);
- batch: inputs in list order, `--batch-size` at a time, BatchNorm statistics and dB
  reference of the batch: the paper's features (batches of 256 in CSV order) when no file
  fails; a clip's features depend on its neighbours;
- dataset: BatchNorm mode 2 with the whole dataset as the batch, computed layer by layer
  (`transfer_jax.dataset_stats`) over `--calibration LIST` (default: the files being
  processed), or read from `--stats FILE`, or the checkpoint's stored ones; deterministic
  and batch-independent. They are saved as OUT.stats.npz for reuse with `--stats`;
- running: the checkpoint's stored running statistics (models trained here).

Side files next to OUT.npy (stem = OUT without .npy):
- stem.json: what was computed (checkpoint, norm, dB reference, layers, policies, counts);
- stem.failures.tsv: `path<TAB>reason` for each file that failed (its row is NaN);
- stem.stats.npz: the dataset statistics (dataset mode);
- stem.partial.npy / stem.partial.json while running: rows are written in chunks of
  `--chunk-size` files; a rerun with the same options resumes after the last finished
  chunk ("resuming at row N"), and the finished array is renamed to OUT.npy atomically.
Exit status 0 when the output was written (failed files are listed, not fatal).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

NORMS = ("per-clip", "batch", "dataset", "running")


def _side(out: pathlib.Path, suffix: str) -> pathlib.Path:
    stem = out.name[:-4] if out.name.endswith(".npy") else out.name
    return out.with_name(stem + suffix)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _tree_digest(tree) -> str:
    import jax
    import numpy as np

    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(tree), key=lambda t: jax.tree_util.keystr(t[0])):
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return h.hexdigest()[:16]


def _write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _clean(reason: str) -> str:
    return " ".join(str(reason).split())


def _is_placeholder(batch_stats) -> bool:
    import jax
    import numpy as np

    leaves = jax.tree_util.tree_leaves_with_path(batch_stats)
    return all(np.all(np.asarray(v) == (0.0 if "mean" in jax.tree_util.keystr(p) else 1.0))
               for p, v in leaves)


def _extract_chunk(model, variables, paths, entries, **kwargs):
    """(features (n, L, C) with NaN rows for failures, [(entry, reason)]). An unexpected
    error retries the chunk file by file, recording each file that still fails; it is
    re-raised when every file of a chunk of several hits it (not a per-file problem)."""
    import numpy as np

    from transfer_jax.extraction import extract_files

    def run(p, e):
        feats, fails = extract_files(variables, p, model=model, **kwargs)
        by_path = dict(zip(p, e))
        return feats, [(by_path.get(str(q), str(q)), _clean(reason)) for q, reason in fails]

    try:
        return run(paths, entries)
    except Exception as error:  # noqa: BLE001 - one bad file must not stop the run
        parts, errors = [], 0
        for p, entry in zip(paths, entries):
            try:
                parts.append(run([p], [entry]))
            except Exception as e1:  # noqa: BLE001
                errors += 1
                nan = np.full((1, model.config.n_layers, model.config.channels), np.nan, np.float32)
                parts.append((nan, [(entry, _clean(f"{type(e1).__name__}: {e1}"))]))
        if errors == len(paths) > 1:
            raise error
        return np.concatenate([f for f, _ in parts]), [x for _, fl in parts for x in fl]


def _dataset_statistics(args, model, variables, meta, paths, out, short_policy, long_policy, ckpt_digest):
    """(batch_stats, db_ref, description) for dataset mode; saves stem.stats.npz."""
    from transfer_jax import dataset_stats as ds

    stats_path = _side(out, ".stats.npz")
    identity = None
    if args.stats:
        stats, db_ref, info = ds.load_stats(args.stats)
        how = {"source": f"stats file {pathlib.Path(args.stats).absolute()}",
               "n_files": info.get("n_files"), "n_inputs": info.get("n_inputs")}
    elif args.calibration is None and _calibrated(meta):
        stats, db_ref = variables["batch_stats"], float(meta["db_ref"])
        how = {"source": "checkpoint", "n_files": meta.get("calibrated_on"),
               "n_inputs": meta.get("calibration_inputs")}
    else:
        cal_list = args.calibration
        cal_paths = ds.read_path_list(cal_list, args.root)[1] if cal_list else paths
        identity = _digest({"checkpoint": ckpt_digest, "paths": cal_paths, "short": short_policy,
                            "long": long_policy})
        stats = None
        if stats_path.exists():
            try:
                old, old_ref, info = ds.load_stats(stats_path)
            except ValueError:
                info = {}
            if info.get("identity") == identity:
                stats, db_ref = old, old_ref
                how = {k: info.get(k) for k in ("source", "n_files", "n_inputs")}
                print(f"reusing dataset statistics from {stats_path}", file=sys.stderr)
        if stats is None:
            src = f"calibration list {pathlib.Path(cal_list).absolute()}" if cal_list else "the files processed"
            print(f"computing dataset statistics over {len(cal_paths)} files ({src})", file=sys.stderr)
            stats, db_ref, info = ds.stats_from_files(
                model, variables, cal_paths, batch_size=args.batch_size, short_policy=short_policy,
                long_policy=long_policy, tmp_dir=out.parent, progress=not args.no_progress)
            for path, reason in info["failures"]:
                print(f"calibration: skipped {path}: {_clean(reason)}", file=sys.stderr)
            how = {"source": src, "n_files": info["n_files"], "n_inputs": info["n_inputs"]}
    ds.check_stats(model, stats)
    how = {k: v for k, v in how.items() if v is not None}
    if not (args.stats and pathlib.Path(args.stats).absolute() == stats_path.absolute()):
        extra = {"identity": identity} if identity else {}
        ds.save_stats(stats_path, stats, db_ref, **how, **extra)
    return stats, db_ref, {**how, "stats_file": str(stats_path)}


def _calibrated(meta: dict) -> bool:
    ref = meta.get("db_ref")
    return bool(meta.get("calibrated_on")) and isinstance(ref, (int, float)) and not isinstance(ref, bool)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="directory written by import_weights / training")
    parser.add_argument("audio_list", help="text file, one audio path a line")
    parser.add_argument("out", help="output .npy, (n_files, 32 x n_layers) float32")
    parser.add_argument("--layers", default="12345", help="layers to keep, 1-based digits (default 12345)")
    parser.add_argument("--norm", choices=NORMS + ("per_clip",), default=None,
                        help="BatchNorm mode (default: dataset for a calibrated or published checkpoint, else its own)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="model inputs per jitted call; the batch of --norm batch (default 16)")
    parser.add_argument("--short-policy", choices=("tile", "pad"), default=None,
                        help="audio shorter than 29 s: tile (authors' feature code) or zero-pad "
                             "(their one-file extractor); default: the checkpoint's")
    parser.add_argument("--long-policy", choices=("first", "mean"), default="first",
                        help="audio longer than 29 s: first 29 s (original, default) or the mean "
                             "over all full 29 s segments")
    parser.add_argument("--calibration", default=None,
                        help="dataset mode: list of files to compute the statistics over "
                             "(default: the checkpoint's stored ones, else the files processed)")
    parser.add_argument("--stats", default=None, help="dataset mode: reuse a saved OUT.stats.npz")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="files per resumable chunk (default 256; batch mode rounds it up to "
                             "a multiple of --batch-size)")
    parser.add_argument("--root", default=None, help="directory relative list paths are taken from")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="JAX CPU devices: 0 (default) one per core, each extracting its share of "
                             "a batch (1.2x files/s on 2 cores, docs/benchmarks.md); 1: one for all cores")
    parser.add_argument("--no-tune-malloc", action="store_true",
                        help="keep glibc malloc's defaults (tuned by default: ~1.4x files/s, "
                             "higher peak RSS; docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.chunk_size < 1 or args.cpu_devices < 0:
        parser.error("--batch-size and --chunk-size must be at least 1, --cpu-devices at least 0")
    if (args.stats or args.calibration) and args.norm not in (None, "dataset"):
        parser.error("--stats and --calibration are for --norm dataset")
    if args.stats and args.calibration:
        parser.error("give either --stats or --calibration, not both")

    import numpy as np
    from tqdm.auto import tqdm

    from transfer_jax import checkpoint, runtime
    from transfer_jax import dataset_stats as ds
    from transfer_jax.extraction import layer_name, parse_layers

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's read-only notes
    if not args.no_tune_malloc:
        runtime.tune_malloc()
    runtime.use_cpu_cores(args.cpu_devices or None)
    runtime.enable_compilation_cache()
    out = pathlib.Path(args.out)
    if out.is_dir():
        parser.error(f"{out} is a directory; OUT must be a .npy file path")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        entries, paths = ds.read_path_list(args.audio_list, args.root)
        model, variables = checkpoint.load_pretrained(args.checkpoint)
        meta = checkpoint.load_metadata(args.checkpoint)
        layer_idx = parse_layers(args.layers, model.config.n_layers)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not entries:
        print(f"error: {args.audio_list} lists no files", file=sys.stderr)
        return 1

    # The published model has no usable running statistics: dataset statistics over the
    # files processed are its best batch-independent mode (docs/pretrained.md).
    published = "running" not in meta.get("bn_modes_supported", ["running"])
    norm = args.norm or ("dataset" if (_calibrated(meta) or args.stats or args.calibration or published) else
                         {"train": "running", "per_clip": "per-clip"}.get(meta.get("norm"), meta.get("norm", "running")))
    norm = "per-clip" if norm == "per_clip" else norm
    fe = model.config.frontend
    short_policy = args.short_policy or fe.short_policy
    ckpt_digest = _tree_digest(variables)
    description: dict = {}
    if norm == "per-clip":
        run_model, run_vars, ref = model.clone(norm="per_clip"), variables, "clip"
    elif norm == "batch":
        run_model, run_vars, ref = model.clone(norm="batch"), variables, "batch"
    elif norm == "running":
        run_model, run_vars = model.clone(norm="running"), variables
        stored = meta.get("db_ref", "clip")
        ref = float(stored) if isinstance(stored, (int, float)) else "clip"
        if _is_placeholder(variables["batch_stats"]):
            print("warning: the checkpoint's running statistics are placeholders (mean 0, var 1): "
                  "features will be meaningless; use --norm dataset, per-clip or batch", file=sys.stderr)
    else:
        try:
            stats, ref, description = _dataset_statistics(args, model, variables, meta, paths, out,
                                                          short_policy, args.long_policy, ckpt_digest)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        run_model, run_vars = ds.dataset_model(model, variables, stats)
        description["stats_digest"] = _tree_digest(stats)

    n, dim = len(paths), len(layer_idx) * model.config.channels
    options = {"checkpoint": str(pathlib.Path(args.checkpoint).absolute()), "variables": ckpt_digest,
               "files": _digest(paths), "n_files": n, "norm": norm, "db_ref": ref,
               "layers": layer_name(layer_idx), "short_policy": short_policy,
               "long_policy": args.long_policy, "batch_size": args.batch_size,
               "stats": description.get("stats_digest")}
    meta_path, partial_npy, partial_json = _side(out, ".json"), _side(out, ".partial.npy"), _side(out, ".partial.json")
    failures_path = _side(out, ".failures.tsv")
    print(f"# {args.checkpoint}: norm={norm} db_ref={ref} layers={options['layers']} "
          f"short={short_policy} long={args.long_policy} files={n}", file=sys.stderr)

    if out.exists() and meta_path.exists():
        try:
            if json.loads(meta_path.read_text()).get("options") == options:
                print(f"{out} is complete for these options; nothing to do")
                return 0
        except (OSError, ValueError):
            pass

    done, failures, rows = 0, [], None
    if partial_json.exists() and partial_npy.exists():
        try:
            state = json.loads(partial_json.read_text())
            if state.get("options") == options:
                rows = np.lib.format.open_memmap(partial_npy, mode="r+")
                if rows.shape != (n, dim) or rows.dtype != np.float32:
                    rows = None
                else:
                    done, failures = int(state["done"]), [tuple(f) for f in state["failures"]]
                    print(f"resuming at row {done} of {n}")
            else:
                print("a partial run with other options exists; starting over", file=sys.stderr)
        except (OSError, ValueError, KeyError):
            rows = None
    if rows is None:
        done, failures = 0, []
        partial_json.unlink(missing_ok=True)
        rows = np.lib.format.open_memmap(partial_npy, mode="w+", dtype=np.float32, shape=(n, dim))
        rows[:] = np.nan
        rows.flush()
    meta_path.unlink(missing_ok=True)

    chunk = args.chunk_size
    if norm == "batch":
        chunk = math.ceil(chunk / args.batch_size) * args.batch_size
    bar = tqdm(total=n, initial=done, unit="file", desc="extract", disable=args.no_progress)
    for start in range(done, n, chunk):
        stop = min(n, start + chunk)
        feats, fails = _extract_chunk(run_model, run_vars, paths[start:stop], entries[start:stop],
                                      batch_size=args.batch_size, ref=ref, short_policy=short_policy,
                                      long_policy=args.long_policy)
        rows[start:stop] = feats[:, layer_idx, :].reshape(stop - start, dim)
        rows.flush()
        failures.extend(fails)
        _write_json(partial_json, {"options": options, "done": stop, "failures": failures})
        bar.update(stop - start)
    bar.close()
    del rows

    os.replace(partial_npy, out)
    if failures:
        failures_path.write_text("".join(f"{p}\t{_clean(r)}\n" for p, r in failures))
    else:
        failures_path.unlink(missing_ok=True)
    _write_json(meta_path, {
        "options": options, "shape": [n, dim], "dtype": "float32",
        "columns": f"layers {options['layers']} x {model.config.channels} channels, layers ascending",
        "norm": norm, "db_ref": ref, "short_policy": short_policy, "long_policy": args.long_policy,
        "audio_list": str(pathlib.Path(args.audio_list).absolute()), "n_failed": len(failures),
        "dataset_stats": description or None})
    partial_json.unlink(missing_ok=True)
    print(f"wrote {out} ({n} x {dim}); {len(failures)} failed"
          + (f", listed in {failures_path}" if failures else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
