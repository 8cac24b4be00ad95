"""The settle rule's plan as both launchers make it: measured, checked and frozen before the first round.

`jobs/tune.py --settle` (Ray Tune) and `jobs/submit.py --settle` (submitit: SLURM or local processes)
share all of it, so a plan means the same under either and the experiment's sweep file (`_tune_args.json`)
holds it the same way: the rule in analysis/settle.py, the rounds in cluster/ (sweep.py, submitit_jobs.py),
the looks and the verdict in analysis/sweeps.py. The one module of the launchers that joins analysis/ (the
plan's record) and gan/evaluators/ (the control, scored on the plan's test photos).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gan.errors import UserError


def settle_plan(args: argparse.Namespace, gens: list[str], base, overrides: dict) -> dict | None:
    """The settle rule's plan from the settle flags (pre-registered: stored with the sweep before its first
    round), every value checked; None without --settle."""
    from analysis import settle
    from gan import contract
    from gan.evaluators.metrics import METRICS, metric_names
    if args.vary_split and not args.settle:
        raise UserError("--vary-split: goes with --settle (for a fixed set of seeds and splits use jobs/tune.py "
                        "--seeds N --splits M)")
    if args.vary_split and ("data.split_seed" in overrides or base.data.split_file):
        raise UserError("--vary-split: draws each run's split itself; drop --data.split_seed and --data.split_file")
    if not args.settle:
        return None
    if "train.seed" in overrides:
        raise UserError("--settle: chooses each run's training seed itself (--first-seed S for where the looks "
                        "begin); drop --train.seed")
    known = [*metric_names(), *(contract.FCN_METRICS if base.eval.segmenter else ())]
    study = [m for m in metric_names() if METRICS[m].study]
    metrics = ([m for m in args.settle_metrics.split(",") if m] if args.settle_metrics is not None
               else ["fcn_pixel_acc"] if base.eval.segmenter else study)
    bad = [m for m in metrics if m not in known]
    if bad or not metrics:
        raise UserError(f"--settle-metrics: {bad[0] if bad else args.settle_metrics!r} is not a test metric of these runs "
                        f"(choose from {', '.join(known)}; the FCN-score needs --eval.segmenter)")
    lower = {m for m in metrics if m in METRICS and not METRICS[m].higher_is_better}
    given = {}
    for item in args.margin:
        metric, _, value = item.partition("=")
        try:
            given[metric] = float(value)
        except ValueError:
            raise UserError(f"--margin {item}: not METRIC=DELTA (e.g. --margin ssim=0.01)") from None
        if metric not in known:
            raise UserError(f"--margin {item}: {metric!r} is not a test metric of these runs")
        if metric not in metrics:
            raise UserError(f"--margin {item}: {metric} is not settled by this plan (--settle-metrics "
                            f"{','.join(metrics)}); drop it or settle it")
    control, name, ceiling, by_seed, judge = measure_control(args, base, metrics, lower)
    # The default margin: a tenth of the span from the control to the real photos on the plan's own test
    # photos (the study's rule, docs/guide.md "Choosing a margin"); a margin the user gives wins.
    first = by_seed[str(args.first_seed)] if by_seed else control
    margins = {m: given.get(m, float(f"{settle.MARGIN_FRACTION * abs(ceiling[m] - first[m]):.4g}")) for m in metrics}
    try:
        plan = settle.Plan(generators=gens, metrics=metrics, margins=margins, lower_is_better=sorted(lower),
                           alpha=args.alpha, first=args.first_look, max_seeds=args.max_seeds,
                           first_seed=args.first_seed, design="varied" if args.vary_split else "fixed",
                           control=control if not by_seed else {}, control_by_seed=by_seed, control_name=name,
                           ceiling=ceiling, configs=configs_of(base, gens, args.vary_split), judge=judge).check()
    except ValueError as e:
        raise UserError(f"--settle: {e}") from None
    return settle.freeze(plan.to_dict())


def measure_control(args, base, metrics: list[str], lower: set[str]):
    """(control, which trivial output, real photos' scores, per-seed control of a varied design or {}, the
    judge's identity): the trivial outputs scored on the plan's test photos, before any run."""
    from dataclasses import replace

    from gan.evaluators.controls import measure
    if not args.vary_split:
        control, name, ceiling, judge = measure(base, metrics, lower)
        return control, name, ceiling, {}, judge
    by_seed = {}
    for seed in range(args.first_seed, args.first_seed + args.max_seeds):
        cfg = replace(base, data=replace(base.data, split_seed=seed))
        by_seed[str(seed)], name, ceiling, judge = measure(cfg, metrics, lower)
    return by_seed[str(args.first_seed)], name, ceiling, by_seed, judge


def configs_of(base, gens: list[str], varied: bool) -> dict[str, str]:
    """generator -> the identity of the runs the plan counts (analysis/settle.py config_identity)."""
    from analysis import settle
    from gan.config import for_generator
    return {g: settle.config_identity(for_generator(base.flat(), g), "varied" if varied else "fixed") for g in gens}


def check_stored_plan(saved: dict, args_file: Path) -> None:
    """A stored plan that no longer reads as one (truncated, damaged) or whose content changed after it was
    frozen (a margin edited after a look) is refused in one line naming the fields."""
    from analysis import settle
    try:
        settle.load(saved["settle"])
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"{args_file}: its settle plan is refused ({e}); restore the file from a copy, or start "
                        "a new --experiment") from None
