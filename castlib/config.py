"""Profiles: ``configs/defaults.yaml`` holds every key with its default; a profile
(``configs/{smoke,mini,paper}.yaml``) and command-line overrides change some of them.

Validation is strict, because a typo in a long run's config should fail at once:
an unknown key or a value of the wrong type raises :class:`~castlib.errors.ConfigError`
naming the file and the dotted key. Types come from the defaults:

- ``bool``/``int``/``float``/``str``/``list`` defaults admit that type (an int where a float is due is fine);
- a ``null`` default admits null, a string or a number (paths, hub ids, optional limits);
- an empty mapping ``{}`` admits any keys (free-form options), except the ``contrastive`` overrides of a
  training stage, whose keys and values are those of ``loss.contrastive``.

Values are then range-checked (:data:`CHOICES`, :data:`RANGES`, :data:`NAMES`): enums from their lists, positive
rates, batch sizes and iterations, fractions in (0, 1), every number finite (``.inf`` and ``.nan`` are errors), and
names that become a folder or file name a single name (no ``/``, no ``..``), again naming the dotted key. Numbers
read as a user writes them, in files and ``--set`` alike: ``1e-4`` is a float (YAML 1.1 alone reads it as a string).

Every YAML file is read with :func:`load_yaml`: a mapping key written twice is an error naming the file, the line
and the dotted key (plain YAML keeps the last silently). A profile file is a non-empty mapping; one that does not
name itself (``profile: NAME``) is named after its file (``mine.yaml``: ``mine``), never after the defaults.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from castlib.errors import ConfigError
from castlib.paper import DATASET_NAMES

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULTS_FILE = CONFIG_DIR / "defaults.yaml"
PROFILES = ("smoke", "mini", "paper")
OVERRIDE_SOURCE = Path("<override>")
# Profiles that reproduce the paper: device auto means cuda (no CUDA is an error, not the CPU), and synthetic data
# runs only when asked for by name (data.source=synthetic), with a warning.
PAPER_PROFILES = ("paper",)
README_DATA_SECTION = "On a GPU box"  # the README section on getting the real datasets and weights

# Enums: the values a key admits (the code's own lists are checked against these by the tests).
CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "data.dataset": DATASET_NAMES,
    "data.source": ("synthetic", "real"),
    "train.teacher.schedule": ("multistep", "poly", "constant"),
    "train.student.schedule": ("multistep", "poly", "constant"),
    "loss.contrastive.impl": ("fast", "reference"),
    "loss.contrastive.score": ("original", "squared", "sqrt"),
    "loss.contrastive.embedding": ("fusion", "mask_only", "class_only", "uniform"),
    "loss.contrastive.loss": ("infonce", "hinge"),
    "loss.contrastive.scope": ("batch", "memory_bank"),
    "model.student_backbone": ("dinov2_s", "dinov2_b", "dinov2_l", "resnet50"),
    "model.baseline_backbone": ("dinov2_s", "dinov2_b", "dinov2_l", "resnet50"),
    "model.stand_in_init": ("encoder", "whole"),
    "eval.table_metric.cityscapes": ("cityscapes", "coco"),
    "eval.table_metric.ade20k": ("coco",),
    "eval.efficiency.dtype": ("float32", "bfloat16", "float16"),
    "baselines.guided_distillation.unlabelled_pool": ("train", "unlabelled"),
}

# Numeric ranges: (low, high, low_open, high_open); None = unbounded. A list value is checked item by item.
_POSITIVE = (0, None, True, False)
_AT_LEAST_ZERO = (0, None, False, False)
_FRACTION = (0, 1, True, True)
_PROBABILITY = (0, 1, False, False)
_IMAGE_SIDE = (32, None, False, False)  # pixels of a synthetic image side (castlib.data.synthetic.MIN_SIDE)
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "seed": _AT_LEAST_ZERO, "data.split_seed": _AT_LEAST_ZERO, "data.num_workers": _AT_LEAST_ZERO,
    "data.label_fraction": _FRACTION, "data.label_fractions": _FRACTION, "data.synthetic.seed": _AT_LEAST_ZERO,
    "data.synthetic.cityscapes.train": _POSITIVE, "data.synthetic.cityscapes.val": _POSITIVE,
    "data.synthetic.cityscapes.height": _IMAGE_SIDE, "data.synthetic.cityscapes.width": _IMAGE_SIDE,
    "data.synthetic.ade20k.train": _POSITIVE, "data.synthetic.ade20k.val": _POSITIVE,
    "data.synthetic.ade20k.short_side": _IMAGE_SIDE,
    "augment.short_side": _POSITIVE, "augment.crop": _POSITIVE, "augment.hflip": _PROBABILITY,
    "augment.eval_short_side": _AT_LEAST_ZERO,
    "train.log_every": _POSITIVE, "train.checkpoint_every": _POSITIVE,
    "train.teacher.lr": _POSITIVE, "train.teacher.weight_decay": _AT_LEAST_ZERO,
    "train.teacher.milestones": _FRACTION, "train.teacher.gamma": (0, 1, True, False),
    "train.teacher.batch_size": _POSITIVE, "train.teacher.grad_clip": _AT_LEAST_ZERO,
    "train.teacher.contrastive_weight": _AT_LEAST_ZERO, "train.teacher.semi_weight": _AT_LEAST_ZERO,
    "train.teacher.finetune_iterations": _POSITIVE, "train.teacher.self_training_iterations": _POSITIVE,
    "train.pseudo_labels.threshold": _PROBABILITY, "train.pseudo_labels.max_instances": _POSITIVE,
    "train.student.encoder_lr": _POSITIVE, "train.student.decoder_lr": _POSITIVE,
    "train.student.weight_decay": _AT_LEAST_ZERO, "train.student.power": _POSITIVE,
    "train.student.batch_size": _POSITIVE, "train.student.grad_clip": _AT_LEAST_ZERO,
    "train.student.contrastive_weight": _AT_LEAST_ZERO, "train.student.semi_weight": _AT_LEAST_ZERO,
    "train.student.iterations": _POSITIVE,
    "train.refinement.iterations": _POSITIVE, "train.refinement.batch_size": _POSITIVE,
    "train.pretrain.backbone_warmup_iterations": _AT_LEAST_ZERO, "train.pretrain.backbone_lr": _POSITIVE,
    "loss.class_weight": _AT_LEAST_ZERO, "loss.mask_weight": _AT_LEAST_ZERO, "loss.dice_weight": _AT_LEAST_ZERO,
    "loss.no_object_weight": _AT_LEAST_ZERO, "loss.num_points": _POSITIVE,
    "loss.oversample_ratio": (1, None, False, False),
    "loss.importance_sample_ratio": _PROBABILITY,
    "loss.contrastive.num_negatives": _POSITIVE, "loss.contrastive.temperature": _POSITIVE,
    "loss.contrastive.margin": _AT_LEAST_ZERO, "loss.contrastive.bank_size": _POSITIVE,
    "loss.contrastive.chunk_size": _POSITIVE,
    "model.decoder.num_queries": _POSITIVE, "model.decoder.dropout": (0, 1, False, True),
    "eval.top_k": _POSITIVE, "eval.batch_size": _POSITIVE,
    "eval.efficiency.batch_size": _POSITIVE, "eval.efficiency.warmup": _AT_LEAST_ZERO,
    "eval.efficiency.repeats": _POSITIVE,
    "loss.contrastive.bank_push": _POSITIVE, "augment.strong.random_resized_crop.scale": (0, 1, True, False),
    "augment.strong.random_resized_crop.ratio": _POSITIVE,
    "baselines.guided_distillation.teacher_iterations": _POSITIVE,
    "baselines.guided_distillation.iterations": _POSITIVE,
    "baselines.guided_distillation.burn_in_iterations": _AT_LEAST_ZERO,
    "baselines.guided_distillation.batch_size": _POSITIVE, "baselines.guided_distillation.lr": _POSITIVE,
    "baselines.guided_distillation.backbone_lr_factor": _AT_LEAST_ZERO,
    "baselines.guided_distillation.weight_decay": _AT_LEAST_ZERO,
    "baselines.guided_distillation.grad_clip": _AT_LEAST_ZERO, "baselines.guided_distillation.power": _POSITIVE,
    "baselines.guided_distillation.ema_decay": _PROBABILITY,
    "baselines.guided_distillation.unlabelled_weight": _AT_LEAST_ZERO,
    "baselines.guided_distillation.class_threshold": _PROBABILITY,
    "baselines.guided_distillation.min_mask_area": _AT_LEAST_ZERO,
    "baselines.guided_distillation.mask_threshold": _PROBABILITY,
}
# Keys whose value names a folder or a file inside a kit folder: a single name, never a path. data.synthetic.name
# names the synthetic set (<data_dir>/synthetic/<dataset>-<name>) and its split folder (<splits_dir>/<dataset
# name>/); profile names the efficiency tables (<out>/efficiency_<profile>_<dataset>).
NAMES = ("profile", "data.synthetic.name")
_NAME = re.compile(r"(?!\.{1,2}\Z)[^/\\\x00]+")  # fullmatch: not . or .., no separator
# Free-form sections whose keys are those of another section.
_SECTION_LIKE = {"train.teacher.contrastive": "loss.contrastive", "train.student.contrastive": "loss.contrastive"}

_NUMBER = re.compile(r"^[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class _Loader(yaml.SafeLoader):
    """YAML with floats as a user writes them: ``1e-4`` and ``5E-5`` are floats (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)[eE][-+]?\d+$|^[-+]?(\d+\.\d*|\.\d+)$|^[-+]?\.(inf|Inf|INF)$"
               r"|^\.(nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def _check_unique_keys(node: yaml.Node, source: Path | None, prefix: str = "", seen: set[int] | None = None) -> None:
    """Raise ConfigError at the first mapping key written twice in ``node`` (the composed YAML), naming its
    dotted key and both lines. Keys merged in with ``<<`` may be replaced: that is what merging is for."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                _check_unique_keys(value, source, prefix, seen)
                continue
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "<complex key>"
            dotted, line = f"{prefix}{name}", key.start_mark.line + 1
            if (key.tag, name) in lines:
                raise ConfigError(source, dotted, f"line {line} repeats this key of line {lines[key.tag, name]} "
                                                  "(YAML would keep only the last one); write it once")
            lines[key.tag, name] = line
            _check_unique_keys(value, source, f"{dotted}.", seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, source, f"{prefix.removesuffix('.')}[{i}].", seen)


def load_yaml(text: str, source: Path | None = None, as_written: bool = True) -> Any:
    """``yaml.safe_load`` with :class:`_Loader`'s float rule (``as_written=False``: without it, for files
    ``yaml.safe_dump`` wrote, which leaves a string such as ``1e-4`` unquoted); a key written twice in one mapping
    is a ConfigError naming ``source``, the line and the dotted key (:func:`_check_unique_keys`)."""
    loader = (_Loader if as_written else yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


class Config(dict):
    """A nested mapping with attribute access (``cfg.data.dataset``) and dotted lookup."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo: dict) -> Config:
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def get_path(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = node[part]
        return node

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}

    def with_changes(self, changes: Mapping[str, Any]) -> Config:
        """A deep copy with each dotted key of ``changes`` set (``{"data.label_fraction": 0.1}``); the copy is
        ``self`` itself when every key already holds its value, so an unchanged variant keeps its run ids. A
        mapping value is stored as a :class:`Config`; a key whose parent is missing is a ``KeyError``."""
        if all(_has_value(self, dotted, value) for dotted, value in changes.items()):
            return self
        out = copy.deepcopy(self)
        for dotted, value in changes.items():
            *parents, last = dotted.split(".")
            node = out
            for part in parents:
                node = node[part]
            node[last] = as_config(copy.deepcopy(value))
        return out


