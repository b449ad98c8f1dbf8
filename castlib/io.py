"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

A reader therefore sees either the old file or the new one, never a half-written one, and a
run killed mid-write loses nothing that was already on disk. The new file gets the permissions an
ordinary ``open`` would give it under the current umask (``mkstemp`` alone makes it 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from castlib.errors import FileAccessError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise FileAccessError(e.filename or path.parent, f"cannot write {path.name} here ({e.strerror}); "
                                                         "make the folder writable or choose another") from e
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | Path, writer: Callable[[IO[Any]], None], mode: str = "w") -> Path:
    """Write ``path`` atomically with ``writer(file_object)``."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        writer(f)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_image_atomic(path: str | Path, image: Any, **save_kwargs: Any) -> Path:
    """Save a PIL image atomically; the format comes from ``path``'s suffix."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}[Path(path).suffix.lower()]
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)
    return Path(path)
