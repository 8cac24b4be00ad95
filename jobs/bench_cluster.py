"""Benchmark the launchers: what Ray Tune and submitit cost over a plain run, and one node vs two.

    python jobs/bench_cluster.py                    # tiny preset: a few minutes on 2 cores
    python jobs/bench_cluster.py --preset small     # closer to real work

Measures wall seconds, on this machine, of: one plain `jobs/train.py` run;
the same run as a single Ray Tune trial (local Ray started by the command);
the same run through submitit's local executor; the three generators one
after another (`jobs/train.py --gens all`) against the same trials as a sweep,
`jobs/tune.py --gens all` (1 CPU per trial, each TensorFlow process sized to
it) on a one-node Ray cluster (all CPUs) and on a two-node cluster (the CPUs
split over two raylets on 127.0.0.1).
Overhead = launcher wall time - plain wall time.

    python jobs/bench_cluster.py --packing --gens all --data.image_size 128   # how to pack trials on this node

`--packing` measures, per generator, trials per hour when the node's CPUs
run one trial with all of them (`--cpus-per-trial <all>`) against one trial
per CPU side by side (`--cpus-per-trial 1`), from the steady-state intervals
of each run's timings.csv (the first, which includes tracing, left out), and
says which packing finishes a sweep sooner.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gan.cli import generator_list, run_main
from gan.contract import TIMINGS_CSV
from gan.errors import UserError

JOBS = Path(__file__).resolve().parent


def wall(cmd: list[str], env: dict | None = None) -> float:
    merged = {**os.environ, **(env or {})}
    merged = {k: v for k, v in merged.items() if v is not None}  # None: unset (e.g. RAY_ADDRESS)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=merged)
    if done.returncode:
        sys.exit(f"error: {' '.join(cmd[:3])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def comparison_on_cluster(nodes: int, cpus: int, preset: str, out: str) -> float:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every node on 127.0.0.1
    from ray.cluster_utils import Cluster
    per_node = cpus // nodes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=per_node)
        cluster.wait_for_nodes()
        return wall([sys.executable, str(JOBS / "tune.py"), "--gens", "all", "--preset", preset, "--out", out],
                    env={"RAY_ADDRESS": cluster.address})
    finally:
        cluster.shutdown()


def steady_seconds_per_step(run: Path) -> float:
    """Training seconds per step over a run's intervals after the first (which includes tracing)."""
    import csv
    rows = list(csv.DictReader(open(run / TIMINGS_CSV)))[1:]
    if not rows:
        sys.exit(f"error: {run}: needs at least two evaluation intervals for a steady-state figure")
    return sum(float(r["train_seconds"]) for r in rows) / sum(int(r["steps"]) for r in rows)


def trials_per_hour(seconds_per_step: float, steps: int, side_by_side: int) -> float:
    """Trials of `steps` steps finished per hour with `side_by_side` trials running at once."""
    return side_by_side * 3600.0 / (seconds_per_step * steps)


