"""The settle rule as the launchers run it: its flags, its stored plan, and its look at an experiment's runs.

`jobs/tune.py --settle` (Ray Tune) and `jobs/submit.py --settle` (submitit: SLURM or local processes)
share all of it, so a plan means the same under either and the experiment's sweep file (`_tune_args.json`)
holds it the same way: the rule in analysis/settle.py, the rounds in cluster/ (sweep.py, submitit_jobs.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gan.config import make_config
from gan.errors import UserError
from gan.files import read_json


def add_settle_flags(parser: argparse.ArgumentParser) -> None:
    """The settle rule's flags, spelled the same in every launcher."""
    g = parser.add_argument_group("settle: seeds in rounds until each comparison is decided (analysis/settle.py)")
    g.add_argument("--settle", action="store_true",
                   help="train seeds in rounds; after each, every pair of generators on every --settle-metrics is "
                   "better, equivalent within its margin, or open (open pairs get another seed, up to --max-seeds)")
    g.add_argument("--settle-metrics", default=None, metavar="M,M",
                   help="test metrics to settle (default: fcn_pixel_acc with --eval.segmenter, else the study's four)")
    g.add_argument("--margin", action="append", default=[], metavar="METRIC=DELTA",
                   help="equivalence margin of a metric (repeatable; defaults: analysis/settle.py DEFAULT_MARGINS)")
    g.add_argument("--max-seeds", type=int, default=8, help="most seeds per generator (default 8)")
    g.add_argument("--first-look", type=int, default=3, help="seeds per generator at the first look (default 3)")
    g.add_argument("--first-seed", type=int, default=0,
                   help="the looks use training seeds S, S+1, ... (default 0); e.g. a track begun later on the "
                   "seeds whose checkpoints a new judge can still score")
    g.add_argument("--alpha", type=float, default=0.05,
                   help="error rate per metric over all looks and pairs (default 0.05; Bonferroni)")
    g.add_argument("--vary-split", action="store_true",
                   help="with --settle: seed k also draws split k (data.split_seed k), so the seeds vary both "
                   "the initialisation and the data")


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


def refuse_plan_flags_on_resume(args: argparse.Namespace) -> None:
    """--resume continues the stored plan, which is frozen: a settle flag typed with it would be ignored, so
    it is refused in one line."""
    parser = argparse.ArgumentParser()
    add_settle_flags(parser)
    given = [f"--{name.replace('_', '-')}" for name in ("settle_metrics", "margin", "max_seeds", "first_look",
                                                         "first_seed", "alpha", "vary_split")
             if getattr(args, name) != parser.get_default(name)]
    if given:
        raise UserError(f"--resume: continues the stored plan, frozen when it was written; {', '.join(given)} cannot "
                        "change it (a new plan is a new --experiment)")


def same(key: str, stored, planned) -> bool:
    """Whether a sweep file's `key` holds what the command plans (a plan compared without its freeze record:
    the same command again freezes the same plan at another time)."""
    from analysis import settle
    if key == "settle" and isinstance(stored, dict) and isinstance(planned, dict):
        stored, planned = settle.content(stored), settle.content(planned)
    return json.dumps(stored, sort_keys=True) == json.dumps(planned, sort_keys=True)


TRAINED_BY = ("gens", "preset", "overrides", "settle")  # what a settle sweep trains; the rest is how and where


def load_settle_sweep(args_file: Path) -> dict:
    """The settle sweep an experiment holds, whichever launcher started it, its plan checked."""
    saved = read_json(args_file)
    if not isinstance(saved, dict) or not isinstance(saved.get("settle"), dict) \
            or not isinstance(saved.get("overrides"), dict) or not isinstance(saved.get("gens"), list):
        raise UserError(f"{args_file}: holds no settle sweep (a search of jobs/tune.py, an older version, or edited); "
                        "choose another --experiment")
    check_stored_plan(saved, args_file)
    return saved


