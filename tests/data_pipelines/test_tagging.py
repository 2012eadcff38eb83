import numpy as np

from data_pipelines import msd_layout, synthetic, tagging
from transfer_jax import frontend
from transfer_jax.audio import fit_length, load_audio
from transfer_jax.config import FrontendConfig

CFG = FrontendConfig(n_samples=18_176)


def test_load_split_computes_caches_and_records_rejects(tmp_path):
    root = synthetic.write_tagging_corpus(tmp_path / "corpus", n_train=10, n_valid=4, n_test=4,
                                          seconds=1.6, seed=5, workers=1)
    split_dir, audio_root = root / "split", root / "audio"
    index = msd_layout.read_split(split_dir, "train")
    broken = msd_layout.audio_path(audio_root, index.filenames[3])
    broken.write_bytes(b"\x00garbage")
    missing = msd_layout.audio_path(audio_root, index.filenames[7])
    missing.unlink()

    got = tagging.load_split(split_dir, audio_root, "train", CFG, progress=False)
    assert got.mel.shape == (8, 96, 71) and got.mel.dtype == np.float16
    assert {p for p, _ in got.rejects} == {str(broken), str(missing)}
    keep = [i for i in range(10) if i not in (3, 7)]
    np.testing.assert_array_equal(got.labels, index.labels[keep])
    assert got.ids == [index.ids_7d[i] for i in keep]
    # the cached log-mels are the frontend's, row for row
    first = fit_length(load_audio(msd_layout.audio_path(audio_root, index.filenames[0])), CFG.n_samples)
    np.testing.assert_allclose(got.mel[0], np.asarray(frontend.log_mel_jit(first[None], CFG, "clip"))[0],
                               atol=0.05)  # float16 storage
    # a second call reads the cache: the same arrays, rejects remembered
    again = tagging.load_split(split_dir, audio_root, "train", CFG, progress=False)
    np.testing.assert_array_equal(np.asarray(again.mel), np.asarray(got.mel))
    assert again.rejects == got.rejects


def test_load_split_without_labels_is_a_clear_error(tmp_path):
    import pytest

    root = synthetic.write_tagging_corpus(tmp_path / "c", n_train=4, n_valid=2, n_test=2, seconds=1.0,
                                          seed=1, workers=1)
    (root / "split" / "test_y.npy").unlink()
    with pytest.raises(FileNotFoundError, match="test_y.npy"):
        tagging.load_split(root / "split", root / "audio", "test", CFG, progress=False)
