"""Train the music tagger (the source task) and keep latest + best checkpoints.

    python experiments/train_tagger.py                       # CPU default, synthetic corpus
    python experiments/train_tagger.py --config experiments/configs/paper.py ...
    python experiments/train_tagger.py --config.train.epochs 10 --config.workdir runs/x
    python experiments/train_tagger.py --config experiments/configs/paper.py \
        --config.data.source msd_tfrecord --config.data.tfrecord_dir PREPARED   # prepare_msd.py output

Started again with the same workdir, it resumes from the latest checkpoint.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(__file__).parent / "configs" / "default.py"), "Training config.")


def main(argv):
    del argv
    config = _CONFIG.value
    logging.set_verbosity(logging.ERROR)  # orbax logs every save
    from transfer_jax import runtime

    if config.tune_malloc:
        runtime.tune_malloc()
    runtime.use_cpu_cores(config.cpu_devices or None,  # data-parallel over the cores (docs/benchmarks.md)
                          divides=math.gcd(config.train.batch_size, config.train.eval_batch_size))
    runtime.maybe_initialize_distributed(config.distributed.coordinator_address or None,
                                         config.distributed.num_processes or None,
                                         config.distributed.process_id)
    runtime.enable_compilation_cache(config.compilation_cache or None)

    import dataclasses

    import jax

    from data_pipelines import sources
    from transfer_jax import checkpoint, train
    from transfer_jax.config import FrontendConfig, ModelConfig
    from transfer_jax.metrics import tagging_metrics
    from transfer_jax.model import Tagger
    from transfer_jax.training_loop import FitConfig, fit, predict

    try:
        data = sources.load(config.data, FrontendConfig(**config.frontend.to_dict()),
                            config.train.batch_size, config.train.seed)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    fe, tags = data.frontend, data.tags
    model_cfg = ModelConfig(channels=config.model.channels,
                            pools=tuple(tuple(p) for p in config.model.pools),
                            n_classes=len(tags), frontend=fe)

    workdir = pathlib.Path(config.workdir)
    model = Tagger(model_cfg, norm="train")
    meta = checkpoint.model_metadata(model.clone(norm="running"), tags=list(tags), db_ref="clip",
                                     trained_on=data.origin)
    fit(model, data.train, data.valid, workdir, FitConfig(**config.train.to_dict()), metadata=meta)
    test_data = data.load_test()
    del data

    # Held-out test score of the best checkpoint (by validation ROC-AUC).
    best_model, variables = checkpoint.load_pretrained(workdir / "checkpoints", which="best")
    probs = predict(jax.jit(train.make_eval_step(best_model)), variables, test_data.mel,
                    config.train.eval_batch_size, train.make_mesh())
    scores = tagging_metrics(test_data.labels, probs)
    print(f"test (best checkpoint): ROC-AUC {scores['roc_auc']:.4f}  PR-AUC {scores['pr_auc']:.4f}")
    results = {"test": scores, "config": config.to_dict(), "model": dataclasses.asdict(model_cfg)}
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {workdir / 'checkpoints'} (latest + best), {workdir / 'log.csv'}, "
          f"{workdir / 'tensorboard'}, {workdir / 'results.json'}")


if __name__ == "__main__":
    app.run(main)
