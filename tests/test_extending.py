"""Extending the suite takes one place: a toy generator and a toy metric, registered as the README's
"Extending" section shows, reach every list, the trainer, the run directory and the analysis; a fourth
generator with a setting of its own, in a file of its own, goes through the sweep space, the SLURM array,
training and the report; a run written before a metric existed reads as missing it, never as an error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run_cli
from gan import models
from gan.config import ConfigError, make_config
from gan.evaluators.metrics import Metric, register_metric, unregister_metric


def build_toy(cfg, size: int):
    import keras
    from keras import layers
    inputs = layers.Input([size, size, 3])
    outputs = layers.Conv2D(3, 3, padding="same", activation="tanh")(layers.Conv2D(cfg.filters, 3, padding="same")(inputs))
    return keras.Model(inputs, outputs, name="toy")


@pytest.fixture
def toy_generator():
    models.register(models.Generator(
        "toy", build_toy, summary="two convs",
        check=lambda m, size: None if m.filters <= 16 else f"--model.filters: the toy takes at most 16, got {m.filters}"))
    yield "toy"
    models.unregister("toy")


@pytest.fixture
def toy_metric():
    register_metric(Metric("mean_gap", lambda g, r: abs(float(g.mean()) - float(r.mean())) / 255.0,
                           higher_is_better=False, version=3))
    yield "mean_gap"
    unregister_metric("mean_gap")


def test_a_registered_generator_and_metric_reach_every_list_the_trainer_and_the_analysis(toy_generator, toy_metric,
                                                                                        tmp_path):
    from analysis.runs import find_runs, lower_is_better
    from analysis.tables import study_table, test_table
    from cluster import spaces
    from gan.cli import generator_list
    from gan.train import train
    from cluster.tune import mode_of

    # Every list of generators is the registry's: --gens all, the sweep grid, the config's check.
    assert models.names() == ("unet", "resnet", "hybrid", "toy") == tuple(generator_list("all"))
    assert spaces.build_space(generator_list("all"), [])["model.generator"] == {"grid": list(models.names())}
    with pytest.raises(ConfigError, match="--model.filters: the toy takes at most 16, got 32"):
        make_config("tiny", {"model.generator": "toy", "model.filters": 32})
    # The metric's direction is the sweep's and the best-checkpoint rule's.
    assert mode_of("val_mean_gap") == "min" and mode_of("val_ssim") == "max"
    make_config("tiny", {"eval.select": "best_val_mean_gap"})

    assert train(make_config("tiny", {"model.generator": "toy", "experiment": "x"}), tmp_path) == 0
    run = tmp_path / "x" / "toy"
    assert "mean_gap" in (run / "metrics.csv").read_text().splitlines()[0].split(",")
    recorded = json.loads((run / "config.json").read_text())["metrics"]
    assert recorded["mean_gap"] == {"better": "lower", "study": False, "version": 3}
    assert recorded["ssim"]["study"] and recorded["l1"]["better"] == "lower"

    runs = find_runs(tmp_path)
    assert "mean_gap" in lower_is_better(runs) and "mean_gap" not in lower_is_better()  # the runs', no global
    tests = pd.read_csv(run / "test_metrics.csv")
    assert test_table(runs).set_index("generator").loc["toy", "mean_gap_mean"] == pytest.approx(tests.mean_gap.mean())
    assert "mean_gap" in study_table(runs)


def test_a_metric_registered_in_one_process_only_is_named_when_workers_lack_it(toy_metric):
    from gan.evaluators.metrics import MetricPool
    images = np.zeros((4, 32, 32, 3), np.uint8)
    with MetricPool(workers=2) as pool, pytest.raises(ValueError, match="'mean_gap' is not defined in gan/evaluators/metrics.py"):
        pool(images, images)


def test_a_run_from_before_a_metric_reads_as_missing_it(tiny_runs, tmp_path):
    """An older run has no psnr column and no metric record: tables and statistics show it as missing."""
    from analysis.runs import find_runs
    from analysis.stats import paired_tests, run_level
    from analysis.tables import study_table, test_table
    for gen in ("unet", "hybrid"):
        shutil.copytree(tiny_runs / "cmp" / gen, tmp_path / "cmp" / gen)
    old = tmp_path / "cmp" / "unet"
    for name in ("test_metrics.csv", "metrics.csv"):
        pd.read_csv(old / name).drop(columns="psnr").to_csv(old / name, index=False)
    config = json.loads((old / "config.json").read_text())
    del config["metrics"]
    (old / "config.json").write_text(json.dumps(config))

    runs = find_runs(tmp_path)
    table = test_table(runs).set_index("generator")
    assert np.isnan(table.loc["unet", "psnr_mean"]) and np.isfinite(table.loc["hybrid", "psnr_mean"])
    assert study_table(runs).set_index("generator").loc["unet", "psnr"] == "-"
    from analysis.runs import test_frame
    assert set(paired_tests(test_frame(runs)).metric) >= {"ssim", "psnr"}
    run_level(test_frame(runs), resamples=50)


def test_resuming_an_older_run_adds_the_new_metric_column(tmp_path):
    """The trainer's append keeps a table's columns and adds the ones it lacks; older rows read as empty."""
    from gan.files import append_csv
    path = tmp_path / "metrics.csv"
    path.write_text("step,split,ssim,images\n4,val,0.5,4\n")
    append_csv(path, ("step", "split", "ssim", "mean_gap", "images"),
               [{"step": 8, "split": "val", "ssim": 0.6, "mean_gap": 0.1, "images": 4}])
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["step", "split", "ssim", "images", "mean_gap"]
    assert np.isnan(frame.mean_gap[0]) and frame.mean_gap[1] == pytest.approx(0.1)


def test_a_broken_generator_module_is_named_in_one_line(tmp_path, monkeypatch):
    from gan.errors import UserError
    from gan.models import _discover, generators
    (tmp_path / "halfdone.py").write_text("def build(cfg, size):\n    return (\n")
    monkeypatch.setattr(generators, "__path__", [str(tmp_path)])
    with pytest.raises(UserError, match=r"gan/models/generators/halfdone.py: cannot be loaded \(SyntaxError"):
        _discover()


TOY_FILE = textwrap.dedent('''
    """A toy generator with a setting of its own, as a user writes one: two convs, `width` wide."""
    from dataclasses import dataclass

    from gan.models import Generator, check_range, register


    @dataclass
    class Settings:
        width: int = 8


    def build(cfg, size):
        import keras
        from keras import layers
        inputs = layers.Input([size, size, 3])
        x = layers.Conv2D(cfg.own.width, 3, padding="same")(inputs)
        return keras.Model(inputs, layers.Conv2D(3, 3, padding="same", activation="tanh")(x), name="toy")


    TOY = register(Generator("toy", build, Settings, summary="two convs",
                             check=lambda cfg, size: check_range(TOY, cfg.own, "width", 1, 64),
                             presets={"tiny": {"width": 4}}, space={"width": {"choice": [2, 4]}}))
''')


def test_a_fourth_generator_in_a_file_of_its_own_goes_through_the_whole_suite(tmp_path):
    """One new file (here in a folder named by PIX2PIX_GENERATORS): its setting is a flag, checked and
    swept (for it alone), the SLURM array counts it, a task trains it, and the report tables show it."""
    folder = tmp_path / "generators"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY_FILE)
    env = {**os.environ, "PIX2PIX_GENERATORS": str(folder)}

    # The registry, the config and the sweep's space, in a process that reads the folder.
    probe = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json
        from cluster import spaces
        from gan import models
        from gan.config import make_config
        space = spaces.build_space(["unet", "toy"], ["hparams"])
        print(json.dumps({"names": models.names(), "keys": sorted(space),
                          "tiny": make_config("tiny", {"model.generator": "toy"}).model.own.width}))
        """)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    seen = json.loads(probe.stdout)
    assert seen["names"][-1] == "toy" and seen["tiny"] == 4
    own = {k for k in seen["keys"] if k.startswith("model.") and k != "model.generator"}
    assert own == {f"model.unet.{k}" for k in models.generator("unet").space} | {"model.toy.width"}

    bad = run_cli("train.py", "--preset", "tiny", "--gens", "toy", "--model.toy.width", "0", "--out",
                  str(tmp_path / "x"), env={"PIX2PIX_GENERATORS": str(folder)}, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --model.toy.width: must be in [1, 64], got 0"

    # The SLURM array: one task per registered generator, the new one included.
    names = [*models.names(), "toy"]
    task = {**env, "SLURM_JOB_ID": "1", "PYTHON": sys.executable, "PRESET": "tiny", "OUT": str(tmp_path / "runs"),
            "SLURM_SUBMIT_DIR": str(ROOT)}
    short = subprocess.run(["bash", "slurm/train_all.sh"], env={**task, "SLURM_ARRAY_TASK_ID": "0",
                           "SLURM_ARRAY_TASK_MAX": str(len(names) - 2)}, capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    assert short.returncode == 2
    assert f"error: {len(names)} generators ({' '.join(names)}) x 1 seed(s) need --array=0-{len(names) - 1}" \
        in short.stderr
    last = str(len(names) - 1)
    done = subprocess.run(["bash", "slurm/train_all.sh"], env={**task, "SLURM_ARRAY_TASK_ID": last,
                          "SLURM_ARRAY_TASK_MAX": last, "EXTRA_ARGS": "--model.toy.width 3"},
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = tmp_path / "runs" / "slurm" / "toy"
    assert json.loads((run / "config.json").read_text())["config"]["model"]["toy"] == {"width": 3}

    # The report's tables read the run directory, with no generator registry at all.
    from analysis.runs import find_runs
    from analysis.tables import test_table
    table = test_table(find_runs(tmp_path / "runs")).set_index("generator")
    assert table.loc["toy", "ssim_mean"] == pytest.approx(pd.read_csv(run / "test_metrics.csv").ssim.mean())
