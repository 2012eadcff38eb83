"""A user's own downstream task from a folder tree: one subfolder per class.

    root/
      classA/  a.wav  b.flac ...
      classB/  c.mp3 ...

Only audio files directly inside a class folder count (extensions in AUDIO_EXTENSIONS,
any case; `.npy` holds a pre-decoded waveform). Hidden entries (names starting with
".") and other files are ignored, as are files directly in root. Ordering is
deterministic: classes sorted by name (label = index in that order), files sorted by
name within a class, so the same tree always gives the same rows and labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".mp3", ".au", ".aiff", ".npy"}
)


def is_audio_file(path: Path) -> bool:
    """A visible regular file with an audio extension (case-insensitive)."""
    return (
        not path.name.startswith(".")
        and path.suffix.lower() in AUDIO_EXTENSIONS
        and path.is_file()
    )


def class_folders(root: Path) -> list[Path]:
    """The visible subfolders of root, sorted by name."""
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def list_audio_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """List a class-per-subfolder tree.

    Returns (paths (N,), labels (N,) int64 indices into class_names, class_names (K,)).
    Raises ValueError if root is missing or not a folder, has no class subfolders, or a
    class folder holds no audio file.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"audio folder does not exist or is not a directory: {root}")
    classes = class_folders(root)
    if not classes:
        raise ValueError(f"no class subfolders in {root} (expected root/<class>/<audio files>)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        files = sorted((p for p in folder.iterdir() if is_audio_file(p)), key=lambda p: p.name)
        if not files:
            raise ValueError(
                f"class folder {folder} holds no audio files "
                f"(extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})"
            )
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), [c.name for c in classes]
