"""Dotted configs: nested dataclasses whose every leaf is set by one dotted name (`optim.lr_g`), converted to
the field's type, and round-tripped through JSON.

The engine under the trainer's config (gan/config.py) and the segmenter's (gan/segmenter_config.py): the
command line, a Tune space, a SLURM array and an experiment file all set fields through `Dotted.set`, so
each takes the same flags the same way and a bad value is one `ConfigError` naming the flag.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gan.errors import UserError


class ConfigError(UserError):
    """A bad configuration value; the message names the flag and the problem."""


# The two fields every job also takes by a short flag: messages name the flag users type (gan/cli.py).
SHORT_FLAGS = {"data.source": "--data", "data.format": "--data-format"}


def flag(key: str) -> str:
    """The flag a message names for a dotted field: '--data-format' for data.format, else '--<key>'."""
    return SHORT_FLAGS.get(key, f"--{key}")


class Dotted:
    """Nested config dataclasses whose every leaf has a dotted name (`optim.lr_g`): what the command line,
    a Tune space and a SLURM array set. The trainer's `Config` and the segmenter's `SegmenterConfig` are
    both Dotted, so both take the same flags the same way."""

    # -- dotted access ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """{'optim.lr_g': 0.0002, ...} for every leaf field."""
        return dict(flatten(self.to_dict()))

    def set(self, dotted: str, value: Any) -> None:
        """Set one field by dotted name, converting strings to the field's type."""
        *path, leaf = dotted.split(".")
        node: Any = self
        for part in path:
            if not dataclasses.is_dataclass(node) or part not in field_names(node):
                raise ConfigError(f"--{dotted}: unknown config field")
            node = getattr(node, part)
        if not dataclasses.is_dataclass(node) or leaf not in field_names(node):
            raise ConfigError(f"--{dotted}: unknown config field")
        current = getattr(node, leaf)
        if dataclasses.is_dataclass(current):
            raise ConfigError(f"--{dotted}: is a group; set one of its fields")
        setattr(node, leaf, _coerce(dotted, value, type(current)))

    def update(self, overrides: dict[str, Any]) -> "Dotted":
        for key, value in overrides.items():
            self.set(key, value)
        return self

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Dotted":
        cfg = cls()
        cfg.update(dict(flatten(raw)))
        return cfg


def check_folder_names(cfg) -> None:
    for key, flag in (("experiment", "--experiment"), ("run_name", "--run-name")):
        if getattr(cfg, key) or key != "run_name":  # run_name '' means the generator's name
            check_folder_name(flag, getattr(cfg, key))


def check_folder_name(flag: str, value: str) -> None:
    """An experiment or run folder name. '_' and '.' starts are the suite's own folders (_tune, .replaced-)
    and hidden ones: a run named so would be invisible to every report."""
    if not value or "/" in value or "\0" in value or value.startswith(("_", ".")) or value != value.strip():
        raise ConfigError(f"{flag}: {value!r} is not a valid folder name (not empty, no '/', not starting "
                          "with '_' or '.', no surrounding spaces)")


def check_image_size(flag: str, size: int) -> None:
    if size < 32 or size > 512 or size & (size - 1):
        raise ConfigError(f"--{flag}: {size} is not a power of two from 32 to 512")


def field_names(obj: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}


def flatten(d: dict[str, Any], prefix: str = ""):
    """Yield (dotted name, value) for every leaf of a nested dict."""
    for key, value in d.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _coerce(dotted: str, value: Any, kind: type) -> Any:
    """Convert a command-line string (or a Tune sample) to the field's type."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if isinstance(value, str):
                value = value.replace("_", "")
                return int(float(value)) if "e" in value.lower() else int(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{dotted}: expected {kind.__name__}, got {value!r}") from None


def from_preset(presets: dict, kind, preset: str, overrides: dict[str, Any] | None, own=None):
    """`presets[preset]` applied to a fresh `kind()`, then `own(cfg, preset, overrides)` (the trainer's: each
    generator's own preset settings), the dotted overrides, and validation."""
    if preset not in presets:
        raise ConfigError(f"--preset: unknown preset {preset!r} (choose from {', '.join(presets)})")
    cfg = presets[preset](kind())
    if own:
        cfg = own(cfg, preset, overrides or {})
    cfg.update(overrides or {})
    return cfg.validate()
