"""Checkpoints written by earlier versions load unchanged and give the same outputs.

`tests/fixtures/tagger_v1` was written by `save_pretrained` with the
five-block CPU-default network on 71-frame inputs, perturbed BatchNorm parameters and
running statistics, before the model was rewritten with `nn.Conv`; `outputs.npz` holds
its input log-mels (3, 96, 71) and the logits, features and updated running statistics
that version computed in every normalisation mode.
"""
import pathlib

import numpy as np
import pytest

import transfer_jax as tj

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "tagger_v1"


@pytest.fixture(scope="module")
def stored():
    model, variables = tj.load_pretrained(FIXTURE / "checkpoint")
    return model, variables, dict(np.load(FIXTURE / "outputs.npz"))


@pytest.mark.parametrize("norm", ["running", "per_clip", "batch"])
def test_stored_checkpoint_gives_stored_outputs(stored, norm):
    model, variables, out = stored
    logits, feats = model.clone(norm=norm).apply(variables, out["mel"])
    np.testing.assert_allclose(feats, out[f"{norm}_features"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, out[f"{norm}_logits"], rtol=1e-4, atol=1e-5)


def test_stored_checkpoint_trains_as_before(stored):
    model, variables, out = stored
    (logits, _), upd = model.clone(norm="train").apply(variables, out["mel"], mutable=["batch_stats"])
    np.testing.assert_allclose(logits, out["train_logits"], rtol=1e-4, atol=1e-5)
    for i in range(1, 6):
        for k in ("mean", "var"):
            np.testing.assert_allclose(upd["batch_stats"][f"bn{i}"][k], out[f"train_bn{i}_{k}"], rtol=1e-4, atol=1e-5)


def test_stored_checkpoint_extracts_as_before(stored):
    model, variables, out = stored
    np.testing.assert_allclose(tj.extract(variables, out["mel"], model=model.clone(norm="per_clip")),
                               out["per_clip_features"], rtol=1e-4, atol=1e-5)
