"""Run names, the settle rule's rounds, and the sbatch array's command line.

Every launcher runs the trials of one `SweepPlan` (cluster/sweep_plan.py): Ray Tune's trials
(cluster/tune.py), the submitit array (jobs/submit.py) and the plain sbatch array (slurm/train_all.sh,
through this module's command line) all name a run by `run_name` of its dotted values and lay it out by
the contract:

    unet                               a plain comparison
    unet-seed2                         a training seed of --seeds
    unet-split1-seed0                  a data split crossed with the seeds (--splits)
    unet-lr_g=0.0001-mirror=False-3f2a  swept values, a short hash of them (then -seed<k>)

    python -m cluster.plan tasks --seeds 3              # how many array tasks: generators x seeds
    python -m cluster.plan task 4 --seeds 3 --last 8    # task 4 of an array ending at 8: "resnet 1 resnet-seed1"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from typing import Any

from cluster.sweep_plan import SweepPlan
from gan import models
from gan.errors import EXIT_USAGE, UserError

NAMING_KEYS = ("model.generator", "train.seed", "data.split_seed")  # named by their place, not as key=value


def run_name(values: dict[str, Any]) -> str:
    """The run's folder name from its dotted values: 'unet' for a plain comparison; 'unet-lr_g=0.00012-
    mirror=False-3f2a' with swept values; a training seed ends the name ('unet-seed2'), after the data split
    when one is drawn per run ('unet-split1-seed0')."""
    gen = values.get("model.generator", "unet")
    seed = f"-seed{values['train.seed']}" if "train.seed" in values else ""
    if "data.split_seed" in values:
        seed = f"-split{values['data.split_seed']}{seed}"
    rest = {k: v for k, v in sorted(values.items()) if k not in NAMING_KEYS}
    if not rest:
        return gen + seed
    parts = [f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
             for k, v in rest.items()]
    digest = hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:6]
    name = gen
    for part in parts:  # whole key=value parts up to 80 characters, never one cut in its middle; the digest
        if len(name) + 1 + len(part) > 80:  # names every value
            break
        name += f"-{part}"
    return name + f"-{digest}" + seed


def settle_round(wanted: dict[str, list[int]], have: dict[str, set[int]], varied: bool) -> list[dict[str, Any]]:
    """The runs the settle rule's next look still needs, as dotted values in a stable order: each generator's
    wanted training seeds it has no finished run of (with the varied design, seed k also draws split k)."""
    return [{"model.generator": g, "train.seed": k, **({"data.split_seed": k} if varied else {})}
            for g, seeds in sorted(wanted.items()) for k in seeds if k not in have.get(g, set())]


def say_round(wanted: dict[str, list[int]], todo: list[dict[str, Any]]) -> str:
    """The settle round about to start, in one line (every launcher says it alike)."""
    return (f"settle: the next look needs {', '.join(f'{g} seeds {s[0]}..{s[-1]}' for g, s in sorted(wanted.items()))}; "
            f"training {len(todo)} run(s): {', '.join(run_name(t) for t in todo)}")


def array_task(task: int, seeds: int) -> dict[str, Any]:
    """The dotted values of task `task` of the plain sbatch array (one task per registered generator x
    seed). Any subset of the tasks may run (--array=2 redoes one); a task beyond them is refused."""
    trials = SweepPlan.for_array(seeds).trials()
    if not 0 <= task < len(trials):
        gens = models.names()
        raise UserError(f"task {task}: {len(gens)} generators ({' '.join(gens)}) x {seeds} seed(s) are tasks "
                        f"0-{len(trials) - 1} (submit with: bash slurm/train_all.sh, which sets the array)")
    return trials[task]


# `scontrol show job` fields -> the sbatch option that asks for the same (a job resubmitted as an array keeps
# what its first submission asked for).
JOB_OPTIONS = {"Partition": "--partition", "Account": "--account", "QOS": "--qos", "TimeLimit": "--time",
               "NumCPUs": None, "CPUs/Task": "--cpus-per-task", "MinMemoryNode": "--mem", "MinMemoryCPU": "--mem-per-cpu",
               "TresPerNode": "--gres", "JobName": "--job-name", "StdOut": "--output", "Requeue": None}


def job_options(job_id: str, show: str | None = None) -> list[str]:
    """sbatch options asking for job `job_id`'s resources and output (from `scontrol show job -o`), so the
    job resubmits itself as an array with what it was given: partition, account, QOS, time, CPUs per task,
    memory, generic resources and the output file's pattern."""
    if show is None:
        done = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
        if done.returncode:
            raise UserError(f"scontrol show job {job_id}: {done.stderr.strip() or 'failed'}")
        show = done.stdout
    fields = dict(item.split("=", 1) for item in show.split() if "=" in item)
    options = []
    for key, flag in JOB_OPTIONS.items():
        value = fields.get(key, "")
        if not flag or value in ("", "(null)", "N/A", "UNLIMITED"):
            continue
        if key == "TresPerNode":
            value = value.replace("gres/", "").replace("gres:", "")
        if key == "StdOut":  # back to a pattern: in the file's name, this job's id and non-array index -> %A, %a
            folder, _, name = value.rpartition("/")
            name = re.sub(rf"(?<!\d){job_id}(?!\d)", "%A", name.replace(f"{job_id}_4294967294", "%A_%a"))
            value = f"{folder}/{name}" if folder else name
        if key in ("MinMemoryNode", "MinMemoryCPU") and value[-1:].isdigit():
            value += "M"
        options.append(f"{flag}={value}")
    if not fields.get("TresPerNode"):  # asked for none: say so, or the script's own #SBATCH --gres applies
        options.append("--gres=none")
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    tasks = sub.add_parser("tasks", help="how many tasks the sbatch array needs")
    task = sub.add_parser("task", help="generator, seed and run name of one array task")
    task.add_argument("index", type=int)
    options = sub.add_parser("job-options", help="sbatch options asking for a job's resources")
    options.add_argument("job")
    for p in (tasks, task):
        p.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        if args.what == "tasks":
            print(len(SweepPlan.for_array(args.seeds).trials()))
        elif args.what == "job-options":
            print("\n".join(job_options(args.job)))  # one per line: a path may hold spaces
        else:
            values = array_task(args.index, args.seeds)
            print(values["model.generator"], values.get("train.seed", 0), run_name(values))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