def _has_value(cfg: Config, dotted: str, value: Any) -> bool:
    try:
        current = cfg.get_path(dotted)
    except (KeyError, TypeError):
        return False
    return type(current) is type(value) and current == value


def as_config(obj: Any) -> Any:
    """Nested mappings as :class:`Config` (attribute access), lists kept."""
    if isinstance(obj, Mapping):
        return Config({k: as_config(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [as_config(v) for v in obj]
    return obj


def read_yaml(path: str | Path, as_written: bool = True) -> dict:
    """Read a YAML mapping (:func:`load_yaml`); a missing file, a syntax error or a key written twice names the
    file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "<file>", "no such config file")
    try:
        data = load_yaml(path.read_text(), path, as_written)
    except yaml.YAMLError as e:
        raise ConfigError(path, "<file>", f"not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "<file>", f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _admits(default: Any, value: Any) -> bool:
    """Whether a scalar ``value`` fits the type of ``default`` (an int fits a float; bools stand alone)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _check_value(default: Any, value: Any, key: str, source: Path | None) -> Any:
    """Return ``value`` converted to the default's type, or raise ConfigError (a number must be finite)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(source, key, f"{value!r} is not a finite number")
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {_type_name(value)} {value!r}")
        return value
    if default is None:
        if value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected null, a string or a number, got {_type_name(value)}")
    if isinstance(default, list):
        if isinstance(value, list):
            if default and value:
                return [_check_value(default[0], v, f"{key}[{i}]", source) for i, v in enumerate(value)]
            return value
    elif _admits(default, value):
        return float(value) if isinstance(default, float) else value
    raise ConfigError(source, key, f"expected {_type_name(default)}, got {_type_name(value)} {value!r}")


def merge(base: dict, override: Mapping, source: Path | None, prefix: str = "") -> dict:
    """Merge ``override`` into a copy of ``base``, validating keys and types against ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base)) or "none"
            raise ConfigError(source, dotted, f"unknown key (known keys here: {known})")
        default = base[key]
        value = _check_value(default, value, dotted, source)
        if isinstance(default, dict) and default:
            out[key] = merge(default, value, source, prefix=f"{dotted}.")
        else:
            out[key] = value
    return out


def parse_value(raw: str) -> Any:
    """A command-line value as a user means it: numbers (``1e-4``), ``true``/``false``, ``null``, lists and
    mappings as YAML; any other text is kept verbatim (``/data/x #v2`` keeps its ``#v2``)."""
    text = raw.strip()
    if _NUMBER.match(text):
        return float(text) if any(c in text for c in ".eE") else int(text)
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, str) and text[:1] not in "'\"" else value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.teacher.lr=1e-4"`` -> ``("train.teacher.lr", 0.0001)``; the value as :func:`parse_value` reads it."""
    if "=" not in text:
        raise ConfigError(None, text, "an override must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), parse_value(raw)
    except ConfigError as e:  # a key written twice in a mapping value
        raise ConfigError(OVERRIDE_SOURCE, f"{key.strip()}.{e.key}", e.problem) from None


def _nest(dotted: str, value: Any) -> dict:
    node: Any = value
    for part in reversed(dotted.split(".")):
        node = {part: node}
    return node


def profile_path(profile: str | Path) -> Path:
    """A profile name (``smoke``) or a path to a YAML file."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        return p
    return CONFIG_DIR / f"{profile}.yaml"


def repo_path(path: str | Path) -> Path:
    """A config path: absolute as given, relative ones from the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _deep_update(target: dict, update: Mapping) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _layer_value(layer: Mapping, dotted: str) -> tuple[bool, Any]:
    """(whether ``layer`` sets ``dotted``, its value)."""
    node: Any = layer
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _data_source(cfg: dict, layers: Iterable[Mapping]) -> None:
    """Settle ``data.source`` and ``data.root`` in place. Layers in order of precedence (profile file, its
    ``per_dataset`` section, the overrides): a layer that sets a root makes the source ``real`` unless it sets
    ``data.source`` itself, which wins. A synthetic source reads no root (null); a real root is resolved
    (relative ones from the repository root, no trailing slash), so one folder is one run id."""
    source = cfg["data"]["source"]
    for layer in layers:
        has_root, root = _layer_value(layer, "data.root")
        has_source, value = _layer_value(layer, "data.source")
        source = value if has_source else "real" if has_root and root is not None else source
    data = cfg["data"]
    data["source"] = source
    if source == "synthetic":
        data["root"] = None
    elif data["root"] is not None:
        data["root"] = str(repo_path(str(data["root"])).resolve())


class MissingDataRoot(ConfigError):
    """``data.source`` is real and ``data.root`` is not set."""

    def __init__(self, cfg: Mapping):
        super().__init__(None, "data.root", (
            f"profile {cfg['profile']} reads the real {cfg['data']['dataset']} dataset (data.source: real) and no "
            f"root is set: pass --data-root DIR or set data.root to the dataset's root (README "
            f"'{README_DATA_SECTION}' says how to get Cityscapes and ADE20K); to run on the synthetic set on purpose, "
            "--set data.source=synthetic"))


def check_data_source(cfg: Mapping) -> None:
    """Raise :class:`MissingDataRoot` when the config reads real data and names no root (no torch imported: the
    command line calls it before anything heavy)."""
    if cfg["data"]["source"] == "real" and cfg["data"]["root"] is None:
        raise MissingDataRoot(cfg)


def load_config(
    profile: str | Path = "smoke",
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> Config:
    """Defaults, the profile file, its ``per_dataset`` section for the chosen dataset, then
    overrides (``{"a.b": v}`` or ``["a.b=v"]``), which always win. Then the data source (:func:`_data_source`)
    and, on :data:`PAPER_PROFILES`, device auto as cuda."""
    defaults = read_yaml(DEFAULTS_FILE)
    path = profile_path(profile)
    profile_file = read_yaml(path)
    if path != DEFAULTS_FILE and not profile_file:
        raise ConfigError(path, "<file>", "empty: a profile sets at least its name (profile: NAME) and the keys it "
                                          f"changes, as {CONFIG_DIR / 'smoke.yaml'} does")
    cfg = merge(defaults, profile_file, path)
    if path != DEFAULTS_FILE and "profile" not in profile_file:  # named after its file, not the defaults' smoke
        cfg["profile"] = path.stem
    items = list(overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides))
    nested = [_nest(key, value) for key, value in items]
    for override in nested:
        cfg = merge(cfg, override, OVERRIDE_SOURCE)
    chosen, chosen_section = None, {}
    datasets = CHOICES["data.dataset"]
    for dataset, section in cfg["per_dataset"].items():  # validate every section, apply the chosen one
        if dataset not in datasets:
            raise ConfigError(path, f"per_dataset.{dataset}", f"unknown dataset (use one of {', '.join(datasets)})")
        if not isinstance(section, dict):
            raise ConfigError(path, f"per_dataset.{dataset}", "expected a mapping of keys to replace")
        merged = merge(cfg, section, path, prefix=f"per_dataset.{dataset}.")
        _check_section(merged, section, path, f"per_dataset.{dataset}.")
        if dataset == cfg["data"]["dataset"]:
            chosen, chosen_section = merged, section
    if chosen is not None:
        cfg = chosen
        for override in nested:
            cfg = merge(cfg, override, OVERRIDE_SOURCE)
    overridden = [key for key, _ in items]
    overrides_layer: dict = {}
    for override in nested:
        _deep_update(overrides_layer, override)
    _data_source(cfg, [profile_file, chosen_section, overrides_layer])
    if cfg["device"] == "auto" and cfg["profile"] in PAPER_PROFILES:
        cfg["device"] = "cuda"
    try:
        check_ranges(cfg, path)
    except ConfigError as e:
        if any(e.key.startswith(k) or k.startswith(e.key.split("[")[0]) for k in overridden):
            raise ConfigError(OVERRIDE_SOURCE, e.key, e.problem) from None
        raise
    return as_config(cfg)


def _set_keys(section: Mapping, prefix: str = "") -> list[str]:
    """The dotted keys a (nested) section sets."""
    keys: list[str] = []
    for key, value in section.items():
        keys += _set_keys(value, f"{prefix}{key}.") if isinstance(value, Mapping) and value else [f"{prefix}{key}"]
    return keys


def _check_section(merged: Mapping, section: Mapping, source: Path, prefix: str) -> None:
    """Range-check a ``per_dataset`` section's own keys, within the config it completes."""
    try:
        check_ranges(merged, source)
    except ConfigError as e:
        if any(e.key.startswith(k) for k in _set_keys(section)):
            raise ConfigError(source, prefix + e.key, e.problem) from None


def _lookup(cfg: Mapping, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _check_range(key: str, value: Any, bounds: tuple, source: Path | None) -> None:
    low, high, low_open, high_open = bounds
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_range(f"{key}[{i}]", v, bounds, source)
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise ConfigError(source, key, f"{value!r} is not a finite number; expected a value in {_interval(bounds)}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ConfigError(source, key, f"{value!r} is out of range; expected a value in {_interval(bounds)}")


def _interval(bounds: tuple) -> str:
    low, high, low_open, high_open = bounds
    closing = ")" if high_open or high is None else "]"
    return f"{'(' if low_open else '['}{low}, {'inf' if high is None else high}{closing}"


def check_name(key: str, value: Any, source: Path | None = None) -> None:
    """A :data:`NAMES` value is one folder or file name: not empty, ``.`` or ``..``, without ``/`` or ``\\``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(source, key, f"{value!r} is not a name: it names a folder inside a kit folder, so it must "
                                       "be a single name (no '/', '\\' or '..', not empty)")


def _check_key(rule: str, value: Any, shown: str, source: Path | None) -> None:
    if rule in CHOICES and value is not None and value not in CHOICES[rule]:
        raise ConfigError(source, shown, f"{value!r} is not one of {', '.join(CHOICES[rule])}")
    if rule in RANGES:
        _check_range(shown, value, RANGES[rule], source)
    if rule in NAMES:
        check_name(shown, value, source)


def _check_finite(node: Any, prefix: str, source: Path | None) -> None:
    """Every number in the config is finite (a null default admits a number: an optional limit)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            _check_finite(value, f"{prefix}{key}.", source)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, f"{prefix.removesuffix('.')}[{i}].", source)
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(source, prefix.removesuffix("."), f"{node!r} is not a finite number")


def check_ranges(cfg: Mapping, source: Path | None) -> None:
    """Enums from :data:`CHOICES`, numbers within :data:`RANGES` (and every number finite), single names for
    :data:`NAMES`; the training stages' ``contrastive`` overrides are checked as ``loss.contrastive`` keys. Raises
    ConfigError naming the dotted key."""
    for dotted in (*CHOICES, *RANGES, *NAMES):
        _check_key(dotted, _lookup(cfg, dotted), dotted, source)
    _check_finite(cfg, "", source)
    for key, like in _SECTION_LIKE.items():
        overrides = _lookup(cfg, key) or {}
        merge(_lookup(cfg, like), overrides, source, prefix=f"{key}.")
        for sub, value in overrides.items():
            _check_key(f"{like}.{sub}", value, f"{key}.{sub}", source)
