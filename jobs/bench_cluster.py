"""Benchmark the launchers: what Ray Tune and submitit cost over a plain run, and one node vs two.

    python jobs/bench_cluster.py                    # tiny preset: a few minutes on 2 cores
    python jobs/bench_cluster.py --preset small     # closer to real work

Measures wall seconds, on this machine, of: one plain `jobs/train.py` run;
the same run as a single Ray Tune trial (local Ray started by the command);
the same run through submitit's local executor; the three generators one
after another (`jobs/train.py --gen all`) against the same trials as a sweep,
`jobs/tune.py --gens all` (1 CPU per trial, each TensorFlow process sized to
it) on a one-node Ray cluster (all CPUs) and on a two-node cluster (the CPUs
split over two raylets on 127.0.0.1).
Overhead = launcher wall time - plain wall time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--gen", default="hybrid")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cpus = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--preset", args.preset]
        figures = {
            "plain_train_s": wall([sys.executable, str(JOBS / "train.py"), "--gen", args.gen, *common,
                                   "--out", f"{tmp}/plain"]),
            "tune_one_trial_s": wall([sys.executable, str(JOBS / "tune.py"), "--gens", args.gen, *common,
                                      "--out", f"{tmp}/tune"], env={"RAY_ADDRESS": None}),
            "submitit_local_s": wall([sys.executable, str(JOBS / "submit.py"), "--gens", args.gen, *common,
                                      "--cluster", "local", "--wait", "--out", f"{tmp}/submitit",
                                      "--logs", f"{tmp}/logs"]),
            # The same three trials one after another (one process, one generator at a time) ...
            "compare3_sequential_s": wall([sys.executable, str(JOBS / "train.py"), "--gen", "all", *common,
                                           "--out", f"{tmp}/sequential"]),
            # ... and side by side as a sweep (each trial sized to 1 CPU, so they share the node).
            "compare3_one_node_s": comparison_on_cluster(1, cpus, args.preset, f"{tmp}/one"),
            "compare3_two_nodes_s": comparison_on_cluster(2, cpus, args.preset, f"{tmp}/two"),
        }
    figures["tune_overhead_s"] = figures["tune_one_trial_s"] - figures["plain_train_s"]
    figures["submitit_overhead_s"] = figures["submitit_local_s"] - figures["plain_train_s"]
    print(f"\nlaunchers on {cpus} CPUs, preset {args.preset}, generator {args.gen} (wall seconds)\n")
    print("| run | seconds | overhead over plain |\n|---|---|---|")
    print(f"| plain jobs/train.py | {figures['plain_train_s']:.1f} | - |")
    print(f"| one Ray Tune trial (local Ray) | {figures['tune_one_trial_s']:.1f} | {figures['tune_overhead_s']:+.1f} |")
    print(f"| submitit local executor | {figures['submitit_local_s']:.1f} | {figures['submitit_overhead_s']:+.1f} |")
    print(f"| three generators one after another (jobs/train.py --gen all) | "
          f"{figures['compare3_sequential_s']:.1f} | |")
    print(f"| three generators as a sweep, 1 Ray node x {cpus} CPUs | {figures['compare3_one_node_s']:.1f} | |")
    print(f"| three generators, 2 Ray nodes x {cpus // 2} CPUs | {figures['compare3_two_nodes_s']:.1f} | |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
