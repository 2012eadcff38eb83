import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np

from transfer_jax import train
from transfer_jax.model import Tagger
from transfer_jax.training_loop import epoch_order

SHARDED_VS_SINGLE = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    from transfer_jax import train
    from transfer_jax.config import FrontendConfig, ModelConfig
    from transfer_jax.model import Tagger

    cfg = ModelConfig(pools=((2, 2), (3, 2), (2, 2), (2, 2), (4, 2)), n_classes=6,
                      frontend=FrontendConfig(n_samples=18_176))
    # SGD: Adam's first steps are ~lr * sign(grad), which amplifies float noise in
    # near-zero gradients and would hide what this compares
    model, tx = Tagger(cfg, norm="train"), train.make_optimizer(1e-2, "sgd")
    rng = np.random.default_rng(0)
    batches = [((rng.normal(size=(8, 96, 71)) * 10 - 40).astype(np.float32),
                rng.integers(0, 2, (8, 6)).astype(np.float32)) for _ in range(3)]
    results = {}
    for name, devices in (("four", jax.devices()), ("one", jax.devices()[:1])):
        mesh = train.make_mesh(devices)
        state = jax.device_put(train.create_train_state(jax.random.key(0), model, tx, 71),
                               train.replicated(mesh))
        step = train.jit_sharded(train.make_train_step(model, tx), mesh)
        for mel, labels in batches:
            mel, labels = train.shard_batch(mesh, mel, labels)
            n_shards = len(mel.sharding.device_set)
            state, metrics = step(state, mel, labels)
        results[name] = (jax.device_get(state.variables), n_shards, float(metrics["loss"]))
    (v4, n4, l4), (v1, n1, l1) = results["four"], results["one"]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(v4), jax.tree.leaves(v1)))
    # predict with variables on one device (as a loaded checkpoint is) over either mesh;
    # 10 clips: the last batch of 8 is ragged
    from transfer_jax.training_loop import predict
    eval_fn = jax.jit(train.make_eval_step(model.clone(norm="running")))
    on_one = jax.device_put(v1, jax.devices()[0])
    probs = [predict(eval_fn, on_one, np.concatenate(batches[0][0:1] + batches[1][0:1])[:10], 8,
                     train.make_mesh(d)) for d in (jax.devices(), jax.devices()[:1])]
    print(json.dumps({"devices": len(jax.devices()), "shards": [n4, n1], "diff": diff,
                      "loss": [l4, l1], "probs_shape": list(probs[0].shape),
                      "probs_diff": float(np.abs(probs[0] - probs[1]).max())}))
""")


def test_sharded_step_equals_single_device_step():
    """4 fake CPU devices: the data-parallel step gives the same new params and batch
    statistics as the single-device step (BatchNorm sees the global batch); `predict` of a
    checkpoint held on one device gives the same probabilities over 4 devices as over 1."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run([sys.executable, "-c", SHARDED_VS_SINGLE], env=env, capture_output=True,
                         text=True, timeout=300, cwd=pathlib.Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["devices"] == 4 and r["shards"] == [4, 1]
    assert r["diff"] < 2e-5, r
    assert abs(r["loss"][0] - r["loss"][1]) < 1e-5
    assert r["probs_shape"] == [10, 6] and r["probs_diff"] < 1e-5


def test_training_steps_learn_a_learnable_problem(small_config):
    # momentum 0.9: the running averages settle within the 40 steps
    model = Tagger(dataclasses.replace(small_config, bn_momentum=0.9), norm="train")
    tx = train.make_optimizer(3e-3)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (32, 6)).astype(np.float32)
    mel = (rng.normal(size=(32, 96, 71)) * 5 - 40).astype(np.float32)
    mel[:, :16] += 20 * labels[:, 0, None, None]  # tag 0: loud low band
    mel[:, 48:] += 20 * labels[:, 1, None, None]  # tag 1: loud high band
    mesh = train.make_mesh()
    state = train.create_train_state(jax.random.key(0), model, tx, 71, mesh=mesh)
    traces, train_step = [], train.make_train_step(model, tx)
    step = train.jit_sharded(lambda *a: traces.append(1) or train_step(*a), mesh)
    losses = []
    for _ in range(40):
        state, m = step(state, *train.shard_batch(mesh, mel, labels))
        losses.append(float(m["loss"]))
    assert int(state.step) == 40 and losses[-1] < 0.75 * losses[0]
    assert len(traces) == 1, "the train step was traced (and compiled) more than once"
    probs = np.asarray(jax.jit(train.make_eval_step(model))(state.variables, mel))
    assert np.mean((probs[:, :2] > 0.5) == labels[:, :2]) > 0.9


def test_epoch_order_is_deterministic_and_drops_the_remainder():
    a = epoch_order(70, 16, seed=3, epoch=2)
    assert a.shape == (4, 16) and len(np.unique(a)) == 64
    np.testing.assert_array_equal(a, epoch_order(70, 16, seed=3, epoch=2))
    assert not np.array_equal(a, epoch_order(70, 16, seed=3, epoch=3))