def packing(gens: list[str], size: int, steps: int, cpus: int, out: str) -> dict:
    """Per generator: trials/hour with one trial on all CPUs against `cpus` trials of 1 CPU side by side."""
    figures = {}
    for gen in gens:
        row = {}
        for label, per_trial, seeds in (("whole_node", cpus, 1), ("one_cpu_each", 1, cpus)):
            experiment = f"{gen}-{label}"
            # The study's nets (cityscapes_cpu) on synthetic scenes; small evaluations, which are not timed.
            wall([sys.executable, str(JOBS / "tune.py"), "--gens", gen, "--seeds", str(seeds), "--preset",
                  "cityscapes_cpu", "--data.image_size", str(size), "--train.steps", str(steps),
                  "--train.eval_every", str(steps // 4), "--eval.train_subset", "4", "--data.n_val", "4",
                  "--data.n_test", "4", "--cpus-per-trial", str(per_trial), "--out", out, "--experiment",
                  experiment], env={"RAY_ADDRESS": None})
            runs = [p for p in (Path(out) / experiment).iterdir() if (p / TIMINGS_CSV).exists()]
            per_step = sum(steady_seconds_per_step(r) for r in runs) / len(runs)
            row[f"{label}_s_per_step"] = round(per_step, 4)
            row[f"{label}_trials_per_hour_at_{steps}_steps"] = round(trials_per_hour(per_step, steps, seeds), 2)
        row["choose"] = max(("whole_node", "one_cpu_each"),
                            key=lambda k: row[f"{k}_trials_per_hour_at_{steps}_steps"])
        figures[gen] = row
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--json", default=None)
    parser.add_argument("--packing", action="store_true", help="measure trial packing instead (see above)")
    parser.add_argument("--gens", default=None, help="generators: a comma list or all (default: all for --packing, "
                        "hybrid for the launcher overhead, which takes one)")
    parser.add_argument("--data.image_size", "--size", dest="size", type=int, default=128,
                        help="image size for --packing (default 128)")
    parser.add_argument("--train.steps", "--steps", dest="steps", type=int, default=80,
                        help="steps per trial for --packing (default 80)")
    args = parser.parse_args()
    cpus = os.cpu_count() or 2
    gens = generator_list(args.gens or ("all" if args.packing else "hybrid"))
    if args.packing:
        with tempfile.TemporaryDirectory() as tmp:
            figures = packing(gens, args.size, args.steps, cpus, tmp)
        print(f"\ntrial packing on {cpus} CPUs, {args.size} px, steady state (tracing interval left out)\n")
        print("| generator | s/step, 1 trial x all CPUs | s/step, 1 CPU each | trials/hour whole node | "
              "trials/hour 1 CPU each | sooner |\n|---|---|---|---|---|---|")
        for gen, row in figures.items():
            values = list(row.values())
            print(f"| {gen} | {values[0]} | {values[2]} | {values[1]} | {values[3]} | {row['choose']} |")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return 0
    if len(gens) != 1:
        raise UserError("--gens: the launcher overhead is measured on one generator")
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--preset", args.preset, "--gens", gens[0]]
        figures = {
            "plain_train_s": wall([sys.executable, str(JOBS / "train.py"), *common,
                                   "--out", f"{tmp}/plain"]),
            "tune_one_trial_s": wall([sys.executable, str(JOBS / "tune.py"), *common,
                                      "--out", f"{tmp}/tune"], env={"RAY_ADDRESS": None}),
            "submitit_local_s": wall([sys.executable, str(JOBS / "submit.py"), *common,
                                      "--cluster", "local", "--wait", "--out", f"{tmp}/submitit",
                                      "--logs", f"{tmp}/logs"]),
            # The same three trials one after another (one process, one generator at a time) ...
            "compare3_sequential_s": wall([sys.executable, str(JOBS / "train.py"), "--gens", "all", "--preset",
                                           args.preset, "--out", f"{tmp}/sequential"]),
            # ... and side by side as a sweep (each trial sized to 1 CPU, so they share the node).
            "compare3_one_node_s": comparison_on_cluster(1, cpus, args.preset, f"{tmp}/one"),
            "compare3_two_nodes_s": comparison_on_cluster(2, cpus, args.preset, f"{tmp}/two"),
        }
    figures["tune_overhead_s"] = figures["tune_one_trial_s"] - figures["plain_train_s"]
    figures["submitit_overhead_s"] = figures["submitit_local_s"] - figures["plain_train_s"]
    print(f"\nlaunchers on {cpus} CPUs, preset {args.preset}, generator {gens[0]} (wall seconds)\n")
    print("| run | seconds | overhead over plain |\n|---|---|---|")
    print(f"| plain jobs/train.py | {figures['plain_train_s']:.1f} | - |")
    print(f"| one Ray Tune trial (local Ray) | {figures['tune_one_trial_s']:.1f} | {figures['tune_overhead_s']:+.1f} |")
    print(f"| submitit local executor | {figures['submitit_local_s']:.1f} | {figures['submitit_overhead_s']:+.1f} |")
    print(f"| three generators one after another (jobs/train.py --gens all) | "
          f"{figures['compare3_sequential_s']:.1f} | |")
    print(f"| three generators as a sweep, 1 Ray node x {cpus} CPUs | {figures['compare3_one_node_s']:.1f} | |")
    print(f"| three generators, 2 Ray nodes x {cpus // 2} CPUs | {figures['compare3_two_nodes_s']:.1f} | |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
