"""Streamed extraction of long files equals whole-file extraction, in bounded memory."""
import json
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import soundfile as sf

from transfer_jax import audio as audio_lib
from transfer_jax import streaming
from transfer_jax.extraction import extract
from transfer_jax.model import Tagger, init_variables

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _write(path: pathlib.Path, seconds: float, sr: int, channels: int = 1, seed: int = 0,
           block_seconds: float = 60.0) -> pathlib.Path:
    """A PCM-16 file of tones and noise, written block by block (never whole in memory)."""
    rng = np.random.default_rng(seed)
    n, step = int(seconds * sr), int(block_seconds * sr)
    with sf.SoundFile(str(path), "w", sr, channels, subtype="PCM_16") as f:
        for start in range(0, n, step):
            t = np.arange(start, min(n, start + step)) / sr
            y = 0.3 * np.sin(2 * np.pi * (220 + 200 * np.sin(2 * np.pi * t / 7)) * t)
            y = y[:, None] + 0.05 * rng.normal(size=(len(t), channels))
            f.write(y.astype(np.float32))
    return path


@pytest.fixture
def setup(small_config):
    model = Tagger(small_config, norm="per_clip")
    return model, init_variables(model, jax.random.key(0))


@pytest.mark.parametrize("sr,channels,block", [(12_000, 1, 65_536), (44_100, 2, 10_000)])
def test_streamed_features_equal_whole_file_extraction(tmp_path, setup, sr, channels, block):
    model, v = setup  # 1.5 s inputs: a 3-minute file gives 118 segments, a ragged last batch
    path = _write(tmp_path / "long.wav", 180.3, sr, channels)
    whole = extract(v, [audio_lib.load_audio(path)], model=model, long_policy="mean")[0]
    got = streaming.stream_features(v, path, model=model, block_frames=block)
    assert got.shape == whole.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5)


def test_short_files_npy_and_batch_mode(tmp_path, setup):
    model, v = setup
    n = model.config.frontend.n_samples
    short = _write(tmp_path / "short.flac", 0.5 * n / 12_000, 12_000)
    for policy in ("tile", "pad"):
        np.testing.assert_allclose(
            streaming.stream_features(v, short, model=model, short_policy=policy),
            extract(v, [audio_lib.load_audio(short)], model=model, short_policy=policy)[0], atol=1e-5)
    y = audio_lib.load_audio(_write(tmp_path / "x.wav", 10 * n / 12_000 + 0.3, 12_000))
    np.save(tmp_path / "x.npy", y)
    np.testing.assert_allclose(streaming.stream_features(v, tmp_path / "x.npy", model=model, block_frames=5000),
                               extract(v, [y], model=model)[0], rtol=1e-5, atol=1e-5)
    batch = model.clone(norm="batch")  # consecutive segments, batches of 4, last one of 2
    np.testing.assert_allclose(streaming.stream_features(v, tmp_path / "x.npy", model=batch, batch_size=4),
                               extract(v, [y], model=batch, batch_size=4)[0], rtol=1e-5, atol=1e-5)


def test_bad_files_give_nan_rows_and_reasons(tmp_path, setup):
    model, v = setup
    good = _write(tmp_path / "good.wav", 4.0, 12_000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    paths = [str(good), str(tmp_path / "missing.wav"), str(tmp_path / "empty.wav"), str(tmp_path / "junk.wav")]
    feats, failures = streaming.stream_features_files(v, paths, model=model)
    assert np.all(np.isfinite(feats[0])) and np.all(np.isnan(feats[1:]))
    assert [p for p, _ in failures] == paths[1:]
    assert "not found" in failures[0][1] and "empty" in failures[1][1]
    with pytest.raises(audio_lib.AudioError):
        streaming.stream_features(v, tmp_path / "missing.wav", model=model)


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import jax
    from transfer_jax.model import Tagger, init_variables
    from transfer_jax.streaming import stream_features
    model = Tagger(norm="per_clip")
    v = init_variables(model, jax.random.key(0))
    stream_features(v, sys.argv[2], model=model)  # compile on a short file
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    f = stream_features(v, sys.argv[1], model=model)
    print(json.dumps({"seconds": time.perf_counter() - t, "base_mb": base / 1024,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "finite": bool((f == f).all())}))
""")


@pytest.mark.slow
def test_sixty_minute_file_in_bounded_memory(tmp_path):
    """The paper's model on a 60-minute 44.1 kHz file: decoded whole it would take 635 MB
    (float32) + 173 MB at 12 kHz; streamed, the peak grows by less than that."""
    long = _write(tmp_path / "hour.wav", 3600.0, 44_100)
    short = _write(tmp_path / "short.wav", 60.0, 44_100)
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(long), str(short)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(r)
    assert r["finite"]
    assert r["peak_mb"] - r["base_mb"] < 150, r  # measured +53 to +72 MB; whole-file: +432 MB
