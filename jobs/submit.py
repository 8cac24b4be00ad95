"""Submit the generator comparison (or any grid of configs) through submitit.

    python jobs/submit.py --gens all --preset paper --partition gpu --gpus-per-trial 1 --time 1440
    python jobs/submit.py --gens unet --cluster local --preset small --wait    # no SLURM: local processes
    python jobs/submit.py --gens all --seeds 3 --partition gpu --gpus-per-trial 1   # three training seeds each

One array job, one task per generator (x each value of --grid KEY=V1,V2, x each
training seed with --seeds N: train.seed 0..N-1), named as Tune names its trials (cluster/plan.py:
'unet-seed2', 'unet-lr_g=0.0001-3f2a6b-seed0'; a generator's own setting goes to that generator's runs);
each task writes the same run directory as jobs/train.py. Prints the job ids
and where logs and runs go; --wait blocks and prints the final states.

    python jobs/submit.py --gens all --settle --experiment settle --partition gpu --gpus-per-trial 1 \
        --eval.segmenter runs/judge/segmenter      # seeds in rounds until every comparison is decided
    python jobs/submit.py --experiment settle --resume --partition gpu --gpus-per-trial 1

With --settle the command is the settle rule's driver (as `jobs/tune.py --settle` is under Ray; the same
flags, plan and verdict, jobs/settling.py): it stores the plan in <out>/<experiment>/_tune_args.json,
submits each round's seeds as one array, waits, looks, and ends with the verdict (settle.csv). Keep it
running where it may wait for hours (a login node's tmux, or a small CPU job of its own); stopped, the
round's jobs are cancelled (on SLURM each checkpoints) and --resume continues, reusing every finished run.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from cluster.plan import grid_trials, run_name
from gan.cli import (add_common_flags, add_gens_flag, config_from_args, generator_list, parse_overrides,
                     refuse_other_generators_settings, run_main)
from gan.config import check_folder_name, make_config
from gan.contract import TUNE_ARGS, TUNE_LEASE
from gan.errors import UserError
from gan.files import write_json
from gan.lease import Lease
import settling  # jobs/settling.py: the settle rule's flags, plan and look, shared by both launchers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gens_flag(parser)
    parser.add_argument("--grid", action="append", default=[], help="KEY=V1,V2: also sweep this dotted field")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per configuration (train.seed 0..N-1)")
    parser.add_argument("--cluster", default=None, help="slurm, local or debug (default: slurm if available)")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--gpus-per-trial", dest="gpus", type=int, default=0,
                        help="GPUs per task, one run each (the trainer mirrors over them)")
    parser.add_argument("--cpus-per-trial", dest="cpus", type=int, default=4, help="CPUs per task (default 4)")
    # The older spellings, kept for scripts that have them (jobs/tune.py's names are the suite's).
    parser.add_argument("--gpus", dest="gpus", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--cpus", dest="cpus", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--mem", type=int, default=16, help="GB of memory per task")
    parser.add_argument("--time", type=int, default=24 * 60, help="minutes per task")
    parser.add_argument("--parallel", type=int, default=16, help="array tasks running at once")
    parser.add_argument("--logs", default="submitit_logs", help="submitit folder (logs, pickles)")
    parser.add_argument("--wait", action="store_true", help="wait for the jobs and print their results")
    settling.add_settle_flags(parser)
    parser.add_argument("--resume", action="store_true",
                        help="with the settle rule: continue the --experiment's settle sweep (its stored plan)")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="with the settle rule: at the end, write the comparison report here")
    parser.add_argument("--disk-limit", type=float, default=None, metavar="GB",
                        help="with the settle rule: refuse a plan whose checkpoints could pass this many GB (default: "
                        "the free space where the runs go); the estimate is printed before the first round")
    add_common_flags(parser)
    args, extra = parser.parse_known_args()
    if args.settle or args.resume:
        return settle(args, extra)
    if args.vary_split:
        raise UserError("--vary-split: goes with --settle")
    if args.report:
        raise UserError("--report: goes with --settle (for an array's runs: python jobs/report.py <out>/<experiment>)")
    gens = generator_list(args.gens)
    refuse_other_generators_settings(parse_overrides(extra), gens)
    grid = []
    for item in args.grid:
        if "=" not in item:
            raise UserError(f"--grid {item}: expected KEY=V1,V2")
        key, values = item.split("=", 1)
        grid.append((key, values.split(",")))
    if args.seeds > 1 and "--train.seed" in extra:
        raise UserError("--seeds: sets train.seed 0..N-1 itself; drop the other train.seed")
    # The launch plan names the runs as Tune and the sbatch array do (cluster/plan.py).
    configs = [config_from_args(args, extra, **values, run_name=run_name(values))
               for values in grid_trials(gens, grid, args.seeds)]

    from cluster.submitit_jobs import submit_grid, wait_for
    executor = executor_of(args)
    jobs = submit_grid(executor, configs, str(Path(args.out).resolve()))
    for job, cfg in zip(jobs, configs):
        print(f"job {job.job_id}: {cfg.name} -> {Path(args.out) / cfg.experiment / cfg.name}")
    print(f"logs in {Path(args.logs).resolve()}")
    if not args.wait:
        return 0
    return 1 if wait_for(jobs) else 0


def executor_of(args: argparse.Namespace):
    """The submitit executor the resource flags ask for (a task no SLURM node can hold refused first)."""
    from cluster.submitit_jobs import make_executor, refuse_what_no_node_meets
    if args.cluster in (None, "slurm"):
        refuse_what_no_node_meets(args.partition, args.cpus, args.gpus, args.mem)
    return make_executor(args.logs, cluster=args.cluster, partition=args.partition, gpus=args.gpus,
                         cpus=args.cpus, mem_gb=args.mem, timeout_min=args.time, account=args.account,
                         array_parallelism=args.parallel)


def settle(args: argparse.Namespace, extra: list[str]) -> int:
    """The settle rule's driver: the plan stored (or, with --resume, read) in the experiment, then its rounds."""
    from cluster.submitit_jobs import settle_rounds
    experiment = args.experiment if args.experiment is not None else "default"
    check_folder_name("--experiment", experiment)
    root = Path(args.out) / experiment
    args_file = root / TUNE_ARGS
    again = "python jobs/submit.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])  # the same command continues
    if args.resume:
        settling.refuse_plan_flags_on_resume(args)
        if not args_file.exists():
            raise UserError(f"--resume: no settle sweep at {args_file}")
        saved = settling.load_settle_sweep(args_file)
        saved["report"] = str(Path(args.report).resolve()) if args.report else saved.get("report")
    else:
        if args.grid or args.seeds > 1 or "--train.seed" in extra:
            raise UserError("--settle: compares the generators' own configurations on seeds it chooses; drop --grid, "
                            "--seeds and --train.seed")
        overrides = parse_overrides(extra)
        for flag, key in ((args.data, "data.source"), (args.data_format, "data.format")):
            if flag is not None:
                overrides[key] = flag
        gens = generator_list(args.gens)
        refuse_other_generators_settings(overrides, gens)
        base = make_config(args.preset, overrides)
        saved = {"launcher": "submitit", "gens": gens, "preset": args.preset, "overrides": overrides,
                 "settle": settling.settle_plan(args, gens, base, overrides),
                 "report": str(Path(args.report).resolve()) if args.report else None}
        if args_file.exists():  # the same command again continues; another plan would mix their runs
            stored = settling.load_settle_sweep(args_file)
            differ = [k for k in settling.TRAINED_BY if not settling.same(k, stored.get(k), saved[k])]
            if differ:
                raise UserError(f"--experiment {root}: holds a different sweep ({', '.join(differ)} differ); continue "
                                f"it with --resume, or choose another --experiment")
    from cluster.sweep import disk_check
    disk_check({**saved, "configurations": []}, args.out, args.disk_limit)  # the generators' own configurations
    executor = executor_of(args)
    # One driver per experiment (the Ray driver's lease too): a second would submit the same seeds again.
    lease = Lease(root / TUNE_LEASE, holder="sweep driver", thing="sweep", flag="--experiment").acquire()
    try:
        if not args_file.exists():
            write_json(args_file, saved)  # the plan is stored before the first round: pre-registered
        return settle_rounds(saved, executor, out=str(Path(args.out).resolve()), experiment=experiment,
                             resume=again, report=saved["report"], readout=settling.SettleReadout())
    finally:
        lease.release()


if __name__ == "__main__":
    run_main(main)
