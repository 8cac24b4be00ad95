"""Compare the generators, and sweep hyper-parameters and augmentations, with Ray Tune.

    python jobs/tune.py --gens all --preset small                 # the three generators in parallel
    python jobs/tune.py --gens all --seeds 3                      # three training seeds per generator
    python jobs/tune.py --gens unet,hybrid --sweep hparams --samples 8 --scheduler asha
    python jobs/tune.py --gens all --sweep aug --space my_space.json --address ray://head:10001
    python jobs/tune.py --experiment sweep1 --resume              # after the driver died or Ctrl-C
    python jobs/tune.py --gens all --sweep hparams,aug --samples 8 --scheduler asha \
        --metric val_fcn_iou --then-seeds 3                       # equal tuning budget, then fresh seeds

Every trial writes the same run directory as jobs/train.py under
<out>/<experiment>/<run_name>; Tune's own state is in <out>/<experiment>/_tune.
Connects to --address or $RAY_ADDRESS, else starts a private Ray instance on
this machine (never one that another job started). Every value the space
can produce is validated for every generator before Ray starts. Ends with
the best configuration per generator and the comparison table.

With --then-seeds N the search is followed by a retraining phase: each
generator's best configuration (selected on validation) and its default, on
fresh seeds 1..N, into <experiment>-tuned/ and <experiment>-default/, whose
reports give the seed-level tuned and default verdicts (evidence on test).
--resume continues either phase, also between them.

Exit codes: 0 every trial finished, 1 some trial errored, 2 bad input,
75 interrupted (Ctrl-C, TERM): the unfinished trials' runs are marked
preempted; `--resume` continues them.
"""

import argparse
import json
import math
from pathlib import Path

from gan.cli import (add_common_flags, add_gens_flag, generator_list, parse_overrides,
                     refuse_other_generators_settings, run_main)
from gan.config import check_folder_name, make_config
from gan.contract import TUNE_ARGS, TUNE_LEASE, TUNE_STATE
from gan.errors import UserError
from gan.files import read_json
from gan.lease import Lease
import settling  # jobs/settling.py: the settle rule's flags, plan and look, shared by both launchers


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gens_flag(parser)
    parser.add_argument("--sweep", default="", help="named spaces to add: hparams, aug (comma list)")
    parser.add_argument("--space", default=None, help="JSON file of extra dotted-name samplers")
    parser.add_argument("--samples", type=int, default=1, help="configurations drawn from the random part of the space; every generator trains on each")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per configuration (train.seed "
                        "0..N-1, the split fixed by data.split_seed); run names end in -seed<k>")
    parser.add_argument("--splits", type=int, default=1, help="data splits per configuration, crossed with --seeds "
                        "(data.split_seed 0..N-1: run k of a split draws its own 400/50/50 from the archive); the "
                        "report then splits the between-run variance into seed and split; run names hold -split<k>")
    parser.add_argument("--scheduler", choices=["fifo", "asha"], default="fifo")
    parser.add_argument("--metric", default="val_ssim", help="validation metric for ASHA and 'best' "
                        "(<split>_<metric>, e.g. val_ssim, val_l1; the contract says which way is better)")
    parser.add_argument("--then-seeds", type=int, default=None, metavar="N",
                        help="after the search, retrain each generator's best configuration (by --metric, on "
                        "validation) and its default on fresh seeds 1..N and compare them on test")
    settling.add_settle_flags(parser)
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a "
                        "private local instance)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial")
    parser.add_argument("--cpus-per-trial", type=float, default=1,
                        help="CPUs per trial (default 1: trials side by side). Measured on 2 cores at 128 px "
                        "(jobs/bench_cluster.py --packing): 1 CPU each finishes a sweep of all three generators "
                        "~12%% sooner (ResNet +45%%, hybrid +14%% trials/hour; the U-Net alone prefers the "
                        "whole node, -14%%); give each trial all CPUs when its seconds per 1,000 steps must "
                        "compare generators (the study's execution-time column)")
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--disk-limit", type=float, default=None, metavar="GB",
                        help="refuse a sweep whose checkpoints could pass this many GB (default: the free space "
                        "where the runs go); the estimate is printed before every sweep")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="at the end, write the comparison report (tables, figures, HTML) here")
    add_common_flags(parser)
    return parser.parse_known_args()


