"""Loading pretrained weights by hub id or local path, with an error that says what to do when they are absent.

Offline (``HF_HUB_OFFLINE=1``, or no network) and without a cached copy, ``from_pretrained`` fails inside the
hub client with a long trace. Every pretrained load of the kit goes through :func:`load_pretrained`, which turns
that into a :class:`PretrainedWeightsError` naming the weights, the config key that names them, and the ways out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from castlib.errors import CastError

T = TypeVar("T")


class PretrainedWeightsError(CastError, OSError):
    """Pretrained weights (a hub id or a local path) could not be loaded."""

    def __init__(self, source: str, what: str, key: str, reason: str, download: str | None = None):
        self.source, self.what, self.key, self.reason = source, what, key, reason
        download = download or f"`hf download {source}` (huggingface_hub's command line)"
        super().__init__(
            f"cannot load the pretrained weights '{source}' of the {what} (config key {key}): {reason}\n"
            f"  - to use them offline, run {download} on a machine with internet access, then either keep the id "
            f"(the cache is found by id) or copy the files here and set {key} to their local path;\n"
            "  - `python -m castlib doctor --profile paper` lists every weight the tables need and whether it is "
            "cached. Random weights are no substitute for a paper run; the smoke or mini profile runs without hub "
            "weights."
        )


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_pretrained(load: Callable[..., T], source: str, *, what: str, key: str, **kwargs: Any) -> T:
    """``load(source, **kwargs)`` (a ``from_pretrained``), raising :class:`PretrainedWeightsError` when the weights
    cannot be found or read."""
    try:
        return load(source, **kwargs)
    except (OSError, ValueError) as e:
        raise PretrainedWeightsError(source, what, key, first_line(e)) from None
