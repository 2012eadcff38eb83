"""Transfer evaluation: convnet features vs random weights vs MFCC on target tasks.

    python experiments/transfer_eval.py                     # embedded synthetic tasks
    python experiments/transfer_eval.py --audio-dir DIR --task NAME --checkpoint CKPT
    python experiments/transfer_eval.py --targets-csv FILE --task NAME   # regression: file,target
    python experiments/transfer_eval.py --precomputed-dir FEATS --csv-dir CSVS \\
        --task ballroom_extended --protocols faithful          # the authors' features
    python experiments/transfer_eval.py --audio-dir GTZAN/genres --task gtzan_genre \
        --split-dir SPLITS --checkpoint CKPT     # + the fault-filtered held-out split

A task folder holds one subfolder per class of audio files. Precomputed features follow
the authors' layout (`<task>_layer_<0..4>.npy`, `<task>_mfcc.npy`, `<task>.csv`).
Protocols (`--protocols`): faithful (the paper's, reproducing its scores), scaled,
nested (honest), heldout (a train/valid/test split from --split-dir: train_filtered.txt,
valid_filtered.txt, test_filtered.txt, e.g. GTZAN's fault-filtered split; added to the
protocols when --split-dir is given), ridge (JAX linear-probe screen); see
transfer_jax/evaluation.py and transfer_jax/splits.py.
Writes <out>/<task>.csv (one row per feature set and protocol), <out>/<task>.png,
<out>/summary.md, <out>/failures.csv (audio files that could not be used) and caches
finished results under <out>/cache (a rerun reuses them). Flags take dashes or underscores.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_string("checkpoint", "checkpoints/default/checkpoints",
                    "Convnet checkpoint dir (train_tagger.py's, or an imported one).")
flags.DEFINE_string("tasks_dir", "data/synthetic_targets",
                    "Folder of tasks (<task>/<class>/<audio>); the synthetic tasks are written there when it does not exist.")
flags.DEFINE_string("audio_dir", None, "A single task folder (<class>/<audio>) instead of tasks_dir.")
flags.DEFINE_string("targets_csv", None, "A regression task: CSV with columns file,target (paths relative to the CSV).")
flags.DEFINE_string("precomputed_dir", None, "Folder of precomputed features in the authors' layout.")
flags.DEFINE_string("csv_dir", None, "Folder of the authors' <task>.csv files (with --precomputed_dir).")
flags.DEFINE_list("task", None, "Task name(s): the --audio_dir / --targets_csv task, or the precomputed task(s).")
flags.DEFINE_string("out", "results/transfer", "Output folder.")
flags.DEFINE_list("layers", ["all"], "Layer combinations to evaluate ('all' for all 31), e.g. 1,12345.")
flags.DEFINE_list("protocols", ["faithful", "nested"], "faithful, scaled, nested, heldout, ridge.")
flags.DEFINE_string("split_dir", None,
                    "Folder with train_filtered.txt, valid_filtered.txt, test_filtered.txt (or train.txt, ...; "
                    "lines like blues/blues.00029.wav, matched to the task's files by name): adds the heldout "
                    "protocol (e.g. GTZAN's fault-filtered 443/197/290 split). One task only.")
flags.DEFINE_integer("random_seeds", 3, "Random-weight networks to average (audio inputs).")
flags.DEFINE_integer("n_splits", 10, "CV folds (clipped to the smallest class).")
flags.DEFINE_integer("inner_splits", 5, "Inner CV folds of the nested protocol.")
flags.DEFINE_integer("batch_size", 16, "Extraction batch size.")
flags.DEFINE_integer("n_jobs", -1, "Parallel evaluation processes (-1: all cores).")
flags.DEFINE_integer("cpu_devices", 0, "JAX CPU devices for extraction: 0 = one per core (each batch split over "
                     "them, runtime.use_cpu_cores), 1 = one device for all cores.")
flags.DEFINE_bool("tune_malloc", True, "Keep glibc from handing memory back (runtime.tune_malloc).")
flags.DEFINE_bool("cache", True, "Reuse finished results from <out>/cache.")
FLAGS = flags.FLAGS


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags, accepting --flag-name for --flag_name."""
    fixed = []
    for arg in argv:
        if arg.startswith("--") and not arg.startswith("---"):
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        fixed.append(arg)
    return FLAGS(fixed)


