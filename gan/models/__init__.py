"""The networks: a registry of generators, the shared PatchGAN, and the two builders the trainer calls.

A generator is one module in `gan/models/generators/` that registers itself:

    register(Generator("unet", build, summary="...", order=0))

and everything that lists generators - the `--model.generator` check, `--gens all`, the Tune grid, the
SLURM array, the test parametrisations, the `tiny` preset - asks `names()`. This package imports no
Keras: a generator's `build` imports it when a net is built, so flags and sweep spaces validate in a
fraction of a second (the README's "Extending" section walks through adding a generator).

    layers.py     Keras layers and blocks the nets share (fused BatchNorm, the up/down blocks, ...)
    winograd.py   Winograd F(m, r) convolutions behind `model.conv`
    patchgan.py   the 70x70 PatchGAN discriminator
    generators/   unet.py, resnet.py, hybrid.py
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Generator:
    """One generator: its name (`model.generator`), its builder and what the config needs to know of it."""
    name: str
    # (ModelConfig, image size) -> keras.Model with input and output (None, size, size, 3) in [-1, 1].
    build: Callable[[Any, int], Any]
    summary: str = ""  # one line for --help and the README
    # A problem with these model settings at this image size (the flag and why), or None; `Config.validate`
    # calls it, so the builder may trust its settings.
    check: Callable[[Any, int], str | None] | None = None
    # model.* fields the `tiny` preset (tests) shrinks for this generator, e.g. {"resnet_blocks": 2}.
    tiny: dict[str, Any] = field(default_factory=dict)
    order: int = 100  # place in every list (the study's three first); then by name


_REGISTRY: dict[str, Generator] = {}


def register(generator: Generator) -> Generator:
    """Add a generator (a module in generators/ does this at import; a test may do it for a toy one)."""
    if not generator.name.isidentifier():
        raise ValueError(f"generator name {generator.name!r}: letters, digits and '_' (it names flags and folders)")
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


def random_state(model) -> list:
    """The state of the model's random layers, in layer order: each Dropout's seed generator ([seed,
    counter], advanced at every call). Keras keeps it outside the weights and outside TensorFlow's object
    graph, so the trainer's checkpoint and the exported SavedModel are handed it explicitly."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


def _discover() -> None:
    from gan.errors import UserError
    from gan.models import generators
    for module in pkgutil.iter_modules(generators.__path__):
        try:
            importlib.import_module(f"{generators.__name__}.{module.name}")
        except Exception as e:  # a broken generator file names itself, in one line, for every command
            where = f"gan/models/generators/{module.name}.py"
            raise UserError(f"{where}: cannot be loaded ({type(e).__name__}: {e}); fix or remove it") from None


_discover()
