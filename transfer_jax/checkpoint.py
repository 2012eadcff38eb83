"""Orbax checkpoints: training runs that resume, and pretrained models other projects load.

A checkpoint step holds three items:
- "variables": {'params', 'batch_stats'}, everything inference needs;
- "train": the rest of the train state (optimizer state, step, rng), for resuming;
- "metadata": JSON with the model config and how to run it (normalisation mode,
  dB reference), so that `load_pretrained` rebuilds the right model.
A training directory keeps the latest step and the best one (by a validation metric).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from transfer_jax.config import model_config_from_dict
from transfer_jax.model import Tagger, init_variables

BEST_METRIC = "valid_roc_auc"


def checkpoint_manager(directory: str | os.PathLike, *, best_metric: str = BEST_METRIC,
                       keep_latest: int = 1, read_only: bool = False) -> ocp.CheckpointManager:
    """Keeps the `keep_latest` newest steps and the best step by `best_metric` (max)."""
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(keep_latest),
        policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=False, n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation, best_fn=lambda m: m[best_metric], best_mode="max",
        read_only=read_only, enable_async_checkpointing=False)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options,
                                 item_names=("variables", "train", "metadata"))


def model_metadata(model: Tagger, **extra: Any) -> dict:
    """JSON-friendly description of a model: its config and inference settings."""
    return {"model_config": dataclasses.asdict(model.config), "norm": model.norm, **extra}


def save(mngr: ocp.CheckpointManager, step: int, state, metadata: dict,
         metrics: dict | None = None) -> None:
    """Saves a train state (anything with params, batch_stats, opt_state, step, rng)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    train = {"opt_state": state.opt_state, "step": state.step, "rng": jax.random.key_data(state.rng)}
    mngr.save(step, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), train=ocp.args.StandardSave(train),
        metadata=ocp.args.JsonSave(metadata)),
        metrics={k: float(v) for k, v in (metrics or {}).items()} or None)
    mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, target_state, step: int | None = None):
    """Restores a train state shaped like `target_state` from `step` (default latest),
    or returns None when the directory holds no checkpoint."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        return None
    variables = {"params": target_state.params, "batch_stats": target_state.batch_stats}
    train = {"opt_state": target_state.opt_state, "step": target_state.step,
             "rng": jax.random.key_data(target_state.rng)}
    got = mngr.restore(step, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(variables), train=ocp.args.StandardRestore(train)))
    return target_state.replace(
        params=got.variables["params"], batch_stats=got.variables["batch_stats"],
        opt_state=got.train["opt_state"], step=got.train["step"],
        rng=jax.random.wrap_key_data(got.train["rng"]))


def save_pretrained(directory: str | os.PathLike, variables: dict, metadata: dict,
                    step: int = 0) -> pathlib.Path:
    """Writes inference-only variables + metadata, loadable with `load_pretrained`."""
    directory = pathlib.Path(directory).absolute()
    with ocp.CheckpointManager(directory, item_names=("variables", "metadata"),
                               options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)) as mngr:
        mngr.save(step, args=ocp.args.Composite(
            variables=ocp.args.StandardSave(variables), metadata=ocp.args.JsonSave(metadata)), force=True)
        mngr.wait_until_finished()
    return directory


def load_pretrained(path: str | os.PathLike, which: str = "best") -> tuple[Tagger, dict]:
    """(model, variables) from a checkpoint directory: a training run's (its best step,
    or `which="latest"`) or one written by `save_pretrained`.

    The model is a `Tagger` with the stored config and inference normalisation mode, so
    `model.apply(variables, mel)` and `extract(variables, audio, model=model)` just work.
    """
    path = pathlib.Path(path).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no checkpoint directory here")
    with ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True, best_fn=lambda m: m.get(BEST_METRIC, -np.inf), best_mode="max")) as mngr:
        step = mngr.best_step() if which == "best" else None
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{path}: no checkpoint steps found")
        meta = mngr.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata
        config = model_config_from_dict(meta["model_config"])
        norm = meta.get("norm", "running")
        model = Tagger(config, norm="running" if norm == "train" else norm)
        target = init_variables(model, jax.random.key(0))
        got = mngr.restore(step, args=ocp.args.Composite(variables=ocp.args.StandardRestore(target)))
    return model, dict(got.variables)


def load_metadata(path: str | os.PathLike) -> dict:
    """The metadata JSON of a checkpoint directory's latest step."""
    path = pathlib.Path(path).absolute()
    with ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
        step = mngr.latest_step()
        if step is None:
            raise FileNotFoundError(f"{path}: no checkpoint steps found")
        return dict(mngr.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata)
