"""Shared test setup: a persistent compilation cache, the anchors, small model configs."""
from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors" / "choi2017"
os.environ.setdefault("TRANSFER_JAX_CACHE", str(ROOT / ".jax_cache"))

from transfer_jax import runtime  # noqa: E402

runtime.enable_compilation_cache()


@pytest.fixture
def anchors() -> pathlib.Path:
    if not ANCHORS.exists():
        pytest.skip(f"anchors not found at {ANCHORS} (../shared/anchors/choi2017)")
    return ANCHORS


@pytest.fixture
def small_config():
    """The CPU default's network on 1.5 s inputs: fast enough for unit tests."""
    from transfer_jax.config import FrontendConfig, ModelConfig

    return ModelConfig(pools=((2, 2), (3, 2), (2, 2), (2, 2), (4, 2)), n_classes=6,
                       frontend=FrontendConfig(n_samples=18_176))  # 71 frames


@pytest.fixture
def perturb():
    """f(model, seed) -> variables whose BatchNorm scales have both signs and whose biases
    and running statistics are far from their initial values (initial ones hide bugs)."""
    import jax
    import numpy as np

    from transfer_jax.model import init_variables

    def f(model, seed: int = 0) -> dict:
        v = init_variables(model, jax.random.key(seed))
        rng = np.random.default_rng(seed)
        params = jax.tree_util.tree_map(np.asarray, v["params"])
        stats = jax.tree_util.tree_map(np.asarray, v["batch_stats"])
        c = model.config.channels
        for i in range(1, model.config.n_layers + 1):
            params[f"conv{i}"]["bias"] = rng.normal(0, 0.5, c).astype(np.float32)
            params[f"bn{i}"]["scale"] = rng.normal(0, 1.0, c).astype(np.float32)
            params[f"bn{i}"]["bias"] = rng.normal(0, 0.5, c).astype(np.float32)
            stats[f"bn{i}"]["mean"] = rng.normal(0, 2.0, c).astype(np.float32)
            stats[f"bn{i}"]["var"] = rng.uniform(0.2, 5.0, c).astype(np.float32)
        assert any((params[f"bn{i}"]["scale"] < 0).any() for i in range(1, model.config.n_layers + 1))
        return {"params": params, "batch_stats": stats}

    return f
