"""Resumable training state: model, optimiser, schedule, iteration and every RNG, saved atomically."""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from castlib.engine.runs import RunError
from castlib.io import atomic_path


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, iteration: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, extra: dict | None = None,
                    values: dict[str, float] | None = None) -> Path:
    """Write ``path`` atomically: a reader sees the previous checkpoint or this one, never half of one.
    ``values`` (the last logged losses) let a run resumed at its last iteration report the same summary."""
    state = {
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "extra": {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in (extra or {}).items()},
        "values": dict(values or {}),
    }
    with atomic_path(path, size=tensor_bytes(state)) as tmp:  # a full disk: one error naming the folder and size
        torch.save(state, tmp)
    return Path(path)


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a (nested) state: about the size ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint; a truncated or corrupt file is an error naming it (it is not deleted)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise RunError(path, f"corrupt checkpoint ({type(e).__name__}: {e}); move it away to restart the run "
                             "from scratch") from e
    missing = {"iteration", "model", "optimizer", "scheduler", "rng"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise RunError(path, f"not a castlib checkpoint: missing {sorted(missing)}")
    return state


def restore(state: dict, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            extra: dict | None = None) -> int:
    """Load a checkpoint's state into the live objects; returns the iteration to continue from."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for key, obj in (extra or {}).items():
        if key in state["extra"]:
            obj.load_state_dict(state["extra"][key])
    set_rng_state(state["rng"])
    return int(state["iteration"])
