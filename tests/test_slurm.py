"""SLURM end to end on a real single-node cluster (slurm-wlm + munge, started here as root)."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, assert_exact_rows, assert_fast_path, run_cli
from services import Slurm
from gan.models import names

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# The script asks for a GPU, 8 CPUs and 32 GB; this test node has 2 CPUs and no GPU.
SMALL_NODE = ["--gres=none", "--cpus-per-task=1", "--mem=2G", "--time=20"]


@pytest.fixture(scope="module")
def slurm():
    # Not under pytest's tmp folder: that is private to root, and slurmctld runs as 'slurm'.
    root = Path(tempfile.mkdtemp(prefix="pix2pix-slurm-"))
    cluster = Slurm(root).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


def sbatch(slurm: Slurm, out: Path, *extra: str, env: str = "") -> str:
    exports = f"ALL,PYTHON={sys.executable},OUT={out},PRESET=tiny" + (f",{env}" if env else "")
    done = slurm.run("sbatch", "--parsable", *SMALL_NODE, f"--output={out}/slurm_%A_%a.out",
                     f"--export={exports}", *extra, str(ROOT / "slurm" / "train_all.sh"))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def test_sbatch_train_all_leaves_a_finished_run_of_every_generator(slurm, tmp_path):
    """Plain `sbatch slurm/train_all.sh`: the job resubmits itself as the array the registry needs, with the
    resources and output pattern it was given, and every registered generator trains."""
    job = sbatch(slurm, tmp_path)
    slurm.wait_job(job)
    (launcher,) = tmp_path.glob(f"slurm_{job}_*.out")
    array = re.search(r"Submitted batch job (\d+)", launcher.read_text())
    assert array, launcher.read_text()
    deadline = time.time() + 300  # squeue may not list an array submitted a moment ago: wait for its tasks
    while len(list(tmp_path.glob(f"slurm_{array.group(1)}_*.out"))) < len(names()):
        assert time.time() < deadline, sorted(p.name for p in tmp_path.iterdir())
        time.sleep(1)
    slurm.wait_job(array.group(1))
    for gen in names():
        run = tmp_path / "slurm" / gen
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "finished", (gen, status, list(tmp_path.glob("*.out")))
        assert_exact_rows(run, 8, 4)
        assert (run / "summary.json").exists()
        assert_fast_path(run)  # the SLURM task trained with the caching allocator mapped in


def test_requeue_resumes_without_duplicated_rows(slurm, tmp_path):
    job = sbatch(slurm, tmp_path, "--array=2", env="EXTRA_ARGS=--train.steps 150 --train.eval_every 10")
    task = f"{job}_2"
    run = tmp_path / "slurm" / "hybrid"
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = (run / "metrics.csv").read_text().splitlines() if (run / "metrics.csv").exists() else []
        if len(rows) > 4:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no rows; log: {[p.read_text() for p in tmp_path.glob('*.out')]}")
    assert slurm.run("scontrol", "requeue", task).returncode == 0
    slurm.release_requeued(task)
    slurm.wait_job(job)
    log = "".join(p.read_text() for p in tmp_path.glob("slurm_*.out"))
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished", log[-3000:]
    assert "restart 1" in log and "resuming" in log, log[-3000:]
    assert_exact_rows(run, 150, 10)


@pytest.mark.parametrize("signals", ["TERM+USR2", "TERM"])
def test_submitit_round_trip_with_preemption(slurm, tmp_path, signals):
    """Preempted (SIGTERM, then submitit's USR2 as `job._interrupt()` sends them; or SIGTERM alone),
    the job requeues itself and its rerun resumes: exact rows, finished. With SIGTERM alone the
    trainer always stops first - the order in which the job used to end as failed."""
    from cluster.submitit_jobs import TrainJob, make_executor
    from gan.config import make_config

    os.environ["SLURM_CONF"] = slurm.env["SLURM_CONF"]
    executor = make_executor(str(tmp_path / "logs"), cluster="slurm", cpus=1, mem_gb=2, timeout_min=20,
                             setup=[f"export PIX2PIX_CACHE={os.environ['PIX2PIX_CACHE']}"])
    cfg = make_config("tiny", {"model.generator": "hybrid", "train.steps": 150, "train.eval_every": 10})
    job = executor.submit(TrainJob(), cfg.to_dict(), str(tmp_path / "runs"))
    run = tmp_path / "runs" / "default" / "hybrid"
    deadline = time.time() + 300
    while not ((run / "metrics.csv").exists() and len((run / "metrics.csv").read_text().splitlines()) > 4):
        assert time.time() < deadline and job.state not in ("FAILED", "COMPLETED"), job.stderr()
        time.sleep(0.2)
    if signals == "TERM+USR2":
        job._interrupt()  # what SLURM does before preemption/timeout: submitit checkpoints and requeues
    else:
        slurm.run("scancel", "--signal", "TERM", job.job_id)
    slurm.release_requeued(job.job_id)
    result = job.result()
    assert result["state"] == "finished" and result["step"] == 150
    assert_exact_rows(run, 150, 10)
    assert "resuming" in (job.stdout() or ""), job.stdout()
    assert_fast_path(run)  # the submitit task exported the allocator in its sbatch set-up


def test_submit_command_local_round_trip_with_seeds(tmp_path):
    done = run_cli("submit.py", "--gens", "hybrid", "--seeds", "2", "--cluster", "local", "--preset", "tiny",
                   "--cpus-per-trial", "1", "--wait", "--out", str(tmp_path / "runs"), "--logs", str(tmp_path / "logs"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("finished at step 8") == 2
    for seed in (0, 1):
        run = tmp_path / "runs" / "default" / f"hybrid-seed{seed}"
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
        assert json.loads((run / "config.json").read_text())["config"]["train"]["seed"] == seed


def test_sbatch_task_beyond_the_registry_fails_in_one_line(slurm, tmp_path):
    """An explicit array may name any subset; a task past the registry's generators x SEEDS fails naming the
    tasks there are, and trains nothing."""
    beyond = 2 * len(names())
    job = sbatch(slurm, tmp_path, f"--array={beyond}", env="SEEDS=2")
    slurm.wait_job(job)
    logs = " ".join(p.read_text() for p in tmp_path.glob("slurm_*.out"))
    need = (f"error: task {beyond}: {len(names())} generators ({' '.join(names())}) x 2 seed(s) are tasks "
            f"0-{beyond - 1}")
    assert logs.count(need) == 1, logs
    assert not (tmp_path / "slurm").exists()


def test_bash_train_all_submits_the_array_the_registry_needs(slurm, tmp_path):
    """`bash slurm/train_all.sh [sbatch options]` computes the array from the generator registry and SEEDS:
    a fourth generator or more seeds can never be left out by a stale #SBATCH --array line."""
    from gan.models import names
    done = subprocess.run(["bash", str(ROOT / "slurm" / "train_all.sh"), "--parsable", "--hold", *SMALL_NODE,
                           f"--output={tmp_path}/slurm_%A_%a.out"], capture_output=True, text=True, cwd=ROOT,
                          env={**slurm.env, "SEEDS": "2", "PYTHON": sys.executable}, timeout=60)
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip().split(";")[0]
    try:
        shown = slurm.run("scontrol", "show", "job", job).stdout
        assert f"ArrayTaskId=0-{2 * len(names()) - 1}" in shown, shown
    finally:
        slurm.run("scancel", job)


def test_a_submitit_task_no_node_can_hold_is_refused_before_it_queues(slurm, tmp_path):
    """Against the real single-node SLURM (2 CPUs, no GPU): 64 CPUs per task would wait for ever in the
    queue; jobs/submit.py refuses it in one line naming the largest node, and submits nothing."""
    before = slurm.run("squeue", "-h").stdout
    done = run_cli("submit.py", "--gens", "hybrid", "--preset", "tiny", "--cpus-per-trial", "64", "--mem", "1",
                   "--out", str(tmp_path / "runs"), "--logs", str(tmp_path / "logs"), env={"SLURM_CONF": slurm.env["SLURM_CONF"]})
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("error: --cpus-per-trial 64 --gpus-per-trial 0 --mem 1: no node of the cluster has "
                               "that much (the largest: "), lines[0]
    assert slurm.run("squeue", "-h").stdout == before and not (tmp_path / "logs").exists()


def test_submit_settle_rounds_on_slurm_survive_a_stopped_driver(slurm, tmp_path):
    """`jobs/submit.py --settle` on the real SLURM: the plan is stored before the first round; the driver,
    stopped (Ctrl-C) while the round trains, cancels its jobs in one line, and none of them requeues itself;
    the same command again resumes them from their checkpoints (exact rows), ends with the verdict, and a
    third time trains nothing and gives the same table."""
    import pandas as pd
    env = {"SLURM_CONF": slurm.env["SLURM_CONF"]}
    args = ["submit.py", "--gens", "unet,hybrid", "--settle", "--settle-metrics", "l1", "--margin", "l1=0.1",
            "--first-look", "2", "--max-seeds", "2", "--preset", "tiny", "--train.steps", "200",
            "--train.eval_every", "10", "--cpus-per-trial", "1", "--mem", "1", "--time", "20",
            "--out", str(tmp_path / "runs"), "--logs", str(tmp_path / "logs"), "--experiment", "settle"]
    exp = tmp_path / "runs" / "settle"
    driver = subprocess.Popen([sys.executable, str(ROOT / "jobs" / args[0]), *args[1:]], cwd=ROOT, text=True,
                              env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not any(len(p.read_text().splitlines()) > 3 for p in exp.glob("*/metrics.csv")):
        assert time.time() < deadline and driver.poll() is None, driver.communicate()
        time.sleep(0.5)
    assert json.loads((exp / "_tune_args.json").read_text())["settle"]["margins"] == {"l1": 0.1}
    driver.send_signal(2)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 75, out + err
    assert "interrupted: this round's 4 job(s) cancelled" in out, out + err
    # A job requeues itself from its own process (the trainer, whose pid status.json holds), before that
    # process ends, and then stays queued (pending): the queue must be empty once every trainer is gone.
    pids = [json.loads(p.read_text())["pid"] for p in exp.glob("*/status.json")]
    deadline = time.time() + 120
    while any(Path(f"/proc/{pid}").exists() for pid in pids) or slurm.run("squeue", "-h").stdout.strip():
        assert time.time() < deadline, f"a job still queued (requeued itself?):\n{slurm.run('squeue').stdout}"
        time.sleep(0.5)
    started = [p.parent for p in exp.glob("*/metrics.csv") if len(p.read_text().splitlines()) > 3]
    assert started and all(json.loads((r / "status.json").read_text())["state"] == "preempted" for r in started)
    done = run_cli(*args, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "training 4 run(s): hybrid-seed0, hybrid-seed1, unet-seed0, unet-seed1" in done.stdout, done.stdout
    for run in exp.glob("*-seed*"):
        assert json.loads((run / "status.json").read_text())["state"] == "finished", run
        assert_exact_rows(run, 200, 10)
    table = pd.read_csv(exp / "settle.csv")
    assert list(table.b) == ["hybrid", "control", "control"] and set(table["seeds"]) == {2}, table
    assert set(table.outcome) <= {"better", "equivalent", "open", "uninformative", "worse"} and table.final.all(), table
    again = run_cli(*args, env=env, timeout=300)
    assert again.returncode == 0 and "the next look" not in again.stdout, again.stdout[-3000:] + again.stderr[-3000:]
    assert pd.read_csv(exp / "settle.csv").equals(table)
