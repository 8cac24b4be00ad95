"""Training end to end: the run-directory contract, resume after kill -9, preemption, devices."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run_cli, tree_digest
from gan.config import make_config
from gan.models import names
from gan.train import train

pytestmark = pytest.mark.slow

TINY = ["--preset", "tiny"]


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@pytest.mark.parametrize("gen", names())
def test_short_training_writes_the_whole_run_directory(tiny_runs, gen, tmp_path):
    cfg = make_config("tiny", {"model.generator": gen, "experiment": "cmp"})
    run = tiny_runs / "cmp" / gen
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"]["generator"] == gen and config["environment"]["tensorflow"]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    metrics = read(run / "metrics.csv")
    assert list(zip(metrics.step, metrics.split)) == [(4, "train"), (4, "val"), (8, "train"), (8, "val")]
    assert set(metrics.columns) >= {"hist_corr", "template_match", "feature_match", "ssim", "psnr", "l1"}
    timings = read(run / "timings.csv")
    assert list(timings.step) == [4, 8] and list(timings.steps) == [4, 4]
    assert (timings.train_seconds > 0).all() and (timings.eval_seconds > 0).all()
    test = read(run / "test_metrics.csv")
    assert len(test) == 4 and test.image.is_unique
    summary = json.loads((run / "summary.json").read_text())
    for name in ("hist_corr", "ssim", "psnr"):
        assert summary["test"][name]["mean"] == pytest.approx(test[name].mean(), abs=1e-5)
        assert summary["test"][name]["std"] == pytest.approx(test[name].std(ddof=1), abs=1e-5)
    assert summary["train_seconds"] == pytest.approx(timings.train_seconds.sum(), abs=1e-2)
    assert {p.name for p in (run / "samples").iterdir()} == {"step_000004.png", "step_000008.png", "test.png"}
    assert (run / "checkpoints" / "ckpt-8.index").exists()
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 12 and not set(split["val"]) & set(split["test"])
    # Rerunning a finished run changes nothing (on a copy: the shared runs are never written to).
    shutil.copytree(run, tmp_path / "cmp" / gen)
    before = tree_digest(tmp_path / "cmp" / gen)
    assert train(cfg, tmp_path) == 0
    assert tree_digest(tmp_path / "cmp" / gen) == before


def _tensorboard_losses(run: Path) -> dict[int, dict[str, float]]:
    import tensorflow as tf
    losses: dict[int, dict[str, float]] = {}
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith("loss/"):
                    losses.setdefault(event.step, {})[value.tag] = float(tf.make_ndarray(value.tensor))
    return losses


DEVICES_SCRIPT = """
import sys
from gan.config import make_config
from gan.models import winograd
from gan.devices import make_strategy
from gan.train import train
make_strategy("2")  # two logical CPU devices, before TensorFlow starts
winograd.MIN_SIDE = winograd.MIN_CHANNELS = 1  # the PatchGAN's 4x4 conv as Winograd even at 32 px
for devices, precision in (("1", "float32"), ("2", "float32"), ("2", "mixed_float16")):
    cfg = make_config("tiny", {"model.generator": "unet", "train.steps": 6, "train.eval_every": 6,
                               "train.log_every": 1, "train.batch_size": 2, "model.dropout": 0.0,
                               "train.devices": devices, "train.precision": precision})
    assert train(cfg, f"{sys.argv[1]}/{devices}-{precision}") == 0
