"""What a sweep's driver prints and writes of its results: the search's best configurations and table, the
retraining's tuned-against-default verdicts, and the settle rule's plan, looks and verdict.

cluster/sweep.py runs a sweep and hands each phase's outcome to a `SweepReadout` (its `Readout`); this
module reads the run directories only, so the launchers' knowledge of Ray and SLURM and the analysis's
of tables and statistics never meet. `plan` is the sweep's `SweepPlan` (cluster/sweep_plan.py), read
by its attributes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis import settle, stats
from analysis.runs import MEASUREMENT_FIELDS, find_runs, test_frame
from analysis.tables import comparison_table, metric_columns, to_markdown, write_table
from gan.config import for_generator, make_config
from gan.contract import RESUMABLE_FIELDS, SETTLE_TABLE
from gan.errors import UserError


class SweepReadout:
    """cluster/sweep.py's Readout, from analysis/."""

    def search_done(self, trials: int, errored: int, best: dict, root: Path, metric: str, mode: str,
                    report: str | None) -> int:
        return search_done(trials, errored, best, root, metric, mode, report)

    def retraining_done(self, trials: int, errored: int, plan, out: Path, experiment: str, report: str | None) -> int:
        return retraining_done(trials, errored, plan, out, experiment, report)

    def settle_start(self, plan) -> None:
        print_plan(plan)

    def settle_look(self, root: Path, plan):
        return look(root, plan)

    def settle_done(self, rows: list[dict], plan, root: Path, report: str | None) -> int:
        return verdict(rows, plan, root, report)


def _report(roots: list[Path], where: str, **kwargs) -> None:
    from analysis.report import build_report
    print(f"report: {build_report(roots, where, **kwargs)}")


# -- the search and the retraining -------------------------------------------------------------------------

def search_done(trials: int, errored: int, best: dict, root: Path, metric: str, mode: str, report: str | None) -> int:
    """The best configuration per generator (`best`: {generator: (dotted values, its result row)}), the
    comparison table, the report; 1 if a trial errored."""
    print(f"\n{trials} trials, {errored} errored; runs in {root}")
    if best:
        print(f"best configuration per generator by {metric} ({mode}):")
    for gen, (values, row) in best.items():
        swept = {k: v for k, v in values.items() if k != "model.generator"}
        print(f"  {gen}: {metric} {row[metric]:.4f} at step {int(row['step'])}  {swept or ''}  {row['run']}")
    runs = find_runs(root)
    # The tables, the sweep figure and a sweep's compared runs rank by the metric the search selected on.
    ranked_by = metric.split("_", 1)[1]  # 'val_fcn_iou' -> 'fcn_iou'
    if runs:
        print()
        print(comparison_table(runs=runs, metric=ranked_by))
    if report and runs:
        _report([root], report, metric=ranked_by)
    return 1 if errored else 0


def retraining_done(trials: int, errored: int, plan, out: Path, experiment: str, report: str | None) -> int:
    """Each generator's best configuration beside its default, retrained on the same fresh seeds: the tuned
    and the default comparison (each with its seed-level verdict in the report)."""
    seeds = sorted({t["train.seed"] for t in plan.retrain})
    print(f"\nretrained the best configuration of each generator and its default on seeds {seeds}: "
          f"{trials} trials, {errored} errored")
    default = make_config(plan.preset, plan.overrides).flat()
    chosen = pd.DataFrame([{"generator": gen, "field": name, "default": default[name], "tuned": value}
                           for gen, values in sorted(plan.best.items())
                           for name, value in sorted(values.items()) if name != "model.generator"])
    if not chosen.empty:
        print("\nthe best configuration beside the default, per generator:")
        print(to_markdown(chosen))
        if report:
            write_table(chosen, Path(report) / "best_vs_default")
    tests = {}
    for arm in ("tuned", "default"):
        root = out / f"{experiment}-{arm}"
        runs = find_runs(root) if root.exists() else []
        tests[arm] = test_frame(runs)
        if runs:
            print(f"\n{arm} ({root}):\n{comparison_table(runs=runs)}")
        if report and runs:
            _report([root], f"{report}/{arm}")
    compared = stats.arms_compared(tests, metric_columns(pd.concat(tests.values(), ignore_index=True)))
    if not compared.empty:
        few = compared[(compared.runs_a < 2) | (compared.runs_b < 2)]
        for gen in sorted(set(few.generator)):
            print(f"note: {gen}: one finished run in an arm; one seed gives no run-level interval (resume to finish "
                  "its seeds)")
        compared = compared.drop(few.index)
    if not compared.empty:
        print("\ntuned against default, per generator (run level: Welch over the seeds' means; bootstrap over seeds, "
              "then images):")
        print(to_markdown(compared))
        if report:
            write_table(compared, Path(report) / "tuned_vs_default")
    return 1 if errored else 0


# -- the settle rule's rounds ------------------------------------------------------------------------------

def settle_scores(root: Path, base, plan: settle.Plan) -> dict[str, dict[int, dict[str, float]]]:
    """{generator: {seed: {metric: test mean}}} of the experiment's finished runs of the plan's configuration
    (any run there of another configuration is refused in one line: the rule would mix them)."""
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


def print_plan(plan) -> None:
    rule = settle.Plan.from_dict(plan.settle)
    frozen = (plan.settle.get(settle.FROZEN) or {}).get("at", "not recorded")
    control = ("control (per metric) " + ", ".join(f"{m} {rule.control_at(rule.first_seed, m):.4g} "
                                                   f"({rule.control_name.get(m, 'trivial')})" for m in rule.metrics)
               if rule.has_control else "no control (a plan from before controls)")
    print(f"settle: {', '.join(rule.metrics)} over {len(rule.pairs)} pairs; looks at {rule.first}..{rule.max_seeds} "
          f"seeds per generator (training seeds from {rule.first_seed}); alpha {rule.alpha} per metric, "
          f"{rule.alpha_per_test:.3g} per test (Bonferroni over {rule.looks} looks x {rule.comparisons} comparisons); "
          "margins " + ", ".join(f"{m} {rule.margins[m]:g}" for m in rule.metrics) + f"; {control}; frozen {frozen}")


def look(root: Path, plan):
    """(the rule's rows, {generator: the training seeds its next look needs}, {generator: seeds finished})."""
    rule = settle.Plan.from_dict(plan.settle)
    scores = settle_scores(root, make_config(plan.preset, plan.overrides), rule)
    rows, wanted = settle.replay(scores, rule)
    return rows, {g: list(rule.seeds(n)) for g, n in wanted.items()}, {g: set(seeds) for g, seeds in scores.items()}


def verdict(rows: list[dict], plan, root: Path, report: str | None) -> int:
    """The rule's last look: printed, written to <experiment>/settle.{csv,md}, and into the report."""
    generators = plan.settle["generators"]
    spent = {g: max((r["seeds"] for r in rows if g in (r["a"], r["b"])), default=0) for g in generators}
    print(f"\nsettled with {', '.join(f'{g} {n}' for g, n in spent.items())} seeds:")
    table = pd.DataFrame(rows)
    print(to_markdown(table))
    write_table(table, root / SETTLE_TABLE)
    if report:
        _report([root], report)
    return 0