def plan(args: argparse.Namespace, extra: list[str]) -> dict:
    """The sweep as saved in <out>/<experiment>/_tune_args.json, every value checked (no Ray yet)."""
    from cluster import spaces
    overrides = parse_overrides(extra)
    if args.data is not None:
        overrides["data.source"] = args.data
    if args.data_format is not None:
        overrides["data.format"] = args.data_format
    if args.samples < 1:
        raise UserError(f"--samples: must be >= 1, got {args.samples}")
    if args.max_failures < 0:
        raise UserError(f"--max-failures: must be >= 0, got {args.max_failures}")
    if not args.cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial: must be > 0 (a trial needs a CPU to run on), got {args.cpus_per_trial}")
    if args.gpus_per_trial < 0:
        raise UserError(f"--gpus-per-trial: must be >= 0, got {args.gpus_per_trial}")
    gens = generator_list(args.gens)
    refuse_other_generators_settings(overrides, gens)
    sweeps = [s for s in args.sweep.split(",") if s]
    base = make_config(args.preset, overrides)
    if args.then_seeds is not None and (args.then_seeds < 2 or args.seeds > 1):
        raise UserError(f"--then-seeds: at least 2 fresh seeds (tuned against default is a run-level comparison: "
                        f"one seed per arm gives no interval), and the search itself on one seed (no --seeds); "
                        f"got {args.then_seeds}")
    if args.seeds > 1 and "train.seed" in overrides:
        raise UserError("--seeds: sets train.seed 0..N-1 itself; drop --train.seed")
    if args.splits > 1 and ("data.split_seed" in overrides or base.data.split_file):
        raise UserError("--splits: draws each run's split itself; drop --data.split_seed and --data.split_file")
    space = spaces.build_space(gens, sweeps, args.space, seeds=args.seeds, splits=args.splits)
    spaces.check_space(space, base)
    configurations = spaces.sample_configurations(space, args.samples, seed=base.train.seed)
    if args.samples > 1 and not configurations:
        raise UserError(f"--samples {args.samples}: the space has nothing random to draw (only fixed values and grids), "
                        "so every sample would be the same trial; for replicates use --seeds N")
    distinct = [json.loads(c) for c in dict.fromkeys(json.dumps(c, sort_keys=True) for c in configurations)]
    if len(distinct) < len(configurations):
        print(f"note: {len(configurations) - len(distinct)} of the {len(configurations)} draws repeated an earlier "
              f"one; {len(distinct)} distinct configurations (the space's random part is small)")
        configurations = distinct
    if args.metric not in spaces.metric_names(base):
        raise UserError(f"--metric: {args.metric!r} is not reported by the trials (choose from "
                        f"{', '.join(spaces.metric_names(base))})")
    if args.settle and (sweeps or configurations or args.seeds > 1 or args.splits > 1 or args.then_seeds
                        or args.scheduler != "fifo"):
        raise UserError("--settle: compares the generators' own configurations on seeds it chooses; drop --sweep, "
                        "--samples, --seeds, --splits, --then-seeds and --scheduler")
    settle_plan = settling.settle_plan(args, gens, base, overrides)
    return {"gens": gens, "sweeps": sweeps, "space": space, "configurations": configurations, "overrides": overrides, "preset": args.preset,
            "settle": settle_plan,
            "samples": args.samples, "seeds": args.seeds, "then_seeds": args.then_seeds or 0, "scheduler": args.scheduler, "metric": args.metric,
            "max_failures": args.max_failures, "cpus": args.cpus_per_trial, "gpus": args.gpus_per_trial,
            "max_evaluations": math.ceil(base.train.steps / base.train.eval_every)}


def load_sweep(args_file: Path) -> dict:
    """The sweep an experiment holds (what --resume reruns)."""
    saved = read_json(args_file)
    if isinstance(saved, dict) and saved.get("launcher") == "submitit":
        raise UserError(f"{args_file}: a settle sweep that jobs/submit.py drives; continue it with: python "
                        f"jobs/submit.py --out {args_file.parent.parent} --experiment {args_file.parent.name} --resume")
    if not isinstance(saved, dict) or not isinstance(saved.get("space"), dict) \
            or not isinstance(saved.get("configurations"), list) \
            or not all(isinstance(c, dict) for c in saved["configurations"]):
        raise UserError(f"{args_file}: not a sweep this version of jobs/tune.py wrote (an older version, or "
                        f"edited); start a new --experiment")
    if saved.get("settle") is not None:
        settling.check_stored_plan(saved, args_file)
    return saved


WHERE_TO_REPORT = {"report"}  # stored with the sweep (a resume writes the same report) but not what it trains


def refuse_a_different_sweep(root: Path, planned: dict, resume: str) -> None:
    """A new sweep into an experiment that holds another would mix their runs (each trial would fail on a
    run directory of another configuration): refused. The same command again is allowed (finished
    trials end at once)."""
    if not (root / TUNE_ARGS).exists():
        return
    saved = load_sweep(root / TUNE_ARGS)
    differ = [key for key in planned if key not in WHERE_TO_REPORT and not settling.same(key, saved.get(key), planned[key])]
    if differ:
        raise UserError(f"--experiment {root}: holds a different sweep ({', '.join(differ)} differ); continue it "
                        f"with: {resume}, or choose another --experiment")


