"""Named search spaces over dotted config names, combinable, plus user spaces from a JSON file.

    gens    the generators to compare (a grid: every sample runs each generator)
    hparams learning rates, beta1, L1 weight, and each generator's own settings
            (its `space` in gan/models: the U-Net's dropout, the ResNet's blocks, ...)
    aug     jitter, mirroring, colour jitter of the target, random scale/crop

A space is written as data - dotted name -> {"grid": [...]} | {"choice": [...]}
| {"uniform": [lo, hi]} | {"loguniform": [lo, hi]} | {"randint": [lo, hi]} | a
constant - the named ones as well as a user's file:

    {"optim.lr_g": {"loguniform": [5e-5, 5e-4]}, "model.resnet.blocks": {"grid": [6, 9]}}

so that `check_space` can validate every value it can produce (each grid and
choice value, each range's ends) for every generator of the sweep before Ray
starts; `to_tune` turns it into Tune's samplers. A generator's own settings
(`model.<name>.*`) are checked against that generator only, and each trial is
given only the knobs its generator has (gan/config.py `for_generator`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from gan.cli import generator_list
from gan import models
from gan.config import Config, legacy_names
from gan.errors import UserError

HPARAMS = {  # the knobs every generator has; each generator adds its own (`hparams_space`)
    "optim.lr_g": {"loguniform": [5e-5, 5e-4]},
    "optim.lr_d": {"loguniform": [5e-5, 5e-4]},
    "optim.beta1": {"choice": [0.5, 0.9]},
    "optim.l1_weight": {"choice": [10.0, 50.0, 100.0, 200.0]},
}
AUG = {
    "aug.jitter": {"choice": [True, False]},
    "aug.mirror": {"choice": [True, False]},
    "aug.color_jitter": {"choice": [0.0, 0.1, 0.2]},
    "aug.crop_scale_min": {"choice": [1.0, 0.8, 0.6]},
}
SPACES = {"hparams": HPARAMS, "aug": AUG}
OWN_SETTINGS = ("hparams",)  # the named sweeps that add each generator's own space


def own_space(gens: list[str]) -> dict[str, Any]:
    """Each generator's own search space under its dotted names: {"model.resnet.blocks": {...}, ...}."""
    return {f"model.{gen}.{name}": spec for gen in gens for name, spec in models.generator(gen).space.items()}


def owner(key: str) -> str | None:
    """The generator whose own setting `key` is ('model.resnet.blocks' -> 'resnet'), else None."""
    parts = key.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "model" and parts[1] in models.names() else None
SAMPLERS = ("grid", "choice", "uniform", "loguniform", "randint")


def load_space_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"--space {path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--space {path}: not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--space {path}: must be a JSON object of dotted name -> sampler")
    return raw


def check_count(flag: str, n: int) -> None:
    """--samples / --seeds / --splits: at least one (the one check every launcher makes)."""
    if n < 1:
        raise UserError(f"{flag}: must be >= 1, got {n}")


