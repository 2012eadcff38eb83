"""The tagger's training loop: epochs of sharded train steps, validation ROC-AUC/PR-AUC,
a CSV log, TensorBoard events and orbax checkpoints (latest + best) that resume.

Resuming is exact: the batch order of an epoch is a pure function of (seed, epoch) and
the state holds the step and rng, so a run killed at any point and started again ends
with the same parameters as an uninterrupted run.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import time
from collections.abc import Iterator
from typing import Protocol

import jax
import numpy as np
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from transfer_jax import checkpoint as ckpt
from transfer_jax import train
from transfer_jax.metrics import tagging_metrics
from transfer_jax.model import Tagger

LOG_FIELDS = ("epoch", "step", "train_loss", "valid_roc_auc", "valid_pr_auc", "seconds")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    epochs: int = 5
    batch_size: int = 32  # global, over all devices
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    checkpoint_every_steps: int = 0  # also save mid-epoch every N steps (0: epoch ends only)
    eval_batch_size: int = 64


@dataclasses.dataclass
class TaggingData:
    """mel: (n_clips, n_mels, frames) log-mels in dB (float16 is fine); labels: (n_clips, n_tags)."""

    mel: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if len(self.mel) != len(self.labels):
            raise ValueError(f"{len(self.mel)} mels but {len(self.labels)} label rows")

    def __len__(self) -> int:
        return len(self.mel)


class BatchSource(Protocol):
    """Training batches for `fit`: this host's slice of each global batch.

    `epoch(e, start)` yields the batches of epoch e from step `start` on, the same ones
    every time it is called (that is what makes resuming exact).
    """

    steps_per_epoch: int
    n_frames: int

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """(steps_per_epoch, batch_size) clip indices; the remainder is dropped."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = n // batch_size
    return perm[: steps * batch_size].reshape(steps, batch_size)


