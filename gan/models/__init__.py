"""The networks: a registry of generators, the shared PatchGAN, and the two builders the trainer calls.

A generator is one module in `gan/models/generators/` (or in a folder named by $PIX2PIX_GENERATORS) that
declares, as a module value, a `Generator` with everything that is its own (gan/models/registry.py):

    @dataclass
    class Settings:                 # its flags: --model.resnet.blocks, --model.resnet.dropout
        blocks: int = 9
        dropout: float = 0.0

    RESNET = Generator("resnet", build, Settings, check=check, presets={"tiny": {"blocks": 2}},
                       space={"blocks": {"choice": [6, 9]}}, summary="...", order=1)

Discovery collects those values the first time anything asks the registry (so a broken file is one
`error:` line of the job that asked, not a traceback at import), checks each one (its preset names, the
settings its presets, space and aliases name) and names the file of any problem. Everything that lists
generators - the `--model.generator` check, `--gens all`, the config's `model.<name>` sections, the
presets, the `hparams` sweep, the Tune grid, the SLURM array, the test parametrisations - asks the
registry. This package imports no Keras: a generator's `build` imports it when a net is built, so flags
and sweep spaces validate in a fraction of a second (the README's "Extending" walks through adding one).

    registry.py   the Generator record and its checks (what generator modules import)
    layers.py     Keras layers and blocks the nets share (fused BatchNorm, the up/down blocks, ...)
    winograd.py   Winograd F(m, r) convolutions behind `model.conv`
    patchgan.py   the 70x70 PatchGAN discriminator
    generators/   unet.py, resnet.py, hybrid.py
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys

from gan.models.registry import Discriminator, Generator, check_generator, check_range  # noqa: F401 (check_range: re-exported)
from gan.registry import Registry

EXTRA_ENV = "PIX2PIX_GENERATORS"  # a folder of generator modules beside gan/models/generators/ (a user's own)


def _discover(registry: Registry) -> None:
    """Load every generator and discriminator module once: the package's, then $PIX2PIX_GENERATORS's."""
    from gan.errors import UserError
    from gan.models import generators
    _load("gan.models.patchgan", None, "gan/models/patchgan.py")
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


GENERATORS: Registry[Generator] = Registry(
    "generator", check=check_generator, discover=_discover, order=lambda g: (g.order, g.name),
    hint=f"a generator from a folder of your own is found through ${EXTRA_ENV}")
DISCRIMINATORS: Registry[Discriminator] = Registry(
    "discriminator", discover=lambda _: GENERATORS.names(), order=lambda d: (d.order, d.name),
    hint=f"one of your own is declared in a module of ${EXTRA_ENV}")


def register(generator: Generator, where: str = "") -> Generator:
    """Add a generator (discovery does this for every module value; a test may do it for a toy one);
    ValueError naming what is wrong with it."""
    return GENERATORS.register(generator, where)


def unregister(name: str) -> None:
    GENERATORS.unregister(name)


def names() -> tuple[str, ...]:
    """Every registered generator, the study's three first: what `--gens all` means."""
    return GENERATORS.names()


def generator(name: str) -> Generator:
    return GENERATORS.lookup(name)


def build_generator(cfg, size: int):
    """The generator `cfg.model.generator` names (`cfg`: a validated ModelConfig) at `size` px."""
    return generator(cfg.generator).build(cfg, size)


def build_discriminator(cfg, size: int):
    """The discriminator `cfg.discriminator` names (the PatchGAN by default) at `size` px."""
    return DISCRIMINATORS.lookup(cfg.discriminator).build(cfg, size)


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


def _load(name: str, path: str | None, where: str) -> None:
    """Import one generator module and register the Generator values it declares, naming the file of any
    problem in one line (a syntax error, a name taken, a preset that sets no setting of it)."""
    from gan.errors import UserError
    try:
        if path is None:
            module = importlib.import_module(name)
        elif name in sys.modules:
            module = sys.modules[name]
        else:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        declared = {id(v): v for v in vars(module).values() if isinstance(v, (Generator, Discriminator))}
        for value in declared.values():  # (a value named twice in its module is registered once)
            registry = GENERATORS if isinstance(value, Generator) else DISCRIMINATORS
            if registry.get(value.name) is not value:
                registry.register(value, where)
    except Exception as e:  # a broken generator file names itself, in one line, for every command
        if path:
            sys.modules.pop(name, None)
        message = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{where}: cannot be loaded ({type(e).__name__}: {message}); fix or remove it") from None
