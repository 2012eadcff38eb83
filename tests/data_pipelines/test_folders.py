"""list_audio_folder: deterministic listing of a class-per-folder tree."""
import numpy as np
import pytest

from data_pipelines.folders import list_audio_folder


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _tree(root):
    for rel in [
        "rock/b.wav", "rock/A.FLAC", "rock/c.mp3", "rock/.hidden.wav", "rock/notes.txt",
        "jazz/z.ogg", "jazz/y.Au", "jazz/x.aiff", "jazz/w.npy",
        "blues/one.wav",
        ".cache/ignored.wav", "root_level.wav",
    ]:
        _touch(root / rel)
    (root / "rock" / "sub").mkdir()
    _touch(root / "rock" / "sub" / "nested.wav")


def test_listing_and_order(tmp_path):
    _tree(tmp_path)
    paths, labels, classes = list_audio_folder(tmp_path)
    assert classes == ["blues", "jazz", "rock"]
    names = [p.relative_to(tmp_path).as_posix() for p in paths]
    assert names == [
        "blues/one.wav",
        "jazz/w.npy", "jazz/x.aiff", "jazz/y.Au", "jazz/z.ogg",
        "rock/A.FLAC", "rock/b.wav", "rock/c.mp3",
    ]
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 1, 1, 1, 2, 2, 2]
    # deterministic: a second call gives the same
    paths2, labels2, classes2 = list_audio_folder(str(tmp_path))
    assert paths2 == paths and classes2 == classes
    np.testing.assert_array_equal(labels2, labels)


def test_missing_root(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        list_audio_folder(tmp_path / "nope")


def test_root_is_a_file(tmp_path):
    f = tmp_path / "a.wav"
    _touch(f)
    with pytest.raises(ValueError, match="a.wav"):
        list_audio_folder(f)


def test_no_class_folders(tmp_path):
    _touch(tmp_path / "loose.wav")
    _touch(tmp_path / ".hidden" / "x.wav")
    with pytest.raises(ValueError, match="no class subfolders"):
        list_audio_folder(tmp_path)


def test_empty_class_folder_named(tmp_path):
    _touch(tmp_path / "good" / "a.wav")
    _touch(tmp_path / "bad" / "readme.txt")
    _touch(tmp_path / "bad" / ".x.wav")
    with pytest.raises(ValueError, match=r"bad.*no audio"):
        list_audio_folder(tmp_path)
