"""Compare the generators, and sweep hyper-parameters and augmentations, with Ray Tune.

    python jobs/tune.py --gens all --preset small                 # the three generators in parallel
    python jobs/tune.py --gens all --seeds 3                      # three training seeds per generator
    python jobs/tune.py --gens unet,hybrid --sweep hparams --samples 8 --scheduler asha
    python jobs/tune.py --gens all --sweep aug --space my_space.json --address ray://head:10001
    python jobs/tune.py --experiment sweep1 --resume              # after the driver died or Ctrl-C
    python jobs/tune.py --gens all --sweep hparams,aug --samples 8 --scheduler asha \
        --metric val_fcn_iou --then-seeds 3                       # equal tuning budget, then fresh seeds
    python jobs/tune.py --config jobs/configs/study.py            # an experiment file (flags still override)

Every trial writes the same run directory as jobs/train.py under <out>/<experiment>/<run_name>; Tune's
own state is in <out>/<experiment>/_tune. The trials are the sweep plan's (cluster/sweep_plan.py: the
same list jobs/submit.py and slurm/train_all.sh run), every value validated for every generator before
Ray starts. Connects to --address or $RAY_ADDRESS, else starts a private Ray instance on this machine
(never one that another job started). Ends with the best configuration per generator and the table.

With --then-seeds N the search is followed by a retraining phase: each generator's best configuration
(selected on validation) and its default, on fresh seeds 1..N, into <experiment>-tuned/ and
<experiment>-default/, whose reports give the seed-level tuned and default verdicts (evidence on test).
--resume continues either phase, also between them.

Exit codes: 0 every trial finished, 1 some trial errored, 2 bad input, 75 interrupted (Ctrl-C, TERM):
the unfinished trials' runs are marked preempted; `--resume` continues them.
"""

import argparse
from pathlib import Path

from cluster.sweep_plan import SweepPlan, add_plan_flags, refuse_plan_flags_on_resume
from gan.cli import add_common_flags, add_config_flag, add_gens_flag, parse_with_config, run_main
from gan.dotted import check_folder_name
from gan.contract import TUNE_ARGS, TUNE_LEASE, TUNE_STATE
from gan.errors import UserError
from gan.lease import Lease
from jobs import settling


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flag(parser)
    add_gens_flag(parser)
    add_plan_flags(parser)
    g = parser.add_argument_group("Tune")
    g.add_argument("--scheduler", choices=["fifo", "asha"], default="fifo")
    g.add_argument("--metric", default="val_ssim", help="validation metric for ASHA and 'best' "
                   "(<split>_<metric>, e.g. val_ssim, val_l1; the contract says which way is better)")
    g.add_argument("--then-seeds", type=int, default=None, metavar="N",
                   help="after the search, retrain each generator's best configuration (by --metric, on "
                   "validation) and its default on fresh seeds 1..N and compare them on test")
    g.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a "
                   "private local instance)")
    g.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial")
    g.add_argument("--cpus-per-trial", type=float, default=1,
                   help="CPUs per trial (default 1: trials side by side). Measured on 2 cores at 128 px "
                   "(jobs/bench_cluster.py --packing): 1 CPU each finishes a sweep of all three generators "
                   "~12%% sooner (ResNet +45%%, hybrid +14%% trials/hour; the U-Net alone prefers the "
                   "whole node, -14%%); give each trial all CPUs when its seconds per 1,000 steps must "
                   "compare generators (the study's execution-time column)")
    g.add_argument("--gpus-per-trial", type=float, default=0)
    add_common_flags(parser)
    return parse_with_config(parser, argv)


def main() -> int:
    args, extra = parse_args()
    experiment = args.experiment if args.experiment is not None else "default"
    check_folder_name("--experiment", experiment)
    root = Path(args.out) / experiment
    resume = f"python jobs/tune.py --out {args.out} --experiment {experiment} --resume"
    if args.resume:
        refuse_plan_flags_on_resume(args)
        if not (root / TUNE_ARGS).exists():
            raise UserError(f"--resume: no Tune experiment at {root / TUNE_STATE}")
        plan = SweepPlan.load(root / TUNE_ARGS, settling.check_stored_plan, expect="tune")
        plan.report = str(Path(args.report).resolve()) if args.report else plan.report  # the phases write into it
    else:
        plan = SweepPlan.from_flags(args, extra, launcher="tune", settle=settling.settle_plan)
        plan.refuse_a_different(root, resume, settling.check_stored_plan)
        from cluster.sweep import disk_check
        disk_check(plan, args.out, args.disk_limit)  # before Ray starts: a refusal costs nothing
    # One driver per experiment: a second (the command typed twice) would run the same trials again beside it.
    created = [p for p in (root, root.parent) if not p.exists()]
    lease = Lease(root / TUNE_LEASE, holder="sweep driver", thing="sweep", flag="--experiment").acquire()
    try:
        from analysis.sweeps import SweepReadout  # here, not at the top: a refused sweep says so at once
        from cluster import sweep
        sweep.connect(args.address, plan.cpus, plan.gpus)
        return sweep.run(plan, out=args.out, experiment=experiment, resume=resume, resuming=args.resume,
                         readout=SweepReadout())
    finally:
        lease.release()
        for folder in created:  # a sweep refused before its first write leaves no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


if __name__ == "__main__":
    run_main(main)
