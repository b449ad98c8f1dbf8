"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

A reader therefore sees either the old file or the new one, never a half-written one, and a
run killed mid-write loses nothing that was already on disk. The new file gets the permissions an
ordinary ``open`` would give it under the current umask (``mkstemp`` alone makes it 0600).

A full disk (``ENOSPC``, a quota, or torch's ``inline_container`` writer failing) is one :class:`DiskFullError`
naming the folder, the space the file needs and the space free; the temporary file is removed, so nothing
partial is left and the previous version of the file, if any, is kept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from castlib.errors import FileAccessError

# Messages of write failures that carry no errno: torch.save's zip writer ("[enforce fail at inline_container.cc]
# ... file write failed / unexpected pos") and safetensors' Rust writer ("StorageFull").
_FULL_MESSAGES = ("No space left", "StorageFull", "Disk quota", "inline_container", "PytorchStreamWriter")


class DiskFullError(FileAccessError):
    """No space left where the kit writes: names the folder, the space the write needs and the space free.
    ``left``: what the failed write left behind (the sentence a rerun relies on); ``free_before``: the free space
    before the write began (what is free once the partial file is gone)."""

    def __init__(self, folder: str | Path, what: str, needed: int | None, written: int = 0,
                 cause: BaseException | None = None,
                 left: str = "every finished file is kept, nothing partial was left", free_before: int = 0):
        folder = Path(folder)
        free = max(_free_bytes(folder), free_before)
        need = (f"{what} needs about {human_size(needed)}, {human_size(free)} free there" if needed else
                f"{what} needs more than the {human_size(written)} it wrote before the disk filled, "
                f"{human_size(free)} free there" if written else
                f"{what} needs more than the {human_size(free)} free there")
        self.needed, self.free = needed, free
        # torch's zip writer says nothing of the cause: where the disk has room again, say what it said
        unsure = cause is not None and "inline_container" in str(cause) and free >= (needed or 2**20)
        super().__init__(folder, f"no space left on the device{f' ({cause})' if unsure else ''}: {need}; free some "
                                 "space (or point the folder's setting at a larger disk) and run the same command "
                                 f"again: {left}")


def human_size(n: int | float | None) -> str:
    """``1.5 GiB``, ``300 KiB``, ``12 B``."""
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _free_bytes(folder: Path) -> int:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder.anchor or ".")
    return shutil.disk_usage(existing).free


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or a quota) is full: ENOSPC/EDQUOT, or a writer's message that does."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    writer_error = isinstance(error, (OSError, RuntimeError)) or type(error).__name__ == "SafetensorError"
    return writer_error and any(m in str(error) for m in _FULL_MESSAGES)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically. ``size``: the bytes
    the file will take (where known), named by the :class:`DiskFullError` of a full disk."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path.parent, f"writing {path.name}", size, cause=e) from e
        raise FileAccessError(e.filename or path.parent, f"cannot write {path.name} here ({e.strerror}); "
                                                         "make the folder writable or choose another") from e
    os.close(fd)
    tmp_path = Path(tmp)
    free_before = _free_bytes(path.parent)  # a failed writer may hold the removed temporary file open a while longer
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except Exception as e:
        if not is_disk_full(e):
            raise
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)
        raise DiskFullError(path.parent, f"writing {path.name}", size, written, e, free_before=free_before) from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | Path, writer: Callable[[IO[Any]], None], mode: str = "w",
                 size: int | None = None) -> Path:
    """Write ``path`` atomically with ``writer(file_object)`` (``size``: the bytes it writes, where known)."""
    with atomic_path(path, size) as tmp, open(tmp, mode) as f:
        writer(f)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text), size=len(text.encode()))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_image_atomic(path: str | Path, image: Any, **save_kwargs: Any) -> Path:
    """Save a PIL image atomically; the format comes from ``path``'s suffix."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}[Path(path).suffix.lower()]
    raw = image.width * image.height * len(image.getbands()) * (2 if image.mode.startswith("I;16") else 1)
    with atomic_path(path, size=raw) as tmp:  # at most its pixels' bytes (PNG and JPEG compress them)
        image.save(tmp, format=fmt, **save_kwargs)
    return Path(path)