"""


def test_two_logical_cpu_devices_match_one_device(tmp_path):
    """Same global batch and seed: one device (fused BatchNorm) and two (synchronized BatchNorm), both
    with the Winograd conv, give identical losses up to float summation order (rtol 1e-4). mixed_float16 with dynamic loss scaling
    trains on two devices: finite losses, the first (pre-update) losses within 2 % of float32."""
    done = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 1 device(s)" in done.stdout and "on 2 device(s)" in done.stdout
    one, two, half = (_tensorboard_losses(tmp_path / d / "default" / "unet")
                      for d in ("1-float32", "2-float32", "2-mixed_float16"))
    assert sorted(one) == sorted(two) == sorted(half) == list(range(1, 7))
    for step in one:
        for tag in one[step]:
            assert two[step][tag] == pytest.approx(one[step][tag], rel=1e-4, abs=1e-5), (step, tag)
            assert np.isfinite(half[step][tag]), (step, tag)
    for tag in one[1]:  # later steps differ by design: an overflowing step is zeroed while the scale settles
        assert half[1][tag] == pytest.approx(one[1][tag], rel=2e-2, abs=1e-3), tag


@pytest.mark.real_data
@pytest.mark.skipif(not os.environ.get("PIX2PIX_REAL_DATA"),
                    reason="set PIX2PIX_REAL_DATA to a pix2pix-layout Cityscapes folder (e.g. cityscapes-mini)")
def test_real_cityscapes_pix2pix_folder(tmp_path):
    done = run_cli("train.py", *TINY, "--gens", "hybrid", "--data", os.environ["PIX2PIX_REAL_DATA"],
                   "--data.image_size", "64", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "default" / "hybrid" / "summary.json").read_text())
    assert summary["images"] == 4 and 0 < summary["test"]["ssim"]["mean"] < 1


def test_dynamic_loss_scale_halves_on_overflow_and_grows_after_finite_steps():
    import tensorflow as tf
    from gan.step import DynamicLossScale
    ls = DynamicLossScale(initial=8.0, growth_steps=3)
    grads = ls.unscale([tf.constant([16.0, np.inf])])
    assert float(ls.scale) == 4.0 and grads[0].numpy().tolist() == [0.0, 0.0]  # zeroed, scale halved
    for _ in range(2):
        grads = ls.unscale([tf.constant([4.0, 8.0])])
        assert grads[0].numpy().tolist() == [1.0, 2.0] and float(ls.scale) == 4.0
    ls.unscale([tf.constant([4.0, 8.0])])  # the third finite step in a row doubles the scale
    assert float(ls.scale) == 8.0 and int(ls.good_steps) == 0


def test_best_validation_checkpoint_is_the_one_tested(tmp_path):
    """eval.select best_val_l1: the test split scores the evaluation with the lowest validation L1 (selected
    on val, never on test), and summary.json and the report say which."""
    cfg = make_config("tiny", {"model.generator": "hybrid", "train.steps": 16, "train.eval_every": 4,
                               "eval.select": "best_val_l1"})
    assert train(cfg, tmp_path) == 0
    run = tmp_path / "default" / "hybrid"
    val = read(run / "metrics.csv").query("split == 'val'")
    best = val.loc[val.l1.idxmin()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected"] == {"rule": "best_val_l1", "step": int(best.step), "value": pytest.approx(best.l1, abs=1e-6)}
    assert (run / "checkpoints" / "best" / f"ckpt-{int(best.step)}.index").exists()
    from analysis.runs import load_run
    from analysis.tables import runs_table
    assert runs_table([load_run(run)]).tested_at.iloc[0] == f"best_val_l1 (step {int(best.step)})"
    with pytest.raises(Exception, match="--eval.select: 'best_val_fcn_iou' is not 'last' or best_val_<metric>"):
        make_config("tiny", {"eval.select": "best_val_fcn_iou"})  # FCN metrics need fcn_every_eval


def test_a_run_records_the_kind_of_cpu_it_ran_on(tiny_runs, tmp_path):
    # The same seed and commit train bitwise the same run only on CPUs of the same instruction sets
    # (TensorFlow picks its kernels by them): every run says which it had.
    from gan.provenance import cpu_kind
    environment = json.loads((tiny_runs / "cmp" / "unet" / "config.json").read_text())["environment"]
    import keras
    assert environment["keras"] == keras.__version__ and environment["numpy"]
    assert environment["cpu_model"] and set(environment["cpu_isa"].split()) <= {
        "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16"}
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse2 avx2 fma avx512f\n")
    assert cpu_kind(str(info)) == {"cpu_model": "Some CPU 9000", "cpu_isa": "avx2 fma avx512f"}
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2\n")  # no vector units, no model name
    assert cpu_kind(str(info))["cpu_isa"] == ""