def main() -> int:
    args, extra = parse_args()
    experiment = args.experiment if args.experiment is not None else "default"
    check_folder_name("--experiment", experiment)
    root = Path(args.out) / experiment
    resume = f"python jobs/tune.py --out {args.out} --experiment {experiment} --resume"
    if args.resume:
        settling.refuse_plan_flags_on_resume(args)
        if not (root / TUNE_ARGS).exists():
            raise UserError(f"--resume: no Tune experiment at {root / TUNE_STATE}")
        saved = load_sweep(root / TUNE_ARGS)
        if args.report:
            saved["report"] = args.report
        args.report = saved.get("report")  # the report the sweep was started with (its phases write into it)
    else:
        saved = {**plan(args, extra), "report": str(Path(args.report).resolve()) if args.report else None}
        refuse_a_different_sweep(root, saved, resume)
        from cluster.sweep import disk_check
        disk_check(saved, args.out, args.disk_limit)  # before Ray starts: a refusal costs nothing
    # One driver per experiment: a second (the command typed twice) would run the same trials again beside it.
    created = [p for p in (root, root.parent) if not p.exists()]
    lease = Lease(root / TUNE_LEASE, holder="sweep driver", thing="sweep", flag="--experiment").acquire()
    try:
        from cluster import sweep
        sweep.connect(args.address, saved["cpus"], saved["gpus"])
        return sweep.run(saved, out=args.out, experiment=experiment, resume=resume, resuming=args.resume,
                         report=args.report, readout=AnalysisReadout())
    finally:
        lease.release()
        for folder in created:  # a sweep refused before its first write leaves no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


class AnalysisReadout(settling.SettleReadout):
    """What this command makes of a sweep's results (cluster/sweep.py's Readout): tables, reports and the
    settle rule's looks, from analysis/."""

    def search_done(self, results, root: Path, metric: str, mode: str, report: str | None) -> int:
        return summarise(results, root, metric, mode, report)

    def retraining_done(self, results, saved: dict, out: Path, experiment: str, report: str | None) -> int:
        return summarise_retraining(results, saved, out, experiment, report)


def summarise_retraining(results, saved: dict, out: Path, experiment: str, report: str | None) -> int:
    """Each generator's best configuration beside its default, retrained on the same fresh seeds: the tuned
    and the default comparison (each with its seed-level verdict in the report)."""
    import pandas as pd

    from analysis import stats
    from analysis.runs import find_runs, test_frame
    from analysis.tables import comparison_table, metric_columns, to_markdown, write_table
    errors = [r for r in results if r.error]
    seeds = sorted({t["train.seed"] for t in saved["trials"]})
    print(f"\nretrained the best configuration of each generator and its default on seeds {seeds}: "
          f"{len(results)} trials, {len(errors)} errored")
    default = make_config(saved["preset"], saved["overrides"]).flat()
    chosen = pd.DataFrame([{"generator": gen, "field": field, "default": default[field], "tuned": value}
                           for gen, values in sorted(saved["best"].items())
                           for field, value in sorted(values.items()) if field != "model.generator"])
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
            from analysis.report import build_report
            print(f"report: {build_report([root], f'{report}/{arm}')}")
    compared = stats.arms_compared(tests, metric_columns(pd.concat(tests.values(), ignore_index=True)))
    if not compared.empty:
        few = compared[(compared.runs_a < 2) | (compared.runs_b < 2)]
        for gen in sorted(set(few.generator)):
            print(f"note: {gen}: one finished run in an arm; one seed gives no run-level interval (resume to finish "
                  "its seeds)")
        compared = compared.drop(few.index)
    if not compared.empty:
        print("\ntuned against default, per generator (run level: Welch over the seeds' means; bootstrap over seeds, then images):")
        print(to_markdown(compared))
        if report:
            write_table(compared, Path(report) / "tuned_vs_default")
    return 1 if errors else 0


def summarise(results, root: Path, metric: str, mode: str, report: str | None) -> int:
    """The best configuration per generator, the comparison table, the report; 1 if a trial errored."""
    from analysis.runs import find_runs
    from analysis.tables import comparison_table
    from cluster import tune as tuning
    errors = [r for r in results if r.error]
    print(f"\n{len(results)} trials, {len(errors)} errored; runs in {root}")
    best = tuning.best_trials(results, metric, mode)
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
        from analysis.report import build_report
        print(f"report: {build_report([root], report, metric=ranked_by)}")
    return 1 if errors else 0


if __name__ == "__main__":
    run_main(main)
