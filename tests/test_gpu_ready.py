"""What the suite does for the GPUs it runs on: checkpoints on a clock, evaluation beside training, several
steps per call (each giving the same tables as the plain loop, for every generator, through a kill and a
stop), the cost model's arithmetic, and the GPU check at a tiny size on the CPU."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import costs
from conftest import ROOT, run_cli
from gan import models

pytestmark = pytest.mark.slow

STEPS, EVERY = 40, 2


def tables(run: Path) -> tuple[str, str]:
    return (run / "metrics.csv").read_text(), (run / "test_metrics.csv").read_text()


def val_rows(run: Path) -> int:
    path = run / "metrics.csv"
    return sum(1 for line in path.read_text().splitlines() if ",val," in line) if path.exists() else 0


def trainer(out: Path, gen: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "jobs" / "train.py"), "--preset", "tiny", "--gens", gen,
                             "--out", str(out), "--run-name", "clocked", "--train.eval_every", str(EVERY), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_rows(run: Path, proc: subprocess.Popen, n: int) -> None:
    deadline = time.time() + 300
    while val_rows(run) < n:
        assert proc.poll() is None, f"finished before it could be stopped: {proc.stdout.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("gen", models.names())
def test_clock_overlap_and_steps_per_call_keep_the_tables_through_a_kill_and_a_stop(tmp_path, gen):
    """The plain loop (a checkpoint at every evaluation, metrics in line, one step per call) against a run
    with a checkpoint clock of an hour, its metrics in worker processes beside training and three steps per
    call: trained 6 steps, extended to 40, killed (-9) with evaluations written past its only checkpoint,
    rerun, stopped (TERM) while an evaluation may be pending, rerun. Same metrics and test tables, and
    fewer checkpoints written than evaluations. (The runs no signal reaches train in this process.)"""
    from gan.config import make_config
    from gan.train import train
    reference = make_config("tiny", {"model.generator": gen, "train.steps": STEPS, "train.eval_every": EVERY,
                                     "run_name": "plain"})
    assert train(reference, tmp_path) == 0
    run = tmp_path / "default" / "clocked"
    fast = ["--train.checkpoint_minutes", "60", "--eval.overlap", "on", "--train.steps_per_call", "3"]
    clocked = {"model.generator": gen, "run_name": "clocked", "train.eval_every": EVERY,
               "train.checkpoint_minutes": 60.0, "eval.overlap": "on", "train.steps_per_call": 3}
    assert train(make_config("tiny", {**clocked, "train.steps": 6}), tmp_path) == 0
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert checkpoints == ["ckpt-6.index"]  # the end's only: the clock never came round
    killed = trainer(tmp_path, gen, "--train.steps", str(STEPS), *fast)
    wait_rows(run, killed, 7)  # evaluations up to step 14 written, the newest checkpoint at 6
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    stopped = trainer(tmp_path, gen, "--train.steps", str(STEPS), *fast)
    wait_rows(run, stopped, 12)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=120) == 75, stopped.stdout.read()[-2000:]
    assert train(make_config("tiny", {**clocked, "train.steps": STEPS}), tmp_path) == 0
    assert tables(run) == tables(tmp_path / "default" / "plain")
    written = {p.name for p in (run / "checkpoints").glob("ckpt-*.index")}
    assert len(written) < STEPS // EVERY and f"ckpt-{STEPS}.index" in written


def test_an_overlapped_best_checkpoint_keeps_the_evaluated_weights(tmp_path):
    """With eval.select best_val_ssim, the best generator saved after an overlapped evaluation is the one of
    that evaluation's step, not the training model's later weights: the test scores match the plain run."""
    from gan.config import make_config
    from gan.train import train
    common = {"model.generator": "unet", "train.steps": 12, "train.eval_every": 2, "eval.select": "best_val_ssim"}
    assert train(make_config("tiny", {**common, "run_name": "plain"}), tmp_path) == 0
    assert train(make_config("tiny", {**common, "run_name": "overlap", "eval.overlap": "on",
                                      "train.checkpoint_minutes": 60.0}), tmp_path) == 0
    plain, overlap = (json.loads((tmp_path / "default" / r / "summary.json").read_text()) for r in ("plain", "overlap"))
    assert overlap["selected"] == plain["selected"] and overlap["test"] == plain["test"]


def test_the_cost_model_adds_up():
    """A trial of 1,000 steps of 100 GFLOP on a device of 100 TFLOP/s at efficiency 0.1: 10 ms per step,
    plus the host's; checkpoints on a 1-minute clock; a sweep's writes, disk and waves from it."""
    costs.DEVICES["TEST"] = {"fp32": 100.0, "tf32": 100.0, "bf16": 200.0}
    try:
        plan = costs.TrialPlan("g", 256, "TEST", "float32", step_gflop=100, infer_gflop=10, checkpoint_bytes=10 ** 9,
                               best_bytes=10 ** 8, steps=1000, eval_every=100, eval_images=10, checkpoint_minutes=1,
                               steps_per_call=4, overlap=False, efficiency=0.1)
        f = plan.predict(costs.HostCosts(host_ms_per_call=4.0, metric_ms_per_image=100, cores=2, write_gb_per_s=1.0,
                                         host_ms_per_step=0.5))
        assert f["device_ms"] == pytest.approx(10.0) and f["host_ms"] == pytest.approx(1.5)
        assert f["step_ms"] == pytest.approx(11.5) and f["interval_s"] == pytest.approx(1.15)
        assert f["eval_generate_s"] == pytest.approx(0.01) and f["eval_metrics_s"] == pytest.approx(0.5)
        assert f["eval_blocking_s"] == pytest.approx(0.51) and f["checkpoint_mb_per_s"] == pytest.approx(1000 / 60)
        train_s = 11.5
        assert f["gpu_busy"] == pytest.approx(train_s / f["wall_s"]) and f["wall_s"] > train_s + 10 * 0.51
        # Overlapped, metrics shorter than an interval no longer stop training.
        plan.overlap = True
        assert plan.predict(costs.HostCosts(4.0, 100, 2, 1.0, 0.5))["eval_blocking_s"] == pytest.approx(0.01)
        w = costs.sweep(f, trials=10, nodes=2, gpus_per_node=2, per_gpu=2, keep=2)
        assert w["concurrent"] == 8 and w["waves"] == 2
        assert w["disk_peak_gb"] == pytest.approx(10 * (3 * 1.0 + 0.1))
        assert w["write_mb_per_s"] == pytest.approx(8 * 1000 / 60 / 2)
    finally:
        del costs.DEVICES["TEST"]


def test_bench_plan_measures_the_host_and_prints_the_table(tmp_path):
    out = tmp_path / "plan.json"
    done = run_cli("bench.py", "--plan", "--gens", "hybrid", "--size", "64", "--devices", "H100",
                   "--trials", "100", "--nodes", "4", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| hybrid | H100 | float32 |" in done.stdout and "sweep: 100 trials" in done.stdout
    assert "host overhead here: the step at a near-zero-FLOP size" in done.stdout
    report = json.loads(out.read_text())
    (f32, mixed) = report["trials"]
    for key in ("step_gflop", "host_ms_per_call", "host_ms_per_step", "metric_ms_per_image", "step_ms", "wall_s",
                "checkpoint_gb", "gpu_busy"):
        assert math.isfinite(f32[key]) and f32[key] >= 0, key
    assert f32["ms_per_step_at_1_per_call"] > 0 and mixed["step_ms"] < f32["step_ms"]
    bad = run_cli("bench.py", "--plan", "--devices", "TPUv9")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --devices: TPUv9")


def test_gpu_check_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    """Every measurement of the GPU check, on the CPU at 32 px (the figures are not the point here: that each
    is taken, recorded and printed, and the two packed trials both finish)."""
    out = tmp_path / "check.json"
    done = run_cli("bench.py", "--gpu-check", "--preset", "tiny", "--size", "32", "--timed-steps", "2",
                   "--eval-images", "4", "--gens", "unet", "--json", str(out), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [(r["precision"], r["xla"]) for r in report["rows"]] == [
        ("float32", False), ("float32", True), ("mixed_bfloat16", False), ("mixed_bfloat16", True)]
    assert all(r["ms_per_step"] > 0 and r["peak_memory_mb"] > 0 for r in report["rows"])
    # The nets' FLOPs come from the first measured process (the check's own process never starts TensorFlow).
    assert all(r["step_gflop"] > 0 for r in report["rows"]) and report["device"] == "cpu"
    first = report["rows"][0]
    assert first["eval_blocking_s_overlap"] > 0 and first["eval_blocking_s_sync"] > 0
    assert len(report["packed"]["trials"]) == 2 and all("ms_per_step" in t for t in report["packed"]["trials"])
    assert "two unet trials packed on one device: both finished" in done.stdout
