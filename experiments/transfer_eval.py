"""Transfer evaluation: convnet features vs random weights vs MFCC on target tasks.

    python experiments/transfer_eval.py                     # embedded synthetic tasks
    python experiments/transfer_eval.py --audio_dir DIR --task NAME --checkpoint CKPT

A task folder holds one subfolder per class of audio files. Writes <out>/<task>.csv,
<out>/summary.md and <out>/failures.csv (files that could not be used).
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
flags.DEFINE_string("task", None, "Name of the --audio_dir task.")
flags.DEFINE_string("out", "results/transfer", "Output folder.")
flags.DEFINE_list("layers", ["1", "2", "3", "4", "5", "12345"],
                  "Layer combinations to evaluate ('all' for all 31).")
flags.DEFINE_integer("random_seeds", 3, "Random-weight networks to average.")
flags.DEFINE_bool("scale", True, "Standardise features before the SVM.")
flags.DEFINE_integer("n_splits", 10, "Stratified CV folds.")
flags.DEFINE_integer("batch_size", 16, "Extraction batch size.")
flags.DEFINE_integer("n_jobs", 1, "Parallel grid-search jobs.")
FLAGS = flags.FLAGS


def task_folders() -> dict[str, pathlib.Path]:
    if FLAGS.audio_dir:
        return {FLAGS.task or pathlib.Path(FLAGS.audio_dir).name: pathlib.Path(FLAGS.audio_dir)}
    root = pathlib.Path(FLAGS.tasks_dir)
    if not root.exists() or (root / "manifest.json").exists():
        from data_pipelines import synthetic

        synthetic.write_target_tasks(root)  # idempotent: a no-op when already written
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    from transfer_jax import runtime

    runtime.enable_compilation_cache()
    import jax
    import numpy as np
    import pandas as pd

    from data_pipelines.folders import list_audio_folder
    from transfer_jax import audio as audio_lib
    from transfer_jax import baselines, checkpoint, evaluation, extraction, probe
    from transfer_jax.model import init_variables

    model, variables = checkpoint.load_pretrained(FLAGS.checkpoint)
    fe = model.config.frontend
    combos = probe.layer_combinations(model.config.n_layers) if FLAGS.layers == ["all"] else FLAGS.layers
    random_model = model.clone(norm="per_clip")
    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    all_results, all_failures = [], []
    for task, folder in task_folders().items():
        paths, y, classes = list_audio_folder(folder)
        print(f"{task}: {len(paths)} clips, {len(classes)} classes")
        conv, failures = extraction.extract_files(variables, paths, model=model,
                                               batch_size=FLAGS.batch_size, progress=True)
        ok = ~np.isnan(conv).any(axis=(1, 2))
        all_failures += [(task, p, r) for p, r in failures]
        waves = [audio_lib.fit_length(audio_lib.load_audio(p, fe.sample_rate), fe.n_samples, fe.short_policy)
                 for p, good in zip(paths, ok) if good]
        good_paths = [p for p, good in zip(paths, ok) if good]
        sets = evaluation.FeatureSets(
            convnet=conv[ok], mfcc=baselines.mfcc_features_batch(waves, fe.sample_rate, fe.n_samples),
            random={s: extraction.extract_files(init_variables(random_model, jax.random.key(s)), good_paths,
                                             model=random_model, batch_size=FLAGS.batch_size)[0]
                    for s in range(FLAGS.random_seeds)})
        df = evaluation.evaluate_task(task, sets, y[ok], combos=combos, scale=FLAGS.scale,
                                      n_splits=FLAGS.n_splits, n_jobs=FLAGS.n_jobs)
        df.to_csv(out / f"{task}.csv", index=False)
        all_results.append(df)
    results = pd.concat(all_results, ignore_index=True)
    table = evaluation.summary_table(results)
    (out / "summary.md").write_text(table.to_markdown(index=False) + "\n")
    pd.DataFrame(all_failures, columns=["task", "path", "reason"]).to_csv(out / "failures.csv", index=False)
    print(table.to_string(index=False))
    if all_failures:
        print(f"{len(all_failures)} files could not be used: see {out / 'failures.csv'}")
    print(f"wrote {out}/<task>.csv, {out / 'summary.md'}")


if __name__ == "__main__":
    app.run(main)
