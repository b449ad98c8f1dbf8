"""Errors that name the file and the problem, so bad input never ends in a bare stack trace."""

from __future__ import annotations

from pathlib import Path


class CastError(Exception):
    """Base class of the kit's own errors."""


class DataError(CastError, ValueError):
    """A dataset file is missing or malformed. The message starts with the offending path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(CastError, ValueError):
    """A configuration file has an unknown key, a wrong type or a bad value."""

    def __init__(self, path: str | Path | None, key: str, problem: str):
        self.path = None if path is None else Path(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}key '{key}': {problem}")


class EvaluationError(CastError, ValueError):
    """Predictions that cannot be scored (no predictions at all, an image id the ground truth lacks,
    a mask of the wrong size ...). The message starts with the offending image id or file."""

    def __init__(self, where: str | Path, problem: str):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")


class FileAccessError(CastError, OSError):
    """A file or folder the kit must write (or read) is not accessible: read-only, no permission, no space."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DeviceError(CastError, RuntimeError):
    """The config asks for a device this machine lacks (``device: cuda`` without CUDA). The message says what
    the installed torch needs and how to run on the CPU on purpose."""
