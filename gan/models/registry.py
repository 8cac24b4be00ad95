"""The record a generator module declares, and the checks it passes when it is registered.

A generator module imports this file only (never the package above it), declares one `Generator` as a
module value, and `gan/models/__init__.py` collects it. Everything a typo could hide is checked here,
at registration, naming the generator: preset names, the settings each preset, the search space and
the aliases name, the search space's values. Plain Python: no Keras, no config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

# Shared ModelConfig fields (gan/config.py): a generator of one of these names would shadow it.
RESERVED = frozenset({"generator", "discriminator", "filters", "batchnorm", "upsample", "conv", "own"})
PRESET_NAMES = ("paper", "small", "cityscapes_cpu", "tiny")  # gan/config.py PRESETS (a test keeps them equal)
SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")


@dataclass(frozen=True)
class Generator:
    """One generator: its name (`model.generator`), its builder, its own settings and what the config, the
    presets and the sweeps need to know of it."""
    name: str
    # (ModelConfig, image size) -> keras.Model with input and output (None, size, size, 3) in [-1, 1]; the
    # generator's own settings are `cfg.own` (an instance of `settings`).
    build: Callable[[Any, int], Any]
    # A dataclass of the generator's own settings: `model.<name>.<field>` on every command line, in every
    # config.json and sweep space. None: it has none.
    settings: type | None = None
    summary: str = ""  # one line, shown by --help of every job (`--gens`)
    # A problem with these model settings at this image size (the flag and why), or None; `Config.validate`
    # calls it with the ModelConfig, so the builder may trust its settings (`flag(self, field)` names them).
    check: Callable[[Any, int], str | None] | None = None
    # Own settings per preset, e.g. {"tiny": {"blocks": 2}, "cityscapes_cpu": {"blocks": 6}}.
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Own settings the `hparams` sweep searches, as a sweep space (cluster/spaces.py): {"blocks": {"choice": [6, 9]}}.
    space: dict[str, Any] = field(default_factory=dict)
    # Older flat names (config.json of earlier runs, old flags) -> own setting: {"resnet_blocks": "blocks"}.
    aliases: dict[str, str] = field(default_factory=dict)
    order: int = 100  # place in every list (the study's three first); then by name
    where: str = field(default="", compare=False)  # the file that declared it (set at registration)

    def flag(self, setting: str) -> str:
        """The dotted flag of one of its own settings: '--model.resnet.blocks'."""
        return f"--model.{self.name}.{setting}"


@dataclass(frozen=True)
class Discriminator:
    """One discriminator: its name (`model.discriminator`) and its builder, (ModelConfig, image size) ->
    keras.Model taking [input label map, target or generated photo] and giving logits (a patch map or one)."""
    name: str
    build: Callable[[Any, int], Any]
    summary: str = ""
    order: int = 100


def check_generator(gen: Generator) -> None:
    """ValueError naming the first thing about `gen` that would surface later, in another job, as a flag
    nobody typed."""
    if not isinstance(gen.name, str) or not gen.name.isidentifier() or gen.name in RESERVED:
        raise ValueError(f"generator name {gen.name!r}: letters, digits and '_' (it names flags and folders), "
                         f"not one of {', '.join(sorted(RESERVED))}")
    if gen.settings is not None and not dataclasses.is_dataclass(gen.settings):
        raise ValueError(f"generator {gen.name!r}: settings must be a dataclass")
    fields = {f.name for f in dataclasses.fields(gen.settings)} if gen.settings is not None else set()
    for preset, values in gen.presets.items():
        if preset not in PRESET_NAMES:
            raise ValueError(f"generator {gen.name!r}: preset {preset!r} is not a preset (choose from "
                             f"{', '.join(PRESET_NAMES)})")
        unknown = [k for k in values if k not in fields]
        if unknown:
            raise ValueError(f"generator {gen.name!r}: preset {preset!r} sets {unknown[0]!r}, which is not one of "
                             f"its settings ({', '.join(sorted(fields)) or 'none'})")
    for key, sampler in gen.space.items():
        if key not in fields:
            raise ValueError(f"generator {gen.name!r}: its search space names {key!r}, which is not one of its "
                             f"settings ({', '.join(sorted(fields)) or 'none'})")
        if isinstance(sampler, dict) and not (len(sampler) == 1 and next(iter(sampler)) in SPACE_KINDS):
            raise ValueError(f"generator {gen.name!r}: the search space of {key!r} is not a constant or one of "
                             f"{{{', '.join(SPACE_KINDS)}: ...}}, got {sampler!r}")
    for old, new in gen.aliases.items():
        if new not in fields:
            raise ValueError(f"generator {gen.name!r}: alias {old!r} names {new!r}, which is not one of its settings")


def check_range(gen: Generator, settings: Any, name: str, low: float, high: float | None = None,
                high_open: bool = False) -> str | None:
    """'--model.<gen>.<name>: must be ...' when the setting is outside [low, high] ([low, high) if
    `high_open`), else None: the range checks of generators' own settings, worded as the config's."""
    value = getattr(settings, name)
    if value < low or high is not None and (value >= high if high_open else value > high):
        if high is None:
            return f"{gen.flag(name)}: must be >= {low:g}, got {value}"
        return f"{gen.flag(name)}: must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value}"
    return None
