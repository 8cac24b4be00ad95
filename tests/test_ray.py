"""Ray Tune end to end on a real two-node Ray cluster on 127.0.0.1 (no other address is contacted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, assert_exact_rows, assert_fast_path
from services import run_tune, tune_cmd
from gan.models import names

pytestmark = [pytest.mark.ray, pytest.mark.slow]

def test_asha_stops_a_trial_early(ray_cluster, tmp_path):
    space = tmp_path / "space.json"
    # Useful learning rates first, then useless ones: when the useless trials reach a rung, the useful
    # ones have set the bar (validation L1, which the step directly minimises), and ASHA stops them.
    space.write_text(json.dumps({"optim.lr_g": {"grid": [1e-3, 2e-4, 1e-7, 1e-8]}}))
    done = run_tune(ray_cluster, tmp_path / "out", "--gens", "hybrid", "--space", str(space),
                    "--scheduler", "asha", "--metric", "val_l1", "--train.steps", "16", "--train.eval_every", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "out" / "default").glob("*/status.json")]
    steps = [s["step"] for s in statuses]
    assert len(steps) == 4
    assert min(steps) < 16 and max(steps) == 16, steps
    # A trial ASHA stopped says so; one that reached the last step scored the test split (ASHA's max_t lies
    # past the last evaluation, so the scheduler does not kill the trainer before its test evaluation).
    for status in statuses:
        expected = ("finished", "") if status["step"] == 16 else ("stopped", "stopped early by the scheduler")
        assert (status["state"], status["message"][:len(expected[1])]) == expected, status
    # Disk: the estimate was said before the sweep; Tune's checkpoints are pointers (no second copy of the
    # weights); a stopped run keeps only its newest checkpoint, a finished one what the config keeps.
    assert "disk: up to " in done.stdout and " checkpoints of <= " in done.stdout
    assert not list((tmp_path / "out" / "default" / "_tune").rglob("ckpt-*"))
    for status_file in (tmp_path / "out" / "default").glob("*/status.json"):
        kept = list((status_file.parent / "checkpoints").glob("ckpt-*.index"))
        state = json.loads(status_file.read_text())["state"]
        assert len(kept) == (1 if state == "stopped" else 2), (status_file.parent.name, state, kept)


def test_every_generator_trains_on_the_same_sampled_configurations():
    """The equal-budget search: the random part is drawn once, and Tune's grid crosses it with the
    generators (Tune's own samplers would draw afresh for every generator)."""
    from ray.tune.search.variant_generator import generate_variants

    from cluster import spaces
    from cluster.tune import TRIAL
    space = spaces.build_space(list(names()), ["hparams", "aug"])
    configurations = spaces.sample_configurations(space, 3, seed=0)
    assert len(configurations) == 3 and configurations == spaces.sample_configurations(space, 3, seed=0)
    assert len({json.dumps(c, sort_keys=True) for c in configurations}) == 3
    assert set(configurations[0]) == set(spaces.HPARAMS) | set(spaces.AUG) | set(spaces.own_space(list(names())))
    lr = configurations[0]["optim.lr_g"]
    assert isinstance(lr, float) and 5e-5 <= lr <= 5e-4
    per_generator: dict[str, list[str]] = {}
    for _, trial in generate_variants(spaces.to_tune(space, configurations, TRIAL)):
        per_generator.setdefault(trial["model.generator"], []).append(json.dumps(trial[TRIAL], sort_keys=True))
    assert set(per_generator) == set(names())
    assert all(sorted(drawn) == sorted(per_generator["unet"]) and len(drawn) == 3 for drawn in per_generator.values())
    # A space of grids only has nothing to draw: --samples repeats the grid, as Tune's num_samples does.
    assert spaces.sample_configurations(spaces.build_space(["unet"], []), 3) == []


def test_asha_compares_a_trial_only_with_its_own_generator():
    """The equal-budget sweep's early stopping: a generator that starts slower keeps its best trial."""
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from cluster.tune import PerGeneratorASHA
    # At the first rung: two U-Net trials, then two ResNet trials that are all below the U-Net's.
    trials = [SimpleNamespace(trial_id=f"t{i}", config={"model.generator": gen})
              for i, gen in enumerate(["unet", "unet", "resnet", "resnet"])]
    scores = [0.30, 0.29, 0.20, 0.19]

    def actions(scheduler):
        scheduler.set_search_properties("val_fcn_iou", "max")
        for trial in trials:
            scheduler.on_trial_add(None, trial)
        return [scheduler.on_trial_result(None, trial, {"training_iteration": 1, "val_fcn_iou": score})
                for trial, score in zip(trials, scores)]

    asha = dict(time_attr="training_iteration", max_t=3, grace_period=1, reduction_factor=2)
    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    # One ASHA over all trials stops every ResNet trial at the first rung; per generator, each
    # generator's first trial sets its own bar.
    assert actions(ASHAScheduler(**asha)) == [go, stop, stop, stop]
    assert actions(PerGeneratorASHA(**asha)) == [go, stop, go, stop]


def test_an_interrupted_sweep_counts_a_trial_that_finished_as_tune_stopped_it_as_finished(monkeypatch):
    """After a Ctrl-C, the count of unfinished trials is the started trials whose runs did not finish plus
    the trials never started. A trainer that finished its run as Tune stopped it (its last report never
    reached Tune) is finished: it was once counted again as 'not done' by Tune's results."""
    from types import SimpleNamespace

    from cluster.tune import CompletedTrials, never_started
    monkeypatch.setattr(CompletedTrials, "started", {"a": ({}, {}, ""), "b": ({}, {}, "")})
    monkeypatch.setattr(CompletedTrials, "ids", {"c"})
    results = [SimpleNamespace(error=None, metrics={"trial_id": "a"}, path="/x/trial_a"),  # started, no last report
               SimpleNamespace(error=None, metrics={}, path="/x/trial_b"),  # started, never reported
               SimpleNamespace(error=None, metrics={"trial_id": "c", "done": True}, path="/x/trial_c"),
               SimpleNamespace(error=None, metrics={"trial_id": "d", "done": True}, path="/x/trial_d"),  # earlier
               SimpleNamespace(error=RuntimeError(), metrics={}, path="/x/trial_e"),
               SimpleNamespace(error=None, metrics={}, path="/x/trial_f"),  # pending when the Ctrl-C came
               SimpleNamespace(error=None, metrics=None, path="/x/trial_g")]
    assert never_started(results) == 2


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return seen


def _wait_rows(runs: list[Path], rows: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all((r / "metrics.csv").exists() and len((r / "metrics.csv").read_text().splitlines()) > rows
               for r in runs):
            return
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    raise AssertionError("trials produced no rows in time")


def test_node_loss_resumes_from_checkpoint(ray_cluster, tmp_path):
    """Kill the node a trial runs on: the trial is retried and continues at its checkpoint."""
    ray_cluster.add_node(num_cpus=1)  # a third node: losing one still leaves a CPU for each trial
    ray_cluster.wait_for_nodes()
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    proc = subprocess.Popen(tune_cmd(tmp_path, "--gens", "unet,hybrid", "--train.steps", "150",
                                     "--train.eval_every", "10", "--max-failures", "3"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    runs = [tmp_path / "default" / g for g in ("unet", "hybrid")]
    _wait_rows(runs, 4, proc)
    # Which worker node hosts a trial? The trial process (status.json's pid) descends from its raylet.
    raylets = {node: node.all_processes["raylet"][0].process.pid for node in ray_cluster.worker_nodes}
    victim = None
    for run in runs:
        chain = _ancestors(json.loads((run / "status.json").read_text())["pid"])
        victim = victim or next((node for node, pid in raylets.items() if pid in chain), None)
    assert victim is not None, "no trial on a worker node"
    step_at_kill = {r.name: json.loads((r / "status.json").read_text())["step"] for r in runs}
    ray_cluster.remove_node(victim)  # two live nodes remain, as the other tests expect (one trial per CPU)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    for run in runs:
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
        assert_exact_rows(run, 150, 10)
    resumed = [int(line.split(" at step ")[1].split("/")[0]) for line in out.splitlines()
               if "resuming" in line and " at step " in line]
    assert resumed and min(resumed) >= 10, (step_at_kill, out[-4000:])


def test_three_generators_survive_a_driver_kill_and_a_ctrl_c_and_resume_to_the_comparison(ray_cluster, tmp_path):
    """`tune.py --gens all` runs the three trials in parallel. The driver is killed (-9) once one trial has
    finished; `--resume` takes up the others and is stopped by Ctrl-C while a trial runs: Tune saves its
    state, the unfinished runs say 'preempted' (not 'running'), one line says how to continue, no comparison
    table. `--resume` again finishes them exactly, without rerunning finished ones, and ends with the
    comparison."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    # 200 steps: the trial the first driver never started must not reach its end between the Ctrl-C and
    # Tune stopping it, even on a loaded host.
    args = ["--gens", "all", "--train.steps", "200", "--train.eval_every", "10", "--experiment", "drv"]
    proc = subprocess.Popen(tune_cmd(tmp_path, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=ROOT)
    runs = {g: tmp_path / "drv" / g for g in names()}

    def finished() -> list[str]:
        return [g for g, r in runs.items() if (r / "status.json").exists()
                and json.loads((r / "status.json").read_text())["state"] == "finished"]
    deadline = time.time() + 600
    done_first: list[str] = []
    while time.time() < deadline and not done_first:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        done_first = finished()
        time.sleep(0.2)
    assert done_first and len(done_first) < 3, done_first
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_mtime = {g: (runs[g] / "summary.json").stat().st_mtime_ns for g in done_first}

    resume = tune_cmd(tmp_path, "--experiment", "drv", "--resume")
    proc = subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)

    def rows(g: str) -> int:
        return len((runs[g] / "metrics.csv").read_text().splitlines()) if (runs[g] / "metrics.csv").exists() else 0
    rows_at_kill = {g: rows(g) for g in runs}
    deadline = time.time() + 300
    while not any(rows(g) >= rows_at_kill[g] + 2 for g in runs if g not in done_first):  # the resumed trials run
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out[-4000:]
    unfinished = [g for g in runs if g not in finished()]
    line = f"continue with: python jobs/tune.py --out {tmp_path} --experiment drv --resume"
    assert unfinished and f"interrupted: {len(unfinished)} of 3 trials unfinished" in out, (unfinished, out[-3000:])
    assert line in out and "| generator |" not in out and "trials, 0 errored" not in out, out[-3000:]
    for g in unfinished:
        status = json.loads((runs[g] / "status.json").read_text())
        assert status["state"] == "preempted" and line in status["message"], (g, status)

    done = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    for g, run in runs.items():
        assert json.loads((run / "status.json").read_text())["state"] == "finished", g
        assert_exact_rows(run, 200, 10)
        assert (run / "summary.json").exists() and (run / "test_metrics.csv").exists()
        assert_fast_path(run)  # the trial process (a Ray worker) had the allocator mapped in
        assert set(pd.read_csv(run / "timings.csv").cpus) == {1}  # threads sized to --cpus-per-trial 1
    for g in done_first:  # not rerun
        assert (runs[g] / "summary.json").stat().st_mtime_ns == finished_mtime[g]
        assert f"drv/{g} at step" not in done.stdout
    assert "best configuration per generator by val_ssim" in done.stdout
    assert all(f"| {g} |" in done.stdout for g in runs)  # the comparison table


def test_without_an_address_the_driver_never_joins_another_jobs_ray(ray_cluster, tmp_path):
    """Another job's Ray runs on this host (the module's cluster); with no --address and no RAY_ADDRESS
    the sweep starts a private instance instead of attaching to it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # What `ray start` leaves for ray.init() to find: the cluster's address in /tmp/ray/ray_current_cluster.
    current = Path("/tmp/ray/ray_current_cluster")
    before = current.read_text() if current.exists() else None
    current.parent.mkdir(parents=True, exist_ok=True)
    current.write_text(ray_cluster.address)
    try:
        done = subprocess.run(tune_cmd(tmp_path, "--gens", "hybrid", "--train.steps", "4"), capture_output=True,
                              text=True, env=env, timeout=600, cwd=ROOT)
    finally:
        current.write_text(before) if before is not None else current.unlink(missing_ok=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Started a local Ray instance" in log and "Connecting to existing Ray cluster" not in log


def test_seeds_flag_trains_every_seed_under_names_that_show_it(ray_cluster, tmp_path):
    done = run_tune(ray_cluster, tmp_path, "--gens", "hybrid", "--seeds", "2", "--train.steps", "4",
                    "--experiment", "seeds")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for seed in (0, 1):
        run = tmp_path / "seeds" / f"hybrid-seed{seed}"
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
        assert json.loads((run / "config.json").read_text())["config"]["train"]["seed"] == seed
    assert "hybrid-seed0" in done.stdout or "| hybrid |" in done.stdout
    # The same command again (a user rerunning the README's job): the finished trials report their last
    # evaluation and end at once, training nothing (their rows and test tables untouched).
    trained = {p: p.read_bytes() for seed in (0, 1) for p in (tmp_path / "seeds" / f"hybrid-seed{seed}").glob("*.csv")}
    again = run_tune(ray_cluster, tmp_path, "--gens", "hybrid", "--seeds", "2", "--train.steps", "4",
                     "--experiment", "seeds")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(trained) >= 4 and all(p.read_bytes() == data for p, data in trained.items())
    # What each trial says, forwarded by Ray: the driver waits for it before leaving (cluster/sweep.py).
    assert (again.stdout + again.stderr).count("already finished") == 2


def test_a_trial_given_a_gpu_tensorflow_cannot_see_stops_in_one_line_and_packed_trials_share_it(ray_cluster, tmp_path):
    """A node that advertises a GPU it does not have (what a node with a broken driver, or a CPU-only
    TensorFlow on a GPU node, looks like to the trial): Ray assigns the GPU, the trainer finds none and
    stops before touching its run directory, naming the fix. With PIX2PIX_ALLOW_CPU=1 set for the sweep
    (the driver carries it to the trials), two trials of half a GPU each share the device and finish."""
    gpu_node = ray_cluster.add_node(num_cpus=2, num_gpus=1)
    ray_cluster.wait_for_nodes()
    try:
        done = run_tune(ray_cluster, tmp_path / "refused", "--gens", "hybrid", "--gpus-per-trial", "1",
                        "--max-failures", "0")
        out = done.stdout + done.stderr
        assert done.returncode == 1, out[-3000:]
        assert "this job was given GPU(s) (CUDA_VISIBLE_DEVICES=0) but TensorFlow sees none" in out, out[-3000:]
        assert "PIX2PIX_ALLOW_CPU=1" in out
        assert not (tmp_path / "refused" / "default" / "hybrid" / "config.json").exists()

        env = {**os.environ, "RAY_ADDRESS": ray_cluster.address, "PIX2PIX_ALLOW_CPU": "1"}
        done = subprocess.run(tune_cmd(tmp_path / "packed", "--gens", "unet,hybrid", "--gpus-per-trial", "0.5"),
                              capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        for gen in ("unet", "hybrid"):
            run = tmp_path / "packed" / "default" / gen
            assert json.loads((run / "status.json").read_text())["state"] == "finished"
    finally:
        ray_cluster.remove_node(gpu_node)
