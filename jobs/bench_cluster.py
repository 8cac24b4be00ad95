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

    python jobs/bench_cluster.py --trials 120           # the driver's cost per trial at a hundred-odd trials
    python jobs/bench_cluster.py --runs 100,1000        # the report's time and memory at that many runs

`--trials N` runs a sweep of N one-step trials (tiny preset) on a two-node
Ray cluster on 127.0.0.1 and reports wall seconds per trial against a plain
run's, the driver's peak memory and the head node's (GCS server + raylet)
resident memory at the end. `--runs` copies three finished tiny runs into
N run directories (distinct names and seeds) and times `python -m
analysis.tables` and `jobs/report.py --no-notebook` over them, each in its
own process, with its peak resident memory.
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
from gan import contract
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


def measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one command, from its own rusage (os.wait4)."""
    merged = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=merged)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd[:3])} failed:\n{err[-2000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def many_trials(n: int, cpus: int, out: str) -> dict:
    """N one-step trials on a two-node loopback cluster: seconds per trial, driver and head memory."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster
    plain, _ = measured([sys.executable, str(JOBS / "train.py"), "--gens", "hybrid", "--preset", "tiny",
                         "--train.steps", "1", "--train.eval_every", "1", "--out", f"{out}/plain"])
    space = Path(out) / "space.json"
    space.write_text(json.dumps({"optim.lr_g": {"grid": [1e-4 + i * 1e-7 for i in range(n)]}}))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus // 2, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=cpus - cpus // 2)
        cluster.wait_for_nodes()
        seconds, driver_mb = measured([sys.executable, str(JOBS / "tune.py"), "--gens", "hybrid", "--preset", "tiny",
                                       "--space", str(space), "--train.steps", "1", "--train.eval_every", "1",
                                       "--out", f"{out}/many"], env={"RAY_ADDRESS": cluster.address})
        head = cluster.head_node.all_processes
        head_mb = sum(rss_mb(info.process.pid) for name in ("gcs_server", "raylet") for info in head.get(name, []))
    finally:
        cluster.shutdown()
    return {"trials": n, "sweep_s": seconds, "plain_run_s": plain, "slots": cpus,
            "s_per_trial": seconds / n, "s_per_trial_slot": seconds * cpus / n,
            "driver_overhead_per_trial_s": seconds * cpus / n - plain, "driver_peak_mb": driver_mb,
            "head_rss_mb": head_mb}


def many_runs(counts: list[int], out: str) -> list[dict]:
    """The report over N run directories: copies of three tiny runs, each with its own name and seed."""
    import shutil
    base = Path(out) / "base"
    subprocess.run([sys.executable, str(JOBS / "train.py"), "--gens", "all", "--preset", "tiny", "--out", str(base)],
                   check=True, capture_output=True)
    sources = sorted((base / "default").iterdir())
    rows = []
    for n in counts:
        root = Path(out) / f"runs{n}" / "scale"
        for i in range(n):
            src = sources[i % len(sources)]
            dst = root / f"{src.name}-seed{i}"
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(contract.CHECKPOINTS, contract.TENSORBOARD))
            config = json.loads((dst / contract.CONFIG).read_text())
            config["config"]["train"]["seed"] = i
            config["config"]["run_name"] = dst.name
            (dst / contract.CONFIG).write_text(json.dumps(config))
        tables_s, tables_mb = measured([sys.executable, "-m", "analysis.tables", str(root)])
        report_s, report_mb = measured([sys.executable, str(JOBS / "report.py"), str(root), "--report",
                                        f"{out}/report{n}", "--no-notebook"])
        rows.append({"runs": n, "tables_s": tables_s, "tables_peak_mb": tables_mb, "report_s": report_s,
                     "report_peak_mb": report_mb, "report_dir": f"{out}/report{n}"})
    return rows


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
    parser.add_argument("--trials", type=int, default=0, help="measure a sweep of this many one-step trials")
    parser.add_argument("--runs", default="", help="measure the report over these many run directories (comma list)")
    parser.add_argument("--keep", default=None, help="with --runs: keep the reports in this folder (to look at)")
    args = parser.parse_args()
    cpus = os.cpu_count() or 2
    if args.trials or args.runs:
        figures = {}
        with tempfile.TemporaryDirectory() as tmp:
            work = args.keep or tmp
            if args.trials:
                figures["trials"] = t = many_trials(args.trials, cpus, work)
                print(f"\n{t['trials']} one-step trials on 2 Ray nodes ({cpus} CPUs): {t['sweep_s']:.0f} s, "
                      f"{t['s_per_trial_slot']:.1f} s per trial per CPU slot against {t['plain_run_s']:.1f} s for a "
                      f"plain run ({t['driver_overhead_per_trial_s']:+.1f} s per trial); driver peak "
                      f"{t['driver_peak_mb']:.0f} MB, head node (GCS + raylet) {t['head_rss_mb']:.0f} MB")
            if args.runs:
                figures["runs"] = many_runs([int(n) for n in args.runs.split(",") if n], work)
                print("\n| run directories | analysis.tables s | peak MB | jobs/report.py --no-notebook s | peak MB |")
                print("|---|---|---|---|---|")
                for r in figures["runs"]:
                    print(f"| {r['runs']} | {r['tables_s']:.1f} | {r['tables_peak_mb']:.0f} | {r['report_s']:.1f} | "
                          f"{r['report_peak_mb']:.0f} |")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return 0
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
