"""Profiles: ``configs/defaults.yaml`` holds every key with its default; a profile
(``configs/{smoke,mini,paper}.yaml``) and command-line overrides change some of them.

Validation is strict, because a typo in a long run's config should fail at once:
an unknown key or a value of the wrong type raises :class:`~castlib.errors.ConfigError`
naming the file and the dotted key. Types come from the defaults:

- ``bool``/``int``/``float``/``str``/``list`` defaults admit that type (an int where a float is due is fine);
- a ``null`` default admits null, a string or a number (paths, hub ids, optional limits);
- an empty mapping ``{}`` admits any keys (free-form options).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from castlib.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULTS_FILE = CONFIG_DIR / "defaults.yaml"
PROFILES = ("smoke", "mini", "paper")
OVERRIDE_SOURCE = Path("<override>")


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


def as_config(obj: Any) -> Any:
    """Nested mappings as :class:`Config` (attribute access), lists kept."""
    if isinstance(obj, Mapping):
        return Config({k: as_config(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [as_config(v) for v in obj]
    return obj


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a syntax error names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "<file>", "no such config file")
    try:
        data = yaml.safe_load(path.read_text())
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
    """Return ``value`` converted to the default's type, or raise ConfigError."""
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


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-4"`` -> ``("train.lr", 0.0001)``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(None, text, "an override must look like key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


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


def load_config(
    profile: str | Path = "smoke",
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> Config:
    """Defaults, the profile file, its ``per_dataset`` section for the chosen dataset, then
    overrides (``{"a.b": v}`` or ``["a.b=v"]``), which always win."""
    defaults = read_yaml(DEFAULTS_FILE)
    path = profile_path(profile)
    cfg = merge(defaults, read_yaml(path), path)
    items = list(overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides))
    nested = [_nest(key, value) for key, value in items]
    for override in nested:
        cfg = merge(cfg, override, OVERRIDE_SOURCE)
    chosen = None
    for dataset, section in cfg["per_dataset"].items():  # validate every section, apply the chosen one
        if not isinstance(section, dict):
            raise ConfigError(path, f"per_dataset.{dataset}", "expected a mapping of keys to replace")
        merged = merge(cfg, section, path, prefix=f"per_dataset.{dataset}.")
        if dataset == cfg["data"]["dataset"]:
            chosen = merged
    if chosen is not None:
        cfg = chosen
        for override in nested:
            cfg = merge(cfg, override, OVERRIDE_SOURCE)
    return as_config(cfg)
