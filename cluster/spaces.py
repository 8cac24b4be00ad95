"""Named search spaces over dotted config names, combinable, plus user spaces from a JSON file.

    gens    the generators to compare (a grid: every sample runs each generator)
    hparams learning rates, beta1, L1 weight, dropout, residual blocks
    aug     jitter, mirroring, colour jitter of the target, random scale/crop

A user space is a JSON object of dotted name -> {"grid": [...]} | {"choice": [...]}
| {"uniform": [lo, hi]} | {"loguniform": [lo, hi]} | {"randint": [lo, hi]} | a constant:

    {"optim.lr_g": {"loguniform": [5e-5, 5e-4]}, "model.resnet_blocks": {"grid": [6, 9]}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray import tune

from gan.config import GENERATOR_NAMES, Config
from gan.errors import UserError


def gens_space(gens: list[str]) -> dict[str, Any]:
    return {"model.generator": tune.grid_search(gens)}


def hparams_space() -> dict[str, Any]:
    return {
        "optim.lr_g": tune.loguniform(5e-5, 5e-4),
        "optim.lr_d": tune.loguniform(5e-5, 5e-4),
        "optim.beta1": tune.choice([0.5, 0.9]),
        "optim.l1_weight": tune.choice([10.0, 50.0, 100.0, 200.0]),
        "model.resnet_dropout": tune.choice([0.0, 0.3, 0.5]),
        "model.resnet_blocks": tune.choice([6, 9]),
    }


def aug_space() -> dict[str, Any]:
    return {
        "aug.jitter": tune.choice([True, False]),
        "aug.mirror": tune.choice([True, False]),
        "aug.color_jitter": tune.choice([0.0, 0.1, 0.2]),
        "aug.crop_scale_min": tune.choice([1.0, 0.8, 0.6]),
    }


SPACES = {"hparams": hparams_space, "aug": aug_space}

_SAMPLERS = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda a: tune.uniform(*a),
             "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}


def load_space_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"--space {path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"--space {path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--space {path}: must be a JSON object of dotted name -> sampler")
    known = Config().flat()
    space = {}
    for key, spec in raw.items():
        if key not in known:
            raise UserError(f"--space {path}: {key!r} is not a config field")
        if isinstance(spec, dict):
            if len(spec) != 1 or next(iter(spec)) not in _SAMPLERS:
                raise UserError(f"--space {path}: {key}: use one of {', '.join(_SAMPLERS)}")
            kind, arg = next(iter(spec.items()))
            space[key] = _SAMPLERS[kind](arg)
        else:
            space[key] = spec
    return space


def build_space(gens: list[str], sweeps: list[str], space_file: str | None = None) -> dict[str, Any]:
    bad = [g for g in gens if g not in GENERATOR_NAMES]
    if bad:
        raise UserError(f"--gens: unknown generator {bad[0]!r} (choose from {', '.join(GENERATOR_NAMES)} or all)")
    space = gens_space(gens)
    for name in sweeps:
        if name not in SPACES:
            raise UserError(f"--sweep: unknown sweep {name!r} (choose from {', '.join(SPACES)})")
        space.update(SPACES[name]())
    if space_file:
        space.update(load_space_file(space_file))
    return space
