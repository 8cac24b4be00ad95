"""Submit the generator comparison (or any grid of configs) through submitit.

    python jobs/submit.py --gens all --preset paper --partition gpu --gpus-per-trial 1 --time 1440
    python jobs/submit.py --gens unet --cluster local --preset small --wait    # no SLURM: local processes
    python jobs/submit.py --gens all --seeds 3 --partition gpu --gpus-per-trial 1   # three training seeds each

One array job, one task per generator (x each value of --grid KEY=V1,V2, x each
training seed with --seeds N: train.seed 0..N-1), named as Tune names its trials (cluster/plan.py:
'unet-seed2', 'unet-lr_g=0.0001-3f2a6b-seed0'; a generator's own setting goes to that generator's runs);
each task writes the same run directory as jobs/train.py. Prints the job ids
and where logs and runs go; --wait blocks and prints the final states.
"""

import argparse
from pathlib import Path

from cluster.plan import grid_trials, run_name
from gan.cli import add_common_flags, add_gens_flag, config_from_args, generator_list, run_main
from gan.errors import UserError


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
    add_common_flags(parser)
    args, extra = parser.parse_known_args()
    gens = generator_list(args.gens)
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

    from cluster.submitit_jobs import make_executor, refuse_what_no_node_meets, submit_grid
    if args.cluster in (None, "slurm"):
        refuse_what_no_node_meets(args.partition, args.cpus, args.gpus, args.mem)
    executor = make_executor(args.logs, cluster=args.cluster, partition=args.partition, gpus=args.gpus,
                             cpus=args.cpus, mem_gb=args.mem, timeout_min=args.time, account=args.account,
                             array_parallelism=args.parallel)
    jobs = submit_grid(executor, configs, str(Path(args.out).resolve()))
    for job, cfg in zip(jobs, configs):
        print(f"job {job.job_id}: {cfg.name} -> {Path(args.out) / cfg.experiment / cfg.name}")
    print(f"logs in {Path(args.logs).resolve()}")
    if not args.wait:
        return 0
    failed = 0
    for job in jobs:
        try:
            result = job.result()
            print(f"job {job.job_id}: {result['state']} at step {result['step']} ({result['run']})")
        except Exception as e:  # report every job, then fail: one bad task must not hide the others
            failed += 1
            print(f"job {job.job_id}: failed: {str(e).strip().splitlines()[-1]}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
