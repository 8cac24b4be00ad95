"""Submit the generator comparison (or any sweep plan) through submitit: SLURM, or local processes.

    python jobs/submit.py --gens all --preset paper --partition gpu --gpus-per-trial 1 --time 1440
    python jobs/submit.py --gens unet --cluster local --preset small --wait    # no SLURM: local processes
    python jobs/submit.py --gens all --seeds 3 --partition gpu --gpus-per-trial 1   # three training seeds each
    python jobs/submit.py --gens all --grid optim.lr_g=1e-4,2e-4 --sweep aug --samples 4 --partition gpu

One array job over the sweep plan's trials (cluster/sweep_plan.py: the same list jobs/tune.py runs on Ray
and slurm/train_all.sh as a plain array), named as Tune names them ('unet-seed2',
'unet-lr_g=0.0001-3f2a6b-seed0'); each task writes the same run directory as jobs/train.py. Prints the
job ids and where logs and runs go; --wait blocks and prints the final states.

    python jobs/submit.py --gens all --settle --experiment settle --partition gpu --gpus-per-trial 1 \
        --eval.segmenter runs/judge/segmenter      # seeds in rounds until every comparison is decided
    python jobs/submit.py --experiment settle --resume --partition gpu --gpus-per-trial 1
    python jobs/submit.py --config jobs/configs/study.py --partition gpu --gpus-per-trial 1

With --settle the command is the settle rule's driver (as `jobs/tune.py --settle` is under Ray; the same
flags, plan and verdict): it stores the plan in <out>/<experiment>/_tune_args.json, submits each round's
seeds as one array, waits, looks, and ends with the verdict (settle.csv). Keep it running where it may
wait for hours (a login node's tmux, or a small CPU job of its own); stopped, the round's jobs are
cancelled (on SLURM each checkpoints) and --resume continues, reusing every finished run.
"""

import argparse
import shlex
import sys
from pathlib import Path

from cluster.plan import run_name
from cluster.sweep_plan import SweepPlan, add_plan_flags, refuse_plan_flags_on_resume
from gan.cli import add_common_flags, add_config_flag, add_gens_flag, parse_with_config, run_main
from gan.config import make_config
from gan.dotted import check_folder_name
from gan.contract import TUNE_ARGS, TUNE_LEASE
from gan.errors import UserError
from gan.files import write_json
from gan.lease import Lease
from jobs import settling


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flag(parser)
    add_gens_flag(parser)
    add_plan_flags(parser)
    g = parser.add_argument_group("submitit")
    g.add_argument("--cluster", default=None, help="slurm, local or debug (default: slurm if available)")
    g.add_argument("--partition", default=None)
    g.add_argument("--account", default=None)
    g.add_argument("--gpus-per-trial", dest="gpus", type=int, default=0,
                   help="GPUs per task, one run each (the trainer mirrors over them)")
    g.add_argument("--cpus-per-trial", dest="cpus", type=int, default=4, help="CPUs per task (default 4)")
    # The older spellings, kept for scripts that have them (jobs/tune.py's names are the suite's).
    g.add_argument("--gpus", dest="gpus", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    g.add_argument("--cpus", dest="cpus", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    g.add_argument("--mem", type=int, default=16, help="GB of memory per task")
    g.add_argument("--time", type=int, default=24 * 60, help="minutes per task")
    g.add_argument("--parallel", type=int, default=16, help="array tasks running at once")
    g.add_argument("--logs", default="submitit_logs", help="submitit folder (logs, pickles)")
    g.add_argument("--wait", action="store_true", help="wait for the jobs and print their results")
    add_common_flags(parser)
    return parse_with_config(parser, argv)


def main() -> int:
    args, extra = parse_args()
    if args.settle or args.resume:
        return settle(args, extra)
    if args.vary_split or args.report:
        raise UserError(f"--{'vary-split' if args.vary_split else 'report'}: goes with --settle (for an array's "
                        "runs: python jobs/report.py <out>/<experiment>)")
    plan = SweepPlan.from_flags(args, extra, launcher="submitit", settle=settling.settle_plan)
    experiment = args.experiment if args.experiment is not None else "default"
    configs = [make_config(plan.preset, {**plan.overrides, **values, "run_name": run_name(values),
                                         "experiment": experiment}) for values in plan.trials()]
    from cluster.submitit_jobs import submit_grid, wait_for
    jobs = submit_grid(executor_of(args), configs, str(Path(args.out).resolve()))
    for job, cfg in zip(jobs, configs):
        print(f"job {job.job_id}: {cfg.name} -> {Path(args.out) / cfg.experiment / cfg.name}")
    print(f"logs in {Path(args.logs).resolve()}")
    return (1 if wait_for(jobs) else 0) if args.wait else 0


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
    from cluster.sweep import disk_check
    experiment = args.experiment if args.experiment is not None else "default"
    check_folder_name("--experiment", experiment)
    root = Path(args.out) / experiment
    again = "python jobs/submit.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])  # the same command continues
    if args.resume:
        refuse_plan_flags_on_resume(args)
        if not (root / TUNE_ARGS).exists():
            raise UserError(f"--resume: no settle sweep at {root / TUNE_ARGS}")
        plan = SweepPlan.load(root / TUNE_ARGS, settling.check_stored_plan, expect="submitit")
        plan.report = str(Path(args.report).resolve()) if args.report else plan.report
    else:
        plan = SweepPlan.from_flags(args, extra, launcher="submitit", settle=settling.settle_plan)
        plan.refuse_a_different(root, "--resume", settling.check_stored_plan)  # the same command again continues
    disk_check(plan, args.out, args.disk_limit)
    executor = executor_of(args)
    # One driver per experiment (the Ray driver's lease too): a second would submit the same seeds again.
    from analysis.sweeps import SweepReadout  # here, not at the top: a refused sweep says so at once
    lease = Lease(root / TUNE_LEASE, holder="sweep driver", thing="sweep", flag="--experiment").acquire()
    try:
        if not (root / TUNE_ARGS).exists():
            write_json(root / TUNE_ARGS, plan.to_dict())  # the plan is stored before the first round: pre-registered
        return settle_rounds(plan, executor, out=str(Path(args.out).resolve()), experiment=experiment,
                             resume=again, readout=SweepReadout())
    finally:
        lease.release()


if __name__ == "__main__":
    run_main(main)
