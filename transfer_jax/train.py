"""Pure-functional training: a train state pytree, jitted train/eval steps, and data
parallelism over every device with `jax.sharding` (a 1-D 'data' mesh: batches sharded
along it, the state replicated). Under jit, BatchNorm's batch statistics are computed
over the global batch, so a sharded step equals the single-device step.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from transfer_jax.model import Tagger, init_variables


@flax.struct.dataclass
class TrainState:
    """Everything a training run needs to continue: a pytree of arrays."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    @property
    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(rng: jax.Array, model: Tagger, tx: optax.GradientTransformation,
                       n_frames: int | None = None, mesh: Mesh | None = None) -> TrainState:
    """A fresh state; with `mesh`, replicated over it as `jit_sharded` returns it, so the
    first step's compilation serves every later step (otherwise the second step, whose
    input carries the mesh's sharding, compiles again)."""
    init_rng, rng = jax.random.split(rng)
    variables = init_variables(model, init_rng, n_frames)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                       batch_stats=variables["batch_stats"],
                       opt_state=tx.init(variables["params"]), rng=rng)
    return state if mesh is None else jax.device_put(state, replicated(mesh))


def make_optimizer(learning_rate: float = 1e-3, name: str = "adam") -> optax.GradientTransformation:
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "sgd":
        return optax.sgd(learning_rate, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r} (adam, sgd)")


def make_train_step(model: Tagger, tx: optax.GradientTransformation) -> Callable:
    """(state, mel (batch, n_mels, frames), labels (batch, n_classes)) -> (state, metrics)."""
    train_model = model.clone(norm="train")

    def train_step(state: TrainState, mel: jax.Array, labels: jax.Array):
        mel = mel.astype(jnp.float32)

        def loss_fn(params):
            (logits, _), updates = train_model.apply(
                {"params": params, "batch_stats": state.batch_stats}, mel,
                mutable=["batch_stats"])
            loss = optax.sigmoid_binary_cross_entropy(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  batch_stats=batch_stats, opt_state=opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    return train_step


def make_eval_step(model: Tagger) -> Callable:
    """(variables, mel) -> tag probabilities (batch, n_classes), running-average BN."""
    eval_model = model.clone(norm="running") if model.norm == "train" else model

    def eval_step(variables: dict, mel: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(eval_model.apply(variables, mel)[0])

    return eval_step


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all devices (all hosts' devices under jax.distributed)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def jit_sharded(train_step: Callable, mesh: Mesh) -> Callable:
    """Jits a train step with the state replicated and the batch split along 'data'."""
    repl, data = replicated(mesh), data_sharding(mesh)
    return jax.jit(train_step, in_shardings=(repl, data, data), out_shardings=(repl, repl),
                   donate_argnums=0)


def shard_batch(mesh: Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Host-local numpy batches -> global arrays sharded along 'data'.

    With several processes each host passes its own slice of the global batch.
    """
    sharding = data_sharding(mesh)
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)) for a in arrays)