def build_space(gens: list[str], sweeps: list[str], space_file: str | None = None, seeds: int = 1,
                splits: int = 1, grid: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sweep's space as data: the generator grid, the named sweeps, the user's file, `grid` (--grid's
    {KEY: {"grid": [...]}}), then `seeds`
    training seeds (train.seed 0..seeds-1, a grid: every configuration trains on each) and `splits` data
    splits (data.split_seed 0..splits-1, crossed with the seeds: the variance of each source apart)."""
    gens = generator_list(",".join(gens))  # the one --gens check (gan/cli.py)
    space: dict[str, Any] = {"model.generator": {"grid": list(gens)}}
    for name in sweeps:
        if name not in SPACES:
            raise UserError(f"--sweep: unknown sweep {name!r} (choose from {', '.join(SPACES)})")
        space.update(SPACES[name])
        if name in OWN_SETTINGS:
            space.update(own_space(gens))
    if space_file:
        user = load_space_file(space_file)
        if "model.generator" in user:
            raise UserError(f"--space {space_file}: set the generators with --gens, not in the space")
        legacy = legacy_names()  # older flat names: the setting of each generator that has it
        for key, spec in user.items():
            space.update({target: spec for target in legacy.get(key, [key])})
    for key, spec in (grid or {}).items():
        if key == "model.generator":
            raise UserError("--grid: set the generators with --gens")
        space.update({target: spec for target in legacy_names().get(key, [key])})
    for flag, key, n in (("--seeds", "train.seed", seeds), ("--splits", "data.split_seed", splits)):
        check_count(flag, n)
        if n > 1:
            if key in space:
                raise UserError(f"{flag}: the space already sweeps {key}; use one or the other")
            space[key] = {"grid": list(range(n))}
    return space


def _values(key: str, spec: Any, where: str) -> list[Any]:
    """Every value a sampler can produce that matters for validation (all of a list, both ends of a range)."""
    if not isinstance(spec, dict):
        return [spec]
    if len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
        raise UserError(f"{where}: {key}: use one of {', '.join(SAMPLERS)} (one per field)")
    kind, arg = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        if not isinstance(arg, list) or not arg:
            raise UserError(f"{where}: {key}: {kind} needs a non-empty list of values")
        return arg
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             and math.isfinite(v) for v in arg)):
        raise UserError(f"{where}: {key}: {kind} needs [low, high], two finite numbers, got {arg!r}")
    low, high = arg
    if not low < high:
        raise UserError(f"{where}: {key}: {kind} needs low < high, got {arg!r}")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: {key}: loguniform needs low > 0, got {arg!r}")
    if kind == "randint":
        if not all(isinstance(v, int) for v in arg):
            raise UserError(f"{where}: {key}: randint needs whole numbers, got {arg!r}")
        return [low, high - 1]  # Tune's randint excludes high
    return [low, high]


def check_space(space: dict[str, Any], base: Config, where: str = "--space") -> None:
    """Every value the space can produce makes a valid config for every generator of the sweep
    (UserError naming the field, the value and the generator otherwise)."""
    from gan.evaluators.metrics import metric_names as image_metrics
    metrics = image_metrics()
    known = Config().flat()
    for key in space:
        if key not in known:
            raise UserError(f"{where}: {key!r} is not a config field")
    gens = _values("model.generator", space["model.generator"], where)
    for key in space:
        if owner(key) and owner(key) not in gens:
            raise UserError(f"{where}: {key} is a setting of {owner(key)}, which this sweep does not train "
                            f"(--gens {','.join(gens)})")
    for gen in gens:  # the base config itself, for each generator (a size one generator cannot take)
        Config.from_dict(base.to_dict()).update({"model.generator": gen}).validate(metrics)
    for key, spec in space.items():
        if key == "model.generator":
            continue
        for value in _values(key, spec, where):
            for gen in [owner(key)] if owner(key) else gens:  # a generator's own setting: that generator
                cfg = Config.from_dict(base.to_dict())
                try:
                    cfg.update({"model.generator": gen, key: value}).validate(metrics)
                except UserError as e:
                    raise UserError(f"{where}: {key} = {value!r} ({gen}): {str(e).split(': ', 1)[-1]}") from None


def metric_names(base: Config) -> list[str]:
    """What a trial reports and ASHA / 'best' may rank by: <split>_<metric>."""
    from gan import contract
    from gan.evaluators.metrics import metric_names
    names = list(metric_names()) + (list(contract.FCN_METRICS) if base.eval.fcn_every_eval else [])
    return [f"{split}_{name}" for split in ("val", "train") for name in names]


RANDOM = ("choice", "uniform", "loguniform", "randint")


def _is_random(spec: Any) -> bool:
    return isinstance(spec, dict) and next(iter(spec)) in RANDOM


def sample_configurations(space: dict[str, Any], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n draws of the space's random part ([] when it has none), made here rather than by Tune: Tune
    draws afresh for every grid point, so with the generator as a grid each generator would get
    different configurations. Drawn once, every generator trains on the same n; the draws are stored
    with the sweep, so a resumed sweep has them too."""
    rng = np.random.default_rng(seed)
    random = {key: next(iter(spec.items())) for key, spec in space.items() if _is_random(spec)}
    if not random:
        return []

    def draw(kind: str, arg: list) -> Any:
        if kind == "choice":
            return arg[int(rng.integers(len(arg)))]
        if kind == "uniform":
            return float(rng.uniform(*arg))
        if kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
        return int(rng.integers(*arg))  # randint: high excluded, as Tune's
    return [{key: draw(kind, arg) for key, (kind, arg) in sorted(random.items())} for _ in range(n)]


def to_tune(space: dict[str, Any], configurations: list[dict[str, Any]] | None = None,
            trial_key: str = "trial") -> dict[str, Any]:
    """Tune's space for a checked space: its grids as grid searches, and its random part either as
    `configurations` (one grid entry each, under `trial_key`) or, without them, as Tune's samplers."""
    from ray import tune
    samplers = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda a: tune.uniform(*a),
                "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    tuned = {key: samplers[next(iter(spec))](next(iter(spec.values()))) if isinstance(spec, dict) else spec
             for key, spec in space.items() if not (configurations and _is_random(spec))}
    if configurations:
        tuned[trial_key] = tune.grid_search(configurations)
    return tuned