def host_slice(batch: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch (all of it on one host)."""
    n = len(batch) // jax.process_count()
    return batch[jax.process_index() * n:(jax.process_index() + 1) * n]


@dataclasses.dataclass
class ArrayBatches:
    """In-memory training batches, shuffled per epoch by (seed, epoch)."""

    data: TaggingData
    batch_size: int
    seed: int = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data) // self.batch_size

    @property
    def n_frames(self) -> int:
        return self.data.mel.shape[-1]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = epoch_order(len(self.data), self.batch_size, self.seed, epoch)
        for idx in order[start:]:
            idx = host_slice(idx)
            yield self.data.mel[idx], self.data.labels[idx].astype(np.float32)


def predict(eval_fn, variables, mel: np.ndarray, batch_size: int, mesh) -> np.ndarray:
    """Tag probabilities (n_clips, n_tags); the last batch is padded to a full one.

    Every host holds `mel`; each feeds its slice of a batch and all get all results.
    `variables` are replicated over the mesh (a loaded checkpoint sits on one device).
    """
    variables = jax.device_put(variables, train.replicated(mesh))
    out = []
    for i in range(0, len(mel), batch_size):
        chunk = np.asarray(mel[i:i + batch_size], np.float32)
        padded = np.zeros((batch_size,) + chunk.shape[1:], np.float32)
        padded[: len(chunk)] = chunk
        (x,) = train.shard_batch(mesh, host_slice(padded))
        probs = eval_fn(variables, x)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            probs = multihost_utils.process_allgather(probs, tiled=True)
        out.append(np.asarray(jax.device_get(probs))[: len(chunk)])
    return np.concatenate(out)


def _rewrite_log(path: pathlib.Path, upto_step: int) -> None:
    """Drops log rows written after the checkpoint we resume from."""
    if not path.exists():
        return
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= upto_step]
    _write_rows(path, rows, mode="w")


def _write_rows(path: pathlib.Path, rows: list[dict], mode: str = "a") -> None:
    new = mode == "w" or not path.exists()
    with path.open(mode, newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


def fit(model: Tagger, train_data: TaggingData | BatchSource, valid_data: TaggingData,
        workdir: str | os.PathLike, cfg: FitConfig = FitConfig(), *,
        metadata: dict | None = None, mesh=None, progress: bool = True) -> dict:
    """Trains `model` and returns the last epoch's log row. Resumes from `workdir`.

    `train_data` is in-memory data (shuffled here by cfg.seed) or any `BatchSource`,
    e.g. a tf.data stream of prepared shards.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = mesh or train.make_mesh()
    n_dev = mesh.devices.size
    for name, bs in (("batch_size", cfg.batch_size), ("eval_batch_size", cfg.eval_batch_size)):
        if bs % n_dev:
            raise ValueError(f"{name}={bs} must be divisible by the {n_dev} devices")
    source = (ArrayBatches(train_data, cfg.batch_size, cfg.seed)
              if isinstance(train_data, TaggingData) else train_data)
    steps_per_epoch = source.steps_per_epoch
    if steps_per_epoch == 0:
        raise ValueError(f"the training data is smaller than one batch of {cfg.batch_size}")

    tx = train.make_optimizer(cfg.learning_rate, cfg.optimizer)
    state = train.create_train_state(jax.random.key(cfg.seed), model, tx, source.n_frames)
    mngr = ckpt.checkpoint_manager(workdir / "checkpoints")
    restored = ckpt.restore(mngr, state)
    state = jax.device_put(restored or state, train.replicated(mesh))
    start_step = int(state.step)
    if restored is not None:
        print(f"Resuming from step {start_step} in {workdir / 'checkpoints'}")
    log_path = workdir / "log.csv"
    _rewrite_log(log_path, start_step)
    metadata = metadata or ckpt.model_metadata(model.clone(norm="running"))

    train_step = train.jit_sharded(train.make_train_step(model, tx), mesh)
    eval_fn = jax.jit(train.make_eval_step(model))
    writer = SummaryWriter(str(workdir / "tensorboard")) if jax.process_index() == 0 else None
    row: dict = {}
    for epoch in range(start_step // steps_per_epoch, cfg.epochs):
        first = start_step - epoch * steps_per_epoch if epoch == start_step // steps_per_epoch else 0
        t0, losses = time.time(), []
        bar = tqdm(zip(range(first, steps_per_epoch), source.epoch(epoch, first)),
                   total=steps_per_epoch - first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        for i, (mel, labels) in bar:
            mel, labels = train.shard_batch(mesh, mel, labels)
            state, m = train_step(state, mel, labels)
            losses.append(m["loss"])
            step = epoch * steps_per_epoch + i + 1  # host-side: no device sync per step
            if i % 10 == 0:
                bar.set_postfix(loss=f"{float(m['loss']):.4f}")
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and i + 1 < steps_per_epoch:
                ckpt.save(mngr, step, state, metadata)
        probs = predict(eval_fn, state.variables, valid_data.mel, cfg.eval_batch_size, mesh)
        scores = tagging_metrics(valid_data.labels, probs)
        step = int(state.step)
        row = {"epoch": epoch + 1, "step": step,
               "train_loss": float(np.mean(jax.device_get(losses))) if losses else float("nan"),
               "valid_roc_auc": scores["roc_auc"], "valid_pr_auc": scores["pr_auc"],
               "seconds": round(time.time() - t0, 2)}
        print(f"epoch {epoch + 1}/{cfg.epochs}  step {step}  loss {row['train_loss']:.4f}  "
              f"valid ROC-AUC {row['valid_roc_auc']:.4f}  PR-AUC {row['valid_pr_auc']:.4f}  "
              f"({row['seconds']:.0f} s)", flush=True)
        if jax.process_index() == 0:
            _write_rows(log_path, [row])
            for k in LOG_FIELDS[2:]:
                writer.add_scalar(k, row[k], step)
            writer.flush()
        ckpt.save(mngr, step, state, metadata, {ckpt.BEST_METRIC: scores["roc_auc"]})
    mngr.close()
    if writer is not None:
        writer.close()
    return row
