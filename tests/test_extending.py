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
from gan.config import make_config
from gan.dotted import ConfigError
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
        "toy", build_toy, summary="two convs", order=1000,
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
    in_repo = {p.stem for p in (ROOT / "gan" / "models" / "generators").glob("*.py") if p.stem != "__init__"}
    assert models.names()[:3] == ("unet", "resnet", "hybrid") and models.names()[-1] == "toy"
    assert set(models.names()) == in_repo | {"toy"} and models.names() == tuple(generator_list("all"))
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


GOOD_TOY = """
from dataclasses import dataclass
from gan.models.registry import Generator

@dataclass
class Settings:
    width: int = 8

def build(cfg, size):
    raise NotImplementedError

TOYNET = Generator("toynet", build, Settings, presets={PRESETS}, space={SPACE})
"""


@pytest.mark.parametrize("content,where,message", [
    ("def build(cfg, size):\n    return (\n", "bad.py", "cannot be loaded (SyntaxError"),
    (GOOD_TOY.replace("toynet", "unet").replace("{PRESETS}", "{}").replace("{SPACE}", "{}"), "bad.py",
     "ValueError: generator 'unet' is already registered (by gan/models/generators/unet.py)"),
    (GOOD_TOY.replace("{PRESETS}", '{"tiny": {"widht": 2}}').replace("{SPACE}", "{}"), "bad.py",
     "preset 'tiny' sets 'widht', which is not one of its settings (width)"),
    (GOOD_TOY.replace("{PRESETS}", '{"tinny": {"width": 2}}').replace("{SPACE}", "{}"), "bad.py",
     "preset 'tinny' is not a preset"),
    (GOOD_TOY.replace("{PRESETS}", "{}").replace("{SPACE}", '{"depth": {"choice": [1, 2]}}'), "bad.py",
     "its search space names 'depth', which is not one of its settings"),
    (None, "", "$PIX2PIX_GENERATORS {folder}/missing: not a folder of generator modules"),
], ids=["syntax", "clash", "preset-setting", "preset-name", "space", "missing-folder"])
@pytest.mark.parametrize("job", [["train.py", "--gens", "unet", "--preset", "tiny", "--out", "{tmp}/out"],
                                 ["tune.py", "--gens", "unet", "--out", "{tmp}/out"],
                                 ["evaluate.py", "{run}", "--split", "test"]], ids=["train", "tune", "evaluate"])
def test_a_broken_generator_plug_in_is_one_line_naming_its_file_in_every_job(tiny_runs, tmp_path, content, where,
                                                                             message, job):
    """A generator file with a syntax error, a name a built-in has, a misspelled preset setting or preset
    name, a search space over a setting it lacks, or a folder that is not there: every job ends in one
    `error:` line naming the file (exit 2), also for jobs about another generator."""
    folder = tmp_path / "plug"
    folder.mkdir()
    if content is not None:
        (folder / where).write_text(content)
    named = folder if content is not None else folder / "missing"
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(tiny_runs / "cmp" / "unet")) for a in job]
    done = run_cli(*args, env={"PIX2PIX_GENERATORS": str(named)}, timeout=120)
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    expected = message.replace("{folder}", str(folder))
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    if content is not None:
        assert str(folder / where) in lines[0]


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


    TOY = register(Generator("toy", build, Settings, summary="two convs", order=1000,
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
    beyond = subprocess.run(["bash", "slurm/train_all.sh"], env={**task, "SLURM_ARRAY_TASK_ID": str(len(names))},
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert beyond.returncode == 2
    assert f"error: task {len(names)}: {len(names)} generators ({' '.join(names)}) x 1 seed(s) are tasks " \
        f"0-{len(names) - 1}" in beyond.stderr
    last = str(len(names) - 1)
    done = subprocess.run(["bash", "slurm/train_all.sh"], env={**task, "SLURM_ARRAY_TASK_ID": last,
                          "EXTRA_ARGS": "--model.toy.width 3"},
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = tmp_path / "runs" / "slurm" / "toy"
    assert json.loads((run / "config.json").read_text())["config"]["model"]["toy"] == {"width": 3}
    # Without the folder the generator is unknown: one line that says where generators are found.
    lost = run_cli("evaluate.py", str(run), "--split", "test", env={"PIX2PIX_GENERATORS": ""}, timeout=120)
    assert lost.returncode == 2 and lost.stderr.strip().splitlines() == [
        f"error: unknown generator 'toy' (registered: {', '.join(models.names())}; a generator from a folder of your "
        "own is found through $PIX2PIX_GENERATORS)"], lost.stderr[-2000:]

    # The report's tables read the run directory, with no generator registry at all.
    from analysis.runs import find_runs
    from analysis.tables import test_table
    table = test_table(find_runs(tmp_path / "runs")).set_index("generator")
    assert table.loc["toy", "ssim_mean"] == pytest.approx(pd.read_csv(run / "test_metrics.csv").ssim.mean())


def test_a_discriminator_in_a_plug_in_file_trains_and_an_unknown_one_is_one_line(tmp_path):
    """A discriminator is declared as a module value like a generator (gan/models/patchgan.py's PATCHGAN):
    one in the plug-in folder trains with --model.discriminator; a name nobody registered is one line."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "onelayer.py").write_text(textwrap.dedent('''
        """A one-conv discriminator: 16x16 logits at 32 px."""
        from gan.models.registry import Discriminator


        def build(cfg, size):
            import keras
            from keras import layers
            inp, tar = layers.Input([size, size, 3]), layers.Input([size, size, 3])
            x = layers.Conv2D(1, 4, strides=2, padding="same")(layers.Concatenate()([inp, tar]))
            return keras.Model([inp, tar], x, name="onelayer")


        ONELAYER = Discriminator("onelayer", build, summary="one conv")
    '''))
    env = {"PIX2PIX_GENERATORS": str(folder)}
    done = run_cli("train.py", "--gens", "unet", "--preset", "tiny", "--model.discriminator", "onelayer",
                   "--out", str(tmp_path / "runs"), env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "runs" / "default" / "unet" / "config.json").read_text())["config"]
    assert config["model"]["discriminator"] == "onelayer"
    done = run_cli("train.py", "--gens", "unet", "--preset", "tiny", "--model.discriminator", "nosuch",
                   "--out", str(tmp_path / "runs2"), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == "error: --model.discriminator: unknown discriminator 'nosuch' (choose from patchgan)"


def test_one_registry_helper_checks_and_names_for_every_kind():
    """Generators, discriminators and metrics are each a gan/registry.py Registry: a record with a name
    taken is refused naming the file that took it; an unknown name lists the registered ones."""
    from gan.errors import UserError
    from gan.evaluators.metrics import METRICS
    from gan.registry import Registry
    assert all(isinstance(r, Registry) for r in (models.GENERATORS, models.DISCRIMINATORS, METRICS))
    with pytest.raises(ValueError, match=r"generator 'unet' is already registered \(by gan/models/generators/unet.py\)"):
        models.register(models.Generator("unet", build_toy))
    with pytest.raises(ValueError, match="metric 'ssim' is already registered"):
        register_metric(Metric("ssim", lambda g, r: 0.0))
    with pytest.raises(UserError, match=r"unknown discriminator 'x' \(registered: patchgan;"):
        models.DISCRIMINATORS.lookup("x")
    assert models.DISCRIMINATORS.where("patchgan") == "gan/models/patchgan.py"