def task_folders() -> dict[str, pathlib.Path]:
    if FLAGS.audio_dir:
        name = FLAGS.task[0] if FLAGS.task else pathlib.Path(FLAGS.audio_dir).name
        return {name: pathlib.Path(FLAGS.audio_dir)}
    root = pathlib.Path(FLAGS.tasks_dir)
    if not root.exists() or (root / "manifest.json").exists():
        from data_pipelines import synthetic

        synthetic.write_target_tasks(root)  # idempotent: a no-op when already written
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def read_targets_csv(path: pathlib.Path):
    """A regression task's CSV: columns file,target; relative paths are under the CSV's folder."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(path)
    if not {"file", "target"} <= set(df.columns):
        raise ValueError(f"{path}: need columns file,target; got {list(df.columns)}")
    paths = [p if pathlib.Path(p).is_absolute() else path.parent / p for p in df.file.astype(str)]
    return [pathlib.Path(p) for p in paths], df.target.to_numpy(dtype=np.float64)


def audio_tasks(combos_n_layers_cb):
    """Extract features for the audio tasks: yields (Task, failures)."""
    from transfer_jax import runtime

    if FLAGS.tune_malloc:
        runtime.tune_malloc()
    runtime.use_cpu_cores(FLAGS.cpu_devices or None)
    runtime.enable_compilation_cache()
    import jax
    import numpy as np

    from data_pipelines.folders import list_audio_folder
    from transfer_jax import audio as audio_lib
    from transfer_jax import baselines, checkpoint, evaluation, extraction
    from transfer_jax.model import init_variables

    model, variables = checkpoint.load_pretrained(FLAGS.checkpoint)
    combos_n_layers_cb(model.config.n_layers)
    fe = model.config.frontend
    random_model = model.clone(norm="per_clip")
    if FLAGS.targets_csv:
        name = FLAGS.task[0] if FLAGS.task else pathlib.Path(FLAGS.targets_csv).stem
        sources = {name: (*read_targets_csv(pathlib.Path(FLAGS.targets_csv)), "regression")}
    else:
        sources = {}
        for task, folder in task_folders().items():
            paths, y, classes = list_audio_folder(folder)
            sources[task] = (paths, y, "classification")
    for task, (paths, y, task_type) in sources.items():
        print(f"{task}: {len(paths)} clips" + (f", {len(np.unique(y))} classes" if task_type == "classification" else ""))
        heldout = None
        if FLAGS.split_dir:  # before extraction: a bad split file fails fast
            from transfer_jax import splits

            heldout = splits.load_split_dir(FLAGS.split_dir, [str(p) for p in paths])
            splits.check_split_labels(heldout, y, task_type)
        conv, failures = extraction.extract_files(variables, paths, model=model,
                                                  batch_size=FLAGS.batch_size, progress=True)
        ok = ~np.isnan(conv).any(axis=(1, 2))
        good_paths = [p for p, good in zip(paths, ok) if good]
        waves = [audio_lib.fit_length(audio_lib.load_audio(p, fe.sample_rate), fe.n_samples, fe.short_policy)
                 for p in good_paths]
        sets = evaluation.FeatureSets(
            convnet=conv[ok], mfcc=baselines.mfcc_features_batch(waves, fe.sample_rate, fe.n_samples),
            random={s: extraction.extract_files(init_variables(random_model, jax.random.key(s)), good_paths,
                                                model=random_model, batch_size=FLAGS.batch_size)[0]
                    for s in range(FLAGS.random_seeds)})
        if heldout is not None:
            heldout, dropped = heldout.subset(ok)
            print(f"{task}: held-out split {'/'.join(map(str, heldout.sizes()))} (train/valid/test)"
                  + (f", {dropped} listed clip(s) dropped: they failed to load" if dropped else ""))
        yield (evaluation.Task(task, task_type, y[ok], sets, clips=[str(p) for p in good_paths], heldout=heldout),
               [(task, p, r) for p, r in failures])


def precomputed_tasks():
    from transfer_jax import evaluation

    if not FLAGS.csv_dir or not FLAGS.task:
        raise app.UsageError("--precomputed_dir needs --csv_dir and --task")
    for name in FLAGS.task:
        task = evaluation.load_precomputed(FLAGS.precomputed_dir, FLAGS.csv_dir, name, split_dir=FLAGS.split_dir)
        if task.heldout is not None:
            print(f"{name}: held-out split {'/'.join(map(str, task.heldout.sizes()))} (train/valid/test)")
        yield task, []


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    import pandas as pd

    from transfer_jax import evaluation, probe

    protocols = list(FLAGS.protocols)
    if FLAGS.split_dir:
        if (FLAGS.task is not None and len(FLAGS.task) != 1) or (
                FLAGS.task is None and not (FLAGS.audio_dir or FLAGS.targets_csv)):
            raise app.UsageError("--split_dir applies to one task: give a single --task")
        if "heldout" not in protocols:
            protocols.append("heldout")
    elif "heldout" in protocols:
        raise app.UsageError("the heldout protocol needs --split_dir (train/valid/test split files)")
    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    combos: list[str] = []

    def set_combos(n_layers: int) -> None:
        combos[:] = probe.layer_combinations(n_layers) if FLAGS.layers == ["all"] else FLAGS.layers

    if FLAGS.precomputed_dir:
        set_combos(5)
        tasks = precomputed_tasks()
    else:
        tasks = audio_tasks(set_combos)
    all_results, all_failures = [], []
    for task, failures in tasks:
        all_failures += failures
        df = evaluation.evaluate_task(task, combos=combos, protocols=protocols, n_splits=FLAGS.n_splits,
                                      inner_splits=FLAGS.inner_splits, n_jobs=FLAGS.n_jobs,
                                      cache_dir=out / "cache" if FLAGS.cache else None, progress=True)
        all_results.append(df)
    results = pd.concat(all_results, ignore_index=True)
    table = evaluation.write_outputs(results, out)
    pd.DataFrame(all_failures, columns=["task", "path", "reason"]).to_csv(out / "failures.csv", index=False)
    print(table.to_string(index=False))
    if all_failures:
        print(f"{len(all_failures)} files could not be used: see {out / 'failures.csv'}")
    print(f"wrote {out}/<task>.csv, <task>.png, {out / 'summary.md'}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
