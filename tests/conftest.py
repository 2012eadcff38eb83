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
