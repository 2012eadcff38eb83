import csv
import dataclasses

import numpy as np

from transfer_jax.model import Tagger
from transfer_jax.training_loop import ArrayBatches, FitConfig, TaggingData, fit


def _data(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, 6)).astype(np.uint8)
    mel = (rng.normal(size=(n, 96, 71)) * 5 - 40 + 15 * labels[:, :1, None]).astype(np.float16)
    return TaggingData(mel, labels)


@dataclasses.dataclass
class RecordingSource:
    """A streaming source (like tf.data): records which (epoch, start) it was asked for."""

    inner: ArrayBatches
    calls: list = dataclasses.field(default_factory=list)
    steps_per_epoch: int = 0
    n_frames: int = 71

    def __post_init__(self):
        self.steps_per_epoch = self.inner.steps_per_epoch

    def epoch(self, epoch, start=0):
        self.calls.append((epoch, start))
        return self.inner.epoch(epoch, start)


def test_fit_with_a_streaming_source_resumes_at_the_next_epoch(tmp_path, small_config):
    train, valid = _data(48, 0), _data(32, 1)
    cfg = FitConfig(epochs=1, batch_size=16, eval_batch_size=16)
    source = RecordingSource(ArrayBatches(train, 16, seed=0))
    row = fit(Tagger(small_config, norm="train"), source, valid, tmp_path, cfg, progress=False)
    assert source.calls == [(0, 0)] and row["step"] == 3
    source.calls.clear()
    row = fit(Tagger(small_config, norm="train"), source, valid, tmp_path,
              dataclasses.replace(cfg, epochs=2), progress=False)
    assert source.calls == [(1, 0)] and row["step"] == 6
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_in_memory_batches_cover_the_epoch_once():
    data = _data(50, 2)
    batches = list(ArrayBatches(data, 16, seed=1).epoch(0))
    assert len(batches) == 3 and all(m.shape == (16, 96, 71) and y.dtype == np.float32 for m, y in batches)
    seen = np.concatenate([m[:, 0, 0] for m, _ in batches])
    assert len(np.unique(seen)) == 48
    later = list(ArrayBatches(data, 16, seed=1).epoch(0, start=2))
    np.testing.assert_array_equal(later[0][0], batches[2][0])
