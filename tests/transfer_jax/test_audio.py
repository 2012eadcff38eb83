"""Bad input: each case gives a clear AudioError naming the file, or is handled as documented."""
import numpy as np
import pytest
import soundfile as sf

from transfer_jax import audio
from transfer_jax.audio import AudioError


def _tone(n, sr=12_000):
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)


@pytest.mark.parametrize("name, make, problem", [
    ("empty.wav", lambda p: p.write_bytes(b""), "empty"),
    ("corrupt.wav", lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 3), "cannot decode"),
    ("notes.mp3", lambda p: p.write_text("this is a text file, not audio\n" * 20), "cannot decode"),
    ("zero.wav", lambda p: sf.write(p, np.zeros(0, np.float32), 12_000), "no samples"),
    ("nan.wav", lambda p: sf.write(p, np.r_[_tone(1000), np.nan, _tone(10)], 12_000, subtype="FLOAT"), "NaN"),
    ("nan.npy", lambda p: np.save(p, np.r_[_tone(1000), np.inf]), "NaN or infinite"),
    ("text.npy", lambda p: np.save(p, np.array(["a", "b"])), "numeric"),
    ("cube.npy", lambda p: np.save(p, np.zeros((2, 2, 2), np.float32)), "1-D or 2-D"),
    ("missing.flac", lambda p: None, "not found"),
])
def test_bad_files_raise_an_error_naming_the_file(tmp_path, name, make, problem):
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError, match=problem) as info:
        audio.load_audio(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        audio.load_audio(tmp_path)


def test_multichannel_is_averaged_to_mono(tmp_path):
    left, right = _tone(12_000), np.zeros(12_000, np.float32)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], 1), 12_000, subtype="FLOAT")
    y = audio.load_audio(tmp_path / "stereo.wav")
    assert y.shape == (12_000,)
    np.testing.assert_allclose(y, left / 2, atol=1e-6)


@pytest.mark.parametrize("sr", [8_000, 22_050, 44_100])
def test_other_sample_rates_are_resampled(tmp_path, sr):
    n = sr * 2
    sf.write(tmp_path / "tone.flac", 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / sr), sr)
    y = audio.load_audio(tmp_path / "tone.flac", sr=12_000)
    assert abs(len(y) - 24_000) <= 1
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 12_000 / len(y) - 440) < 2


def test_silence_is_accepted_and_gives_finite_features(tmp_path, small_config):
    import jax

    from transfer_jax.extraction import extract
    from transfer_jax.model import Tagger, init_variables

    sf.write(tmp_path / "silent.wav", np.zeros(20_000, np.float32), 12_000)
    y = audio.load_audio(tmp_path / "silent.wav")
    assert y.shape == (20_000,) and not y.any()
    model = Tagger(small_config, norm="per_clip")
    feats = extract(init_variables(model, jax.random.key(0)), [y], model=model)
    assert np.all(np.isfinite(feats))


def test_npy_and_formats_round_trip(tmp_path):
    y = _tone(6_000)
    np.save(tmp_path / "clip.npy", y)
    np.testing.assert_array_equal(audio.load_audio(tmp_path / "clip.npy"), y)
    for ext, fmt in ((".wav", "WAV"), (".flac", "FLAC"), (".au", "AU"), (".ogg", "OGG"), (".mp3", "MP3")):
        sf.write(tmp_path / f"clip{ext}", y, 12_000, format=fmt)
        got = audio.load_audio(tmp_path / f"clip{ext}")
        assert got.dtype == np.float32 and abs(len(got) - len(y)) < 2_000, ext
        if ext in (".wav", ".flac", ".au"):  # lossless, 16-bit
            np.testing.assert_allclose(got, y, atol=1e-4)
        else:  # lossy codecs keep the tone
            peak = np.argmax(np.abs(np.fft.rfft(got))) * 12_000 / len(got)
            assert abs(peak - 440) < 5, ext


def test_fit_length_and_segments():
    y = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(audio.fit_length(y, 12, "tile"), np.r_[y, y, y[:2]])
    np.testing.assert_array_equal(audio.fit_length(y, 7, "pad"), np.r_[y, 0, 0])
    np.testing.assert_array_equal(audio.fit_length(y, 3), y[:3])
    long = np.arange(25, dtype=np.float32)
    np.testing.assert_array_equal(audio.segment(long, 10), long[:20].reshape(2, 10))
    assert audio.segment(y, 10).shape == (1, 10)
    with pytest.raises(ValueError, match="policy"):
        audio.fit_length(y, 10, "loop")
