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
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(__file__).parent / "configs" / "default.py"), "Training config.")


def tagging_splits(config):
    """(split_dir, audio_root, tag names): the synthetic corpus is written on first use."""
    from data_pipelines import msd_layout, synthetic

    if config.data.source == "synthetic":
        root = synthetic.write_tagging_corpus(
            pathlib.Path(config.data.root) / "synthetic_tagging", config.data.n_train,
            config.data.n_valid, config.data.n_test, config.data.clip_seconds, config.data.seed)
        split_dir, audio_root = root / "split", root / "audio"
    elif config.data.source == "msd":
        if not config.data.split_dir or not config.data.audio_root:
            raise app.UsageError("--config.data.split_dir and --config.data.audio_root are required for msd")
        split_dir, audio_root = pathlib.Path(config.data.split_dir), pathlib.Path(config.data.audio_root)
    else:
        raise app.UsageError(f"unknown data.source {config.data.source!r} (synthetic, msd, msd_tfrecord)")
    return split_dir, audio_root, msd_layout.read_tag_names(split_dir)


def tfrecord_data(config):
    """(train BatchSource streamed from the shards, valid TaggingData, test loader, tags, frontend).

    The frontend is the one the shards were prepared with (meta.json); validation and
    test log-mels are read into memory (float16), the training split is streamed.
    """
    from data_pipelines import input_pipeline
    from transfer_jax.config import FrontendConfig
    from transfer_jax.training_loop import TaggingData

    if not config.data.tfrecord_dir:
        raise app.UsageError("--config.data.tfrecord_dir is required for msd_tfrecord")
    root = pathlib.Path(config.data.tfrecord_dir)
    meta = input_pipeline.read_meta(root)
    fe = FrontendConfig(**meta["frontend"])
    if fe.n_samples != config.frontend.n_samples:
        print(f"note: using the prepared frontend ({fe.n_samples} samples, {fe.n_frames} frames), "
              f"not config.frontend.n_samples={config.frontend.n_samples}")
    train = input_pipeline.TFRecordBatches(root, config.train.batch_size, seed=config.train.seed,
                                           shuffle_buffer=config.data.shuffle_buffer,
                                           deterministic=config.data.deterministic)

    def arrays(split):
        mel, labels, _ = input_pipeline.load_arrays(root, split)
        return TaggingData(mel, labels)

    valid = arrays("valid")
    print(f"train: {len(train.prepared)} clips streamed from {root / 'train'} ({train.steps_per_epoch} steps/epoch); "
          f"valid: {len(valid)} clips")
    return train, valid, lambda: arrays("test"), tuple(meta["tags"]), fe


def main(argv):
    del argv
    config = _CONFIG.value
    logging.set_verbosity(logging.ERROR)  # orbax logs every save
    from transfer_jax import runtime

    runtime.maybe_initialize_distributed(config.distributed.coordinator_address or None,
                                         config.distributed.num_processes or None,
                                         config.distributed.process_id)
    runtime.enable_compilation_cache(config.compilation_cache or None)

    import dataclasses

    from data_pipelines import tagging
    from transfer_jax import checkpoint, train
    from transfer_jax.config import FrontendConfig, ModelConfig
    from transfer_jax.metrics import tagging_metrics
    from transfer_jax.model import Tagger
    from transfer_jax.training_loop import FitConfig, TaggingData, fit, predict

    if config.data.source == "msd_tfrecord":
        train_data, valid_data, load_test, tags, fe = tfrecord_data(config)
        trained_on = str(config.data.tfrecord_dir)
    else:
        split_dir, audio_root, tags = tagging_splits(config)
        fe = FrontendConfig(**config.frontend.to_dict())
        load = lambda split: tagging.load_split(split_dir, audio_root, split, fe,  # noqa: E731
                                                cache_dir=config.data.cache_dir or None)
        splits = {s: load(s) for s in ("train", "valid", "test")}
        for s, d in splits.items():
            print(f"{s}: {len(d.mel)} clips"
                  + (f", {len(d.rejects)} rejected (see cache rejects csv)" if d.rejects else ""))
        data = {s: TaggingData(d.mel, d.labels) for s, d in splits.items()}
        train_data, valid_data, load_test = data["train"], data["valid"], lambda: data["test"]
        trained_on = str(split_dir)
    model_cfg = ModelConfig(channels=config.model.channels,
                            pools=tuple(tuple(p) for p in config.model.pools),
                            n_classes=len(tags), frontend=fe)

    workdir = pathlib.Path(config.workdir)
    model = Tagger(model_cfg, norm="train")
    meta = checkpoint.model_metadata(model.clone(norm="running"), tags=list(tags), db_ref="clip",
                                     trained_on=trained_on)
    fit(model, train_data, valid_data, workdir, FitConfig(**config.train.to_dict()), metadata=meta)
    del train_data, valid_data
    test_data = load_test()

    # Held-out test score of the best checkpoint (by validation ROC-AUC).
    best_model, variables = checkpoint.load_pretrained(workdir / "checkpoints", which="best")
    import jax

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
