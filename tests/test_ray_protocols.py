"""Ray Tune's protocols end to end on a real two-node Ray cluster on 127.0.0.1: the search followed by the
retraining at an equal budget (killed between the phases, interrupted inside the retraining, resumed),
and the settle rule's rounds. A file of its own (its own cluster) so it runs beside tests/test_ray.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from conftest import ROOT
from services import assert_no_trial_line_after, run_tune, tune_cmd

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_equal_budget_protocol_resumes_through_a_kill_between_the_phases_and_a_ctrl_c_inside_the_retraining(
        ray_cluster, tmp_path):
    """--then-seeds: the search picks each generator's best configuration on validation. The driver is
    killed (-9) as the retraining phase begins; `--resume` takes up the retraining and is stopped by Ctrl-C
    while its trials run, which ends as an interruption (exit 75, one line naming --resume, no retraining
    summary or report), not as a success; `--resume` again retrains the best and the default configuration
    on fresh seeds 1..N (here N = 2) and compares them at the run level, writing the report the sweep was
    started with (the resume commands name no --report). (A Ctrl-C that lands before Tune listens, as a
    tuner is built: tests/test_interruption.py.)"""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"optim.lr_g": {"loguniform": [1e-4, 1e-3]}}))  # drawn by the driver
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    args = ["--gens", "hybrid", "--space", str(space), "--samples", "2", "--metric", "val_l1", "--then-seeds", "2",
            "--train.steps", "4", "--experiment", "eq", "--report", str(tmp_path / "report")]
    proc = subprocess.Popen(tune_cmd(tmp_path, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=ROOT)
    args_file = tmp_path / "eq" / "_tune_args.json"
    deadline = time.time() + 600
    while not (args_file.exists() and json.loads(args_file.read_text()).get("phase") == "retrain"):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    best = json.loads(args_file.read_text())["best"]["hybrid"]

    # Ctrl-C once a retraining trial has started: four trials on two CPUs, so some are still to run.
    resume = tune_cmd(tmp_path, "--experiment", "eq", "--resume")
    proc = subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 600
    while not any(tmp_path.glob("eq-*/*/status.json")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    states = {p.parent.name: json.loads(p.read_text())["state"] for p in tmp_path.glob("eq-*/*/status.json")}
    assert proc.returncode == 75, (states, out[-3000:])
    assert "continue with: python jobs/tune.py" in out and "--resume" in out and "interrupted:" in out, out[-3000:]
    assert "retrained the best configuration" not in out and not (tmp_path / "report" / "tuned").exists()
    assert "running" not in states.values(), states  # each started run says how it ended

    done = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert "retrained the best configuration of each generator and its default on seeds [1, 2]" in done.stdout
    assert_no_trial_line_after(done.stdout, "retrained the best configuration")
    assert f"| hybrid | optim.lr_g | 0.0002 | {best['optim.lr_g']:.3g} |" in done.stdout, done.stdout[-3000:]
    tuned = sorted(p.name for p in (tmp_path / "eq-tuned").iterdir() if (p / "summary.json").exists())
    default = sorted(p.name for p in (tmp_path / "eq-default").iterdir() if (p / "summary.json").exists())
    assert default == ["hybrid-seed1", "hybrid-seed2"] and len(tuned) == 2, (tuned, default)
    assert all(name.startswith(f"hybrid-lr_g={best['optim.lr_g']:.3g}") for name in tuned), (tuned, best)
    config = json.loads((tmp_path / "eq-tuned" / tuned[0] / "config.json").read_text())["config"]
    assert config["optim"]["lr_g"] == best["optim.lr_g"] and config["train"]["seed"] == 1
    assert "tuned against default, per generator" in done.stdout
    for table in ("best_vs_default.csv", "tuned_vs_default.csv", "tuned/report.html", "default/report.html"):
        assert (tmp_path / "report" / table).exists(), table


def test_settle_trains_seeds_in_rounds_reuses_finished_runs_and_ends_with_a_verdict(ray_cluster, tmp_path):
    """--settle on the two-node cluster: the plan is stored before the first round, a run already in the
    experiment counts as a seed (never trained again), open pairs get another seed up to the maximum, and
    the verdict says better / equivalent / open for every pair and metric. The looks begin at seed 1
    (--first-seed), so the seeds it trains are 1, 2, then 3."""
    out = tmp_path / "out"
    # The run `jobs/train.py --preset tiny --gens unet --experiment settle --run-name unet-seed1 --train.seed 1`
    # makes, trained in this process (no signal reaches it).
    from gan.config import make_config
    from gan.train import train
    assert train(make_config("tiny", {"model.generator": "unet", "experiment": "settle", "run_name": "unet-seed1",
                                      "train.seed": 1}), out) == 0
    before = (out / "settle" / "unet-seed1" / "test_metrics.csv").read_bytes()
    args = ["--gens", "unet,hybrid", "--experiment", "settle", "--settle", "--settle-metrics", "ssim,l1",
            "--margin", "ssim=1e-9", "--margin", "l1=0.1", "--first-look", "2", "--max-seeds", "3", "--first-seed", "1"]
    done = run_tune(ray_cluster, out, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads((out / "settle" / "_tune_args.json").read_text())["settle"]
    assert saved["metrics"] == ["ssim", "l1"] and saved["margins"] == {"ssim": 1e-9, "l1": 0.1}
    assert saved["first_seed"] == 1 and set(saved["control"]) == {"ssim", "l1"} and saved["frozen"]["sha256"]
    assert "training 3 run(s): hybrid-seed1, hybrid-seed2, unet-seed2" in done.stdout  # unet-seed1 reused
    assert (out / "settle" / "unet-seed1" / "test_metrics.csv").read_bytes() == before
    table = pd.read_csv(out / "settle" / "settle.csv")
    pairs = table[table.b != "control"].set_index("metric")
    # ssim never within 1e-9: not equivalent, and open until the maximum unless better; every generator is
    # held against the control on both metrics; every comparison ends decided.
    assert pairs.loc["ssim", "outcome"] in ("open", "better", "uninformative") and pairs.loc["ssim", "seeds"] in (2, 3)
    assert set(table.outcome) <= {"better", "equivalent", "open", "uninformative", "worse"} and table.final.all()
    assert sorted(zip(table[table.b == "control"].a, table[table.b == "control"].metric)) == sorted(
        (g, m) for g in ("unet", "hybrid") for m in ("ssim", "l1"))
    assert "training 2 run(s): hybrid-seed3, unet-seed3" in done.stdout
    assert_no_trial_line_after(done.stdout, "settled with")
    # Again: nothing left to train, the same verdict.
    again = run_tune(ray_cluster, out, "--experiment", "settle", "--resume")
    assert again.returncode == 0 and "the next look" not in again.stdout, again.stdout[-3000:] + again.stderr[-3000:]
    assert pd.read_csv(out / "settle" / "settle.csv").equals(table)