def settle_scores(root: Path, base, plan) -> dict[str, dict[int, dict[str, float]]]:
    """{generator: {seed: {metric: test mean}}} of the experiment's finished runs of the plan's configuration
    (any run there of another configuration is refused in one line: the rule would mix them)."""
    from analysis.runs import MEASUREMENT_FIELDS, find_runs
    from gan.config import for_generator
    from gan.rundir import RESUMABLE_FIELDS
    if not root.exists():
        return {}
    drawn = {"data.split_seed"} if plan.design == "varied" else set()  # varied: seed k draws split k
    # What a resumed run may change without training otherwise, and how a run is measured (the judge is
    # checked below), do not make another configuration; how long it trained does.
    ignored = (RESUMABLE_FIELDS - {"train.steps"}) | MEASUREMENT_FIELDS | drawn
    wanted = {k: v for k, v in base.flat().items() if k not in ignored | {
        "train.seed", "model.generator", "run_name", "experiment"}}
    scores: dict[str, dict[int, dict[str, float]]] = {}
    judges = set()
    for run in find_runs(root):
        if run.state != "finished" or run.generator not in plan.generators:
            continue
        flat = run.flat_config()  # the run's generator's own settings only, as for_generator gives the plan's
        differ = sorted(k for k, v in for_generator(wanted, run.generator).items()
                        if json.dumps(flat.get(k)) != json.dumps(v))
        if differ:
            raise UserError(f"--settle: {run.path} is another configuration ({differ[0]}: {flat.get(differ[0])!r} there, "
                            f"{wanted[differ[0]]!r} in the plan); settle in a new --experiment")
        missing = [m for m in plan.metrics if m not in run.test_metrics]
        if missing:
            raise UserError(f"--settle: {run.path} has no test {missing[0]}; it cannot count as a seed of this plan")
        if any(m.startswith("fcn_") for m in plan.metrics) and run.judge:
            judges.add(run.judge)
        if drawn and flat.get("data.split_seed") != run.seed:
            continue  # not a run of this design (its split is not its seed's)
        scores.setdefault(run.generator, {})[run.seed] = {m: float(run.test_metrics[m].mean()) for m in plan.metrics}
    if len(judges) > 1:
        raise UserError(f"--settle: the experiment's FCN-scores come from {len(judges)} different segmenters; the "
                        "rule compares one judge's scores only")
    return scores



def print_plan(saved: dict) -> None:
    from analysis import settle
    plan = settle.Plan.from_dict(saved["settle"])
    frozen = (saved["settle"].get(settle.FROZEN) or {}).get("at", "not recorded")
    control = ("control (per metric) " + ", ".join(f"{m} {plan.control_at(plan.first_seed, m):.4g} "
                                                   f"({plan.control_name.get(m, 'trivial')})" for m in plan.metrics)
               if plan.has_control else "no control (a plan from before controls)")
    print(f"settle: {', '.join(plan.metrics)} over {len(plan.pairs)} pairs; looks at {plan.first}..{plan.max_seeds} "
          f"seeds per generator (training seeds from {plan.first_seed}); alpha {plan.alpha} per metric, "
          f"{plan.alpha_per_test:.3g} per test (Bonferroni over {plan.looks} looks x {plan.comparisons} comparisons); "
          "margins " + ", ".join(f"{m} {plan.margins[m]:g}" for m in plan.metrics) + f"; {control}; frozen {frozen}")


def look(root: Path, saved: dict):
    """(the rule's rows, {generator: the training seeds its next look needs}, {generator: seeds finished})."""
    from analysis import settle
    plan = settle.Plan.from_dict(saved["settle"])
    scores = settle_scores(root, make_config(saved["preset"], saved["overrides"]), plan)
    rows, wanted = settle.replay(scores, plan)
    return rows, {g: list(plan.seeds(n)) for g, n in wanted.items()}, {g: set(seeds) for g, seeds in scores.items()}


def verdict(rows: list[dict], saved: dict, root: Path, report: str | None) -> int:
    """The rule's last look: printed, written to <experiment>/settle.{csv,md}, and into the report."""
    import pandas as pd

    from analysis.tables import to_markdown, write_table
    generators = saved["settle"]["generators"]
    spent = {g: max((r["seeds"] for r in rows if g in (r["a"], r["b"])), default=0) for g in generators}
    print(f"\nsettled with {', '.join(f'{g} {n}' for g, n in spent.items())} seeds:")
    table = pd.DataFrame(rows)
    print(to_markdown(table))
    write_table(table, root / "settle")
    if report:
        from analysis.report import build_report
        print(f"report: {build_report([root], report)}")
    return 0


class SettleReadout:
    """The settle half of cluster/'s Readout: what the command makes of the rule's rounds, from analysis/."""

    def settle_start(self, saved: dict) -> None:
        print_plan(saved)

    def settle_look(self, root: Path, saved: dict):
        return look(root, saved)

    def settle_done(self, rows: list[dict], saved: dict, root: Path, report: str | None) -> int:
        return verdict(rows, saved, root, report)
