"""The run promises, for every registered generator: an extended run, and a run preempted (SIGTERM),
resumed, killed (kill -9) and resumed again, each reproduce an uninterrupted run exactly, and the exported SavedModel serves exactly
the photos the run's own evaluation and `jobs/evaluate.py --translate` make.

Dropout is on in every generator here (the U-Net's by default, `model.resnet_dropout` for the others),
so the random layers' state is part of what must survive an interruption.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, assert_exact_rows, run_cli
from gan.models import names

pytestmark = pytest.mark.slow

STEPS, EVERY = 32, 8
FIELDS = {"train.steps": STEPS, "train.eval_every": EVERY, "model.resnet_dropout": 0.3}


def flags(gen: str, steps: int = STEPS) -> list[str]:
    return ["--preset", "tiny", "--gens", gen, *[a for k, v in {**FIELDS, "train.steps": steps}.items()
                                                 for a in (f"--{k}", str(v))]]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run per generator (trained on first use, in this process)."""
    from gan.config import make_config
    from gan.train import train
    root, done = tmp_path_factory.mktemp("straight"), {}

    def get(gen: str) -> Path:
        if gen not in done:
            assert train(make_config("tiny", {**FIELDS, "model.generator": gen}), root, log=lambda *_: None) == 0
            done[gen] = root / "default" / gen
        return done[gen]
    return get


def assert_same_run(a: Path, b: Path) -> None:
    """Every evaluation row and every test image's metrics agree (float32 summation order aside)."""
    for name in ("metrics.csv", "test_metrics.csv"):
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        assert list(x.columns) == list(y.columns) and len(x) == len(y), name
        numeric = x.select_dtypes("number").columns
        np.testing.assert_allclose(x[numeric], y[numeric], rtol=1e-5, atol=1e-6, err_msg=f"{name} differs")


def start(out: Path, gen: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "jobs" / "train.py"), *flags(gen), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_past(run: Path, proc: subprocess.Popen, step: int, timeout: float = 300) -> None:
    """Until metrics.csv has a row past `step`, then up to 0.3 s more to land between evaluations, and the
    process frozen there (SIGSTOP: the caller's signal then lands where it was looked at). A net so small that
    another evaluation comes within those 0.3 s is frozen at that row, and one whose row is the last
    evaluation at once: a moment more and the run may have finished, leaving nothing to interrupt."""
    deadline = time.time() + timeout

    def last_step() -> int:
        steps = pd.read_csv(run / "metrics.csv").step if (run / "metrics.csv").exists() else []
        return int(steps.max()) if len(steps) else 0

    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        seen = last_step()
        if seen > step:
            until = time.time() + (0.3 if seen < STEPS else 0)
            while time.time() < until and last_step() == seen:
                time.sleep(0.01)
            proc.send_signal(signal.SIGSTOP)
            return
        time.sleep(0.05)
    raise AssertionError("no evaluation rows in time")


@pytest.mark.parametrize("gen", names())
def test_extended_run_is_exact(straight, tmp_path, gen):
    from gan.config import make_config
    from gan.train import train
    for steps in (EVERY * 2, STEPS):  # a finished run, then the same command with more steps
        cfg = make_config("tiny", {**FIELDS, "train.steps": steps, "model.generator": gen})
        assert train(cfg, tmp_path, log=lambda *_: None) == 0
    assert_exact_rows(tmp_path / "default" / gen, STEPS, EVERY)
    assert_same_run(straight(gen), tmp_path / "default" / gen)


@pytest.mark.parametrize("gen", names())
def test_preempted_then_killed_run_resumes_exactly(straight, tmp_path, gen):
    run = tmp_path / "default" / gen
    proc = start(tmp_path, gen)
    wait_past(run, proc, 0)
    proc.send_signal(signal.SIGTERM)  # preemption: checkpoint at the current step, exit 75
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "preempted" and 0 < status["step"] < STEPS, status
    proc = start(tmp_path, gen)  # resumes there ...
    wait_past(run, proc, status["step"])
    proc.kill()  # ... and is killed outright: it resumes at its last evaluation's checkpoint
    assert proc.wait() == -signal.SIGKILL
    proc.communicate()
    killed_at = json.loads((run / "status.json").read_text())["step"]
    from gan.config import make_config
    from gan.train import train
    said: list[str] = []  # the rerun no signal reaches: in this process, its lines as the command prints them
    assert train(make_config("tiny", {**FIELDS, "model.generator": gen}), tmp_path, log=said.append) == 0
    # The newest checkpoint: the status's step, or the next evaluation's when the kill fell between that
    # evaluation's checkpoint and its status write (after a preemption off the grid, e.g. 10, that is 16).
    resumed = re.search(rf"resuming {re.escape(str(run))} at step (\d+)", "\n".join(said))
    assert resumed and int(resumed.group(1)) in (killed_at, (killed_at // EVERY + 1) * EVERY), said[-20:]
    assert_exact_rows(run, STEPS, EVERY)
    assert_same_run(straight(gen), run)


@pytest.mark.parametrize("gen", names())
def test_export_serves_what_the_run_evaluated(straight, tmp_path, gen):
    import shutil

    import cv2
    import tensorflow as tf
    from gan.datasets.synthetic import draw_scene
    run = tmp_path / gen
    shutil.copytree(straight(gen), run)  # evaluation writes into the run: use a copy
    labels = [draw_scene(1, i, 32)[1] for i in range(3)]
    (tmp_path / "labels").mkdir()
    for i, label in enumerate(labels):
        cv2.imwrite(str(tmp_path / "labels" / f"{i}.png"), label[:, :, ::-1])
    done = run_cli("evaluate.py", str(run), "--split", "val", "--translate", str(tmp_path / "labels"), "--to",
                   str(tmp_path / "photos"), "--export", str(tmp_path / "model"))
    assert done.returncode == 0, done.stderr[-3000:]
    # The last checkpoint reproduces the run's own last validation row (same weights, same dropout masks).
    val = pd.read_csv(run / "metrics.csv").query("split == 'val'").iloc[-1]
    mine = pd.read_csv(run / f"eval_val_step{STEPS}.csv")
    for name in ("ssim", "hist_corr", "l1"):
        assert mine[name].mean() == pytest.approx(val[name], abs=1e-5), name
    # The SavedModel serves the translated photos in any batch and twice over (same dropout masks; its graph
    # may round a pixel or two the other way: another mask would move most pixels by many levels).
    translated = np.stack([cv2.imread(str(tmp_path / "photos" / f"{i}.png"))[:, :, ::-1] for i in range(3)])
    served = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    batch = served(labels=tf.constant(np.stack(labels)))["photos"].numpy()
    assert batch.dtype == np.uint8 and batch.shape == (3, 32, 32, 3)
    assert_same_photos(batch, translated)
    assert_same_photos(served(labels=tf.constant(np.stack(labels[::-1])))["photos"].numpy(), translated[::-1])


def assert_same_photos(a: np.ndarray, b: np.ndarray) -> None:
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005, (diff.max(), (diff > 0).mean())
