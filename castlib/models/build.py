"""One way to build any model of the kit from a config, or to load one saved with ``save_pretrained``."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, load_model

from castlib.config import DEFAULTS_FILE, Config, as_config, read_yaml
from castlib.data.classes import CLASS_LISTS
from castlib.errors import ConfigError, DataError
from castlib.models.base import META_FILE, WEIGHTS_FILE, SegmentationModel, read_meta
from castlib.models.student import Student
from castlib.models.teacher import Teacher

MODELS = ("student", "baseline", "teacher")
_META_KEYS = ("which", "num_classes", "class_names", "model", "components")  # what save_pretrained records


def _class_names(cfg: Config, which: str, num_classes: int) -> list[str]:
    """The class names of ``data.dataset``; the teacher's prompt needs them, the student keeps them if they fit."""
    names = list(CLASS_LISTS[cfg.data.dataset].names)
    if len(names) == num_classes:
        return names
    if which == "teacher":
        raise ConfigError(None, "data.dataset",
                          f"{cfg.data.dataset} has {len(names)} classes but num_classes is {num_classes}")
    return []


def _construct(cfg: Config, which: str, num_classes: int, class_names: list[str], pretrained: bool,
               components: dict | None = None, checkpoint: Path | None = None) -> SegmentationModel:
    if which == "student":
        return Student(cfg, which, cfg.model.student_backbone, num_classes, class_names, pretrained, components)
    if which == "baseline":
        return Student(cfg, which, cfg.model.baseline_backbone, num_classes, class_names, pretrained, components)
    return Teacher(cfg, num_classes, class_names, pretrained, components, checkpoint)


def saved_config(meta: dict) -> Config:
    """The config a saved model is rebuilt from: the ``model`` section its ``castlib_model.json`` records (the only
    section a model reads), whatever profile built it and whatever config asks for it.

    Folders saved before a model key existed lack it (``model.teacher.activation_checkpointing`` came on
    2026-12-05, after teachers were already in the run registry); such a key takes its ``configs/defaults.yaml``
    value, which is the behaviour from before it existed. Every key the folder records is kept as recorded."""
    return Config({"model": as_config(_with_missing(meta["model"], read_yaml(DEFAULTS_FILE)["model"]))})


def _with_missing(saved: dict, defaults: dict) -> dict:
    """``saved`` with the keys it lacks (at any depth) copied from ``defaults``."""
    out = dict(saved)
    for key, default in defaults.items():
        if key not in out:
            out[key] = copy.deepcopy(default)
        elif isinstance(default, dict) and isinstance(out[key], dict):
            out[key] = _with_missing(out[key], default)
    return out


def _load_checkpoint(directory: Path, which: str, num_classes: int) -> SegmentationModel:
    try:
        meta = read_meta(directory)
    except (OSError, ValueError) as e:
        raise DataError(directory, f"not a model saved with save_pretrained ({e})") from None
    absent = [key for key in _META_KEYS if key not in meta]
    if absent:
        raise DataError(directory / META_FILE, f"records no {', '.join(absent)}; save the model again with "
                                               "save_pretrained")
    if (meta["which"], meta["num_classes"]) != (which, num_classes):
        raise DataError(directory, f"holds a {meta['which']} with {meta['num_classes']} classes, "
                                   f"not a {which} with {num_classes}")
    model = _construct(saved_config(meta), which, num_classes, meta["class_names"], False, meta["components"],
                       directory)
    try:
        missing, unexpected = load_model(model, str(directory / WEIGHTS_FILE), strict=False)
    except (SafetensorError, OSError) as e:
        raise DataError(directory / WEIGHTS_FILE, f"cannot read the weights (truncated or corrupt: {e}); train the "
                                                  "run again (move its folder away) or restore the file") from e
    if missing or unexpected:
        raise DataError(directory / WEIGHTS_FILE, f"weights do not fit the model: missing {sorted(missing)[:5]}, "
                                                  f"unexpected {sorted(unexpected)[:5]}")
    return model


def build_model(cfg: Config, which: str, num_classes: int,
                pretrained: bool | str | os.PathLike | None = None) -> SegmentationModel:
    """Build ``which`` (``"student"``, ``"baseline"`` or ``"teacher"``) for ``num_classes`` classes.

    - ``pretrained=None``: as the config says (``model.pretrained``: the paper profile loads the hub ids or local
      paths named in ``model.backbones`` / ``model.teacher``; smoke and mini build random weights);
    - ``True`` / ``False``: load pretrained weights, or build random weights from the config's sizes;
    - a folder written by ``model.save_pretrained``: that model, rebuilt from the folder alone (offline).

    ``"baseline"`` is the Table 8 model: the student's decoders on ``model.baseline_backbone``. The teacher's
    prompt is built from the class names of ``data.dataset``. Missing pretrained weights raise
    :class:`~castlib.models.hub.PretrainedWeightsError`, saying which weights and what to do.
    """
    if which not in MODELS:
        raise ConfigError(None, "which", f"expected one of {', '.join(MODELS)}, got {which!r}")
    if isinstance(pretrained, (str, os.PathLike)):
        return _load_checkpoint(Path(pretrained), which, num_classes)
    load = cfg.model.pretrained if pretrained is None else bool(pretrained)
    return _construct(cfg, which, num_classes, _class_names(cfg, which, num_classes), load)


def load_weights(model: SegmentationModel, directory: str | os.PathLike, prefix: str = "") -> SegmentationModel:
    """Copy into ``model`` the weights whose names start with ``prefix`` from a folder written by
    ``save_pretrained``: all of them (``""``, the teacher's stand-in) or one part (``"encoder."``, a student's or
    baseline's pretrained backbone). The rest of ``model`` keeps its weights and its own config (trainable parts
    included). Every weight under ``prefix`` must be there with the model's shape."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(path, "no weights here (not a folder written by save_pretrained)")
    saved = {k: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    found = {own[k].untyped_storage().data_ptr() for k in saved.keys() & own.keys()}
    missing = sorted(k for k in set(own) - set(saved) if own[k].untyped_storage().data_ptr() not in found)  # tied
    misfit = sorted(k for k in saved.keys() & own.keys() if saved[k].shape != own[k].shape)
    unexpected = sorted(set(saved) - set(own))
    if missing or misfit or unexpected:
        raise DataError(path, f"the weights under '{prefix}' do not fit the model: missing {missing[:5]}, "
                              f"other shapes {misfit[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(saved, strict=False)
    return model
