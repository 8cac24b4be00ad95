"""The networks: a registry of generators, the shared PatchGAN, and the two builders the trainer calls.

A generator is one module in `gan/models/generators/` (or in a folder named by $PIX2PIX_GENERATORS) that
registers itself with everything that is its own:

    @dataclass
    class Settings:                 # its flags: --model.resnet.blocks, --model.resnet.dropout
        blocks: int = 9
        dropout: float = 0.0

    register(Generator("resnet", build, Settings, check=check, presets={"tiny": {"blocks": 2}},
                       space={"blocks": {"choice": [6, 9]}}, summary="...", order=1))

and everything that lists generators - the `--model.generator` check, `--gens all`, the config's
`model.<name>` sections, the presets, the `hparams` sweep, the Tune grid, the SLURM array, the test
parametrisations - asks the registry. This package imports no Keras: a generator's `build` imports it
when a net is built, so flags and sweep spaces validate in a fraction of a second (the README's
"Extending" section walks through adding a generator).

    layers.py     Keras layers and blocks the nets share (fused BatchNorm, the up/down blocks, ...)
    winograd.py   Winograd F(m, r) convolutions behind `model.conv`
    patchgan.py   the 70x70 PatchGAN discriminator
    generators/   unet.py, resnet.py, hybrid.py
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import Any, Callable


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
    summary: str = ""  # one line for --help and the README
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

    def flag(self, setting: str) -> str:
        """The dotted flag of one of its own settings: '--model.resnet.blocks'."""
        return f"--model.{self.name}.{setting}"


# Shared ModelConfig fields (gan/config.py): a generator of one of these names would shadow it.
RESERVED = frozenset({"generator", "filters", "batchnorm", "upsample", "conv", "own"})
_REGISTRY: dict[str, Generator] = {}


def register(generator: Generator) -> Generator:
    """Add a generator (a module in generators/ does this at import; a test may do it for a toy one)."""
    if not generator.name.isidentifier() or generator.name in RESERVED:
        raise ValueError(f"generator name {generator.name!r}: letters, digits and '_' (it names flags and folders), "
                         f"not one of {', '.join(sorted(RESERVED))}")
    if generator.settings is not None and not dataclasses.is_dataclass(generator.settings):
        raise ValueError(f"generator {generator.name!r}: settings must be a dataclass")
    if generator.name in _REGISTRY and _REGISTRY[generator.name] is not generator:
        raise ValueError(f"generator {generator.name!r} is registered twice")
    _REGISTRY[generator.name] = generator
    return generator


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered generator, the study's three first: what `--gens all` means."""
    return tuple(g.name for g in sorted(_REGISTRY.values(), key=lambda g: (g.order, g.name)))


def generator(name: str) -> Generator:
    return _REGISTRY[name]


def build_generator(cfg, size: int):
    """The generator `cfg.model.generator` names (`cfg`: a validated ModelConfig) at `size` px."""
    return _REGISTRY[cfg.generator].build(cfg, size)


def build_discriminator(cfg, size: int):
    from gan.models.patchgan import patchgan
    return patchgan(cfg.filters, size, cfg.batchnorm, cfg.conv)


def checkpoint_bytes(cfg, size: int) -> int:
    """Bytes of one training checkpoint of the model config `cfg` at `size` px (float32): the generator's and
    the discriminator's variables, and Adam's two slots for each trainable one. Builds both nets (Keras)."""
    import math
    nets = (build_generator(cfg, size), build_discriminator(cfg, size))
    trainable = sum(math.prod(v.shape) for net in nets for v in net.trainable_weights)
    other = sum(math.prod(v.shape) for net in nets for v in net.non_trainable_weights)
    return 4 * (3 * trainable + other)


def random_state(model) -> list:
    """The state of the model's random layers, in layer order: each Dropout's seed generator ([seed,
    counter], advanced at every call). Keras keeps it outside the weights and outside TensorFlow's object
    graph, so the trainer's checkpoint and the exported SavedModel are handed it explicitly."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


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


EXTRA_ENV = "PIX2PIX_GENERATORS"  # a folder of generator modules beside gan/models/generators/ (a user's own)


def _discover() -> None:
    from gan.errors import UserError
    from gan.models import generators
    for module in pkgutil.iter_modules(generators.__path__):
        _load(f"{generators.__name__}.{module.name}", None, f"gan/models/generators/{module.name}.py")
    extra = os.environ.get(EXTRA_ENV)
    if extra:
        folder = os.path.abspath(os.path.expanduser(extra))
        if not os.path.isdir(folder):
            raise UserError(f"${EXTRA_ENV} {extra}: not a folder of generator modules")
        for module in pkgutil.iter_modules([folder]):
            _load(f"pix2pix_generators.{module.name}", os.path.join(folder, f"{module.name}.py"),
                  os.path.join(folder, f"{module.name}.py"))


def _load(name: str, path: str | None, where: str) -> None:
    from gan.errors import UserError
    try:
        if path is None:
            importlib.import_module(name)
        elif name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    except Exception as e:  # a broken generator file names itself, in one line, for every command
        if path:
            sys.modules.pop(name, None)
        raise UserError(f"{where}: cannot be loaded ({type(e).__name__}: {e}); fix or remove it") from None


_discover()
