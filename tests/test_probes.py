"""Hostile probes, round three: nothing ships the wrong model, nothing leaks test photos into training,
nothing hangs. Each probe ends in one clear line with the right exit code, or behaves correctly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, make_pix2pix, run_cli, tree_digest

pytestmark = pytest.mark.slow


def one_error_line(done: subprocess.CompletedProcess, code: int = 2) -> str:
    errors = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert done.returncode == code and len(errors) == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    return errors[0]


def registered():
    from gan import models
    return models.names()


# -- 1, 2: the best checkpoint -------------------------------------------------------------------------

@pytest.mark.parametrize("gen", registered())
def test_a_damaged_best_checkpoint_is_replaced_and_evaluate_uses_the_tested_one(tmp_path, gen):
    from gan.config import make_config
    from gan.inference import restore_generator
    from gan.train import train
    cfg = make_config("tiny", {"model.generator": gen, "train.steps": 6, "train.eval_every": 2,
                               "train.checkpoints_to_keep": 3, "eval.select": "best_val_ssim"})
    assert train(cfg, tmp_path, log=lambda *_: None) == 0
    run = tmp_path / "default" / gen
    summary = json.loads((run / "summary.json").read_text())
    best_step = summary["selected"]["step"]
    # evaluate.py's default is the model the run's test was scored with, not the newest one.
    _, _, step = restore_generator(run, log=lambda *_: None)
    assert step == best_step
    assert restore_generator(run, last=True, log=lambda *_: None)[2] == 6
    assert restore_generator(run, step=best_step, log=lambda *_: None)[2] == best_step  # found in best/
    # Truncate the kept best checkpoint, then extend the run: it ends, tested with an intact checkpoint.
    for f in (run / "checkpoints" / "best").glob(f"ckpt-{best_step}.data*"):
        f.write_bytes(f.read_bytes()[:100])
    lines = []
    assert train(cfg.update({"train.steps": 8}).validate(), tmp_path, log=lines.append) == 0
    warning = [line for line in lines if "cannot be read; set aside" in line]
    assert len(warning) == 1, lines
    selected = json.loads((run / "summary.json").read_text())["selected"]
    assert "could not be read" in selected["note"] and selected["step"] in (4, 6, 8)
    assert list((run / "checkpoints" / "best").glob("*.damaged"))
    # A resume of a net without random layers says nothing about dropout's state.
    assert not any("dropout" in line for line in lines) or gen == "unet"
    assert train(cfg.update({"train.steps": 8}).validate(), tmp_path, log=lines.append) == 0  # stays fixed


def test_evaluate_step_of_a_best_checkpoint_and_a_missing_one(tiny_runs, tmp_path):
    done = run_cli("evaluate.py", str(tiny_runs / "cmp" / "unet"), "--step", "999", "--export", str(tmp_path / "x"))
    assert "--step 999: no checkpoint ckpt-999 in" in one_error_line(done)
    done = run_cli("evaluate.py", str(tiny_runs / "cmp" / "unet"), "--step", "-3", "--split", "val")
    assert one_error_line(done) == "error: --step: a checkpoint's step is >= 0, got -3"


@pytest.mark.parametrize("args,message", [
    (["--split", "val", "--data", "/nonexistent/cityscapes"], "--data /nonexistent/cityscapes: no such folder"),
    (["--split", "val", "--data", "cityscapes"], "--data cityscapes: not under "),
    (["--export", "x", "--data", "/tmp"], "--data: the dataset of --split"),
], ids=["missing-folder", "name-not-fetched", "without-split"])
def test_evaluate_refuses_a_dataset_it_cannot_use_before_tensorflow_starts(tmp_path, args, message):
    code = ("import json, sys\nfrom gan.errors import UserError\nimport jobs.evaluate as evaluate\n"
            f"sys.argv = ['evaluate.py', 'runs/default/unet', *{args!r}]\n"
            "try:\n    evaluate.parse_args()\n    error = ''\nexcept UserError as e:\n    error = str(e)\n"
            "print(json.dumps([error, 'tensorflow' in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PIX2PIX_DATA": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr[-2000:]
    error, tensorflow_loaded = json.loads(done.stdout)
    assert error.startswith(message) and not tensorflow_loaded, (error, tensorflow_loaded)


# -- 3: split files ------------------------------------------------------------------------------------

def split_file(tmp_path: Path, files: dict) -> str:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"files": files}))
    return str(path)


@pytest.mark.parametrize("files,message", [
    ({"train": ["train/000.jpg"], "val": ["val/008.jpg"], "test": ["train/001.jpg"]},
     "1 of its test images are in the dataset's training split (e.g. train/001.jpg)"),
    ({"train": ["train/000.jpg", "train/000.jpg"], "val": ["val/008.jpg"], "test": ["test/011.jpg"]},
     "1 images appear twice in the train list (e.g. train/000.jpg)"),
    ({"train": ["train/000.jpg"], "val": ["val/008.jpg"], "test": []}, "the test list is empty"),
    ({"train": ["train/000.jpg"], "val": ["val/008.jpg"], "test": ["val/008.jpg"]},
     "1 images are in both the val and the test list"),
    ({"train": ["train/000.jpg"], "val": [3], "test": ["test/011.jpg"]}, "holds something other than paths"),
], ids=["train-in-test", "repeated", "empty", "overlap", "not-paths"])
def test_a_split_file_cannot_leak_repeat_or_empty(tmp_path, files, message):
    from gan.config import make_config
    from gan.datasets.loader import load_dataset
    from gan.errors import UserError
    data = make_pix2pix(tmp_path / "data")
    cfg = make_config("tiny", {"data.source": str(data), "data.split_file": split_file(tmp_path, files)})
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(cfg)


# -- 4: copies of a run --------------------------------------------------------------------------------

def test_copies_of_runs_count_once_with_a_note(tiny_runs, tmp_path):
    from analysis.runs import find_runs
    from analysis.stats import seeds_per_generator
    from analysis.runs import test_frame
    for copy in ("a", "b", "c"):
        shutil.copytree(tiny_runs / "cmp", tmp_path / copy)
    runs = find_runs(tmp_path)
    assert len(runs) == len(registered())
    assert seeds_per_generator(test_frame(runs)) == 1
    assert len(runs.notes()) == len(registered()) and "counted once" in runs.notes()[0]
    # Another seed is not a copy.
    config = json.loads((tmp_path / "c" / "unet" / "config.json").read_text())
    config["config"]["train"]["seed"] = 7
    (tmp_path / "c" / "unet" / "config.json").write_text(json.dumps(config))
    assert len(find_runs(tmp_path)) == len(registered()) + 1
    done = subprocess.run([sys.executable, "-m", "analysis.tables", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "note: " in done.stderr and "counted once" in done.stderr


# -- 6, 7, 8, 11, 12: input checked before anything starts ----------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--cpus-per-trial", "0"], "--cpus-per-trial: must be > 0"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial: must be >= 0"),
    (["--max-failures", "-5"], "--max-failures: must be >= 0, got -5"),
    (["--then-seeds", "0"], "--then-seeds: at least 2 fresh seeds"),
    (["--then-seeds", "1"], "--then-seeds: at least 2 fresh seeds"),
    (["--seeds", "0"], "--seeds: must be >= 1"),
    (["--samples", "3"], "--samples 3: the space has nothing random to draw"),
    (["--train.seed", "-1"], "--train.seed: must be an integer from 0 to 2**32 - 1, got -1"),
    (["--data.split_seed", "-1"], "--data.split_seed: must be an integer from 0 to 2**32 - 1"),
    (["--experiment", "_tune"], "--experiment: '_tune' is not a valid folder name"),
    (["--experiment", ""], "--experiment: '' is not a valid folder name"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_tune_flags_are_checked_before_ray_starts(tmp_path, args, message):
    done = run_cli("tune.py", "--preset", "tiny", "--out", str(tmp_path), *args)
    assert message in one_error_line(done)
    assert not any(tmp_path.iterdir())


def test_a_bad_seed_or_name_leaves_no_folder(tmp_path):
    done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(tmp_path), "--train.seed", "-1")
    assert "--train.seed: must be an integer" in one_error_line(done)
    done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(tmp_path), "--run-name", "_tune")
    assert "--run-name: '_tune' is not a valid folder name" in one_error_line(done)
    assert not any(tmp_path.iterdir())


def test_translate_refuses_inputs_that_would_share_an_output(tiny_runs, tmp_path):
    import cv2

    from gan.datasets.synthetic import draw_scene
    labels = tmp_path / "labels"
    labels.mkdir()
    for ext in (".png", ".jpg"):
        cv2.imwrite(str(labels / f"x{ext}"), draw_scene(1, 0, 32)[1][:, :, ::-1])
    done = run_cli("evaluate.py", str(tiny_runs / "cmp" / "unet"), "--translate", str(labels), "--to",
                   str(tmp_path / "out"))
    assert "x.jpg and x.png would both become x.png" in one_error_line(done)
    assert not (tmp_path / "out").exists()


def test_sha256_is_checked_before_any_download(tmp_path):
    done = run_cli("get_data.py", "download", "cityscapes", "--root", str(tmp_path), "--sha256", "zz",
                   "--url", "http://127.0.0.1:9/never")
    assert "--sha256 'zz': not a SHA-256 digest" in one_error_line(done)


def test_export_is_refused_over_a_previous_export_and_under_a_file(tiny_runs, tmp_path):
    run = tiny_runs / "cmp" / "hybrid"
    (tmp_path / "afile").write_text("x")
    done = run_cli("evaluate.py", str(run), "--export", str(tmp_path / "afile" / "model"))
    line = one_error_line(done)
    assert line.startswith(f"error: --export {tmp_path / 'afile' / 'model'}: cannot write the SavedModel"), line
    assert (tmp_path / "afile").read_text() == "x"
    target = tmp_path / "model"
    assert run_cli("evaluate.py", str(run), "--export", str(target)).returncode == 0
    before = tree_digest(target)
    done = run_cli("evaluate.py", str(run), "--export", str(target))
    assert "holds files already (a previous export?); pass --overwrite" in one_error_line(done)
    assert tree_digest(target) == before
    done = run_cli("evaluate.py", str(run), "--export", str(target), "--overwrite")
    assert done.returncode == 0 and (target / "saved_model.pb").exists(), done.stderr[-2000:]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no staging left behind


def test_report_is_refused_inside_what_it_reads(tiny_runs, tmp_path):
    shutil.copytree(tiny_runs / "cmp", tmp_path / "cmp")
    before = tree_digest(tmp_path / "cmp")
    for out in (tmp_path / "cmp" / "report", tmp_path / "cmp" / "unet" / "report"):
        done = run_cli("report.py", str(tmp_path / "cmp" / "unet"), "-o", str(out), "--no-notebook")
        assert "--report " in one_error_line(done) and not out.exists()
    assert tree_digest(tmp_path / "cmp") == before


def test_a_trainer_pointed_at_a_segmenter_run_names_it(tmp_path):
    from gan.evaluators.segmenter import train_segmenter
    from gan.segmenter_config import make_segmenter_config
    seg = tmp_path / "segmenter" / "segmenter"
    # Any finished segmenter run will do (the refusal reads its config, not its weights): one epoch.
    assert train_segmenter(make_segmenter_config("tiny", {"train.epochs": 1}), tmp_path) == 0
    before = tree_digest(seg)
    done = run_cli("train.py", "--preset", "tiny", "--gens", "unet", "--out", str(tmp_path),
                   "--experiment", "segmenter", "--run-name", "segmenter")
    assert "holds a segmenter run, not a pix2pix run" in one_error_line(done)
    assert tree_digest(seg) == before


def test_a_damaged_summary_is_scored_again_not_called_finished(tiny_runs, tmp_path):
    from gan.config import make_config
    from gan.train import train
    shutil.copytree(tiny_runs / "cmp" / "resnet", tmp_path / "cmp" / "resnet")
    run = tmp_path / "cmp" / "resnet"
    good = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text("{trunc")
    lines = []
    cfg = make_config("tiny", {"model.generator": "resnet", "experiment": "cmp"})
    assert train(cfg, tmp_path, log=lines.append) == 0
    assert any("scoring the test split again" in line for line in lines), lines
    assert not any("nothing to do" in line for line in lines)
    again = json.loads((run / "summary.json").read_text())
    assert again["test"] == good["test"]  # the same checkpoint scored the same way
    assert not any("dropout" in line for line in lines)  # the ResNet has no dropout state to mention


# -- 9, 10: read-only and full filesystems ---------------------------------------------------------------

@pytest.fixture
def read_only_disk(tmp_path):
    from services import tmpfs
    with tmpfs(tmp_path / "ro", "size=4m", "a read-only filesystem for the write-failure test") as mount:
        (mount / "labels").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount


def test_write_failures_on_a_read_only_filesystem_are_one_line(tiny_runs, read_only_disk):
    run = tiny_runs / "cmp" / "hybrid"
    for args, flag in ((["train.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(read_only_disk / "runs")], "--out"),
                       (["report.py", str(tiny_runs / "cmp"), "-o", str(read_only_disk / "rep"), "--no-notebook"], "-o"),
                       (["evaluate.py", str(run), "--export", str(read_only_disk / "model")], "--export")):
        done = run_cli(*args)
        assert done.returncode in (2, 74), done.stderr[-2000:]
        line = [x for x in done.stderr.splitlines() if x.startswith("error:")]
        assert len(line) == 1 and "Read-only file system" in line[0] and "Traceback" not in done.stderr, done.stderr


@pytest.fixture
def full_disk(tmp_path):
    from services import fill, tmpfs
    with tmpfs(tmp_path / "full", "size=2m", "a full filesystem for the disk-full test") as mount:
        fill(mount / "filler")
        yield mount


def test_a_disk_full_at_start_is_exit_74_and_leaves_no_empty_run(tiny_runs, full_disk):
    done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(full_disk / "runs"))
    assert one_error_line(done, 74).startswith("error: disk full: ")
    assert not (full_disk / "runs" / "default" / "hybrid").exists()
    done = run_cli("report.py", str(tiny_runs / "cmp"), "-o", str(full_disk / "rep"), "--no-notebook")
    assert one_error_line(done, 74).startswith("error: disk full: ")


# -- 13: figures at scale ------------------------------------------------------------------------------

def test_figures_stay_readable_over_hundreds_of_runs(tiny_runs, tmp_path):
    import cv2

    from analysis.report import build_report
    root = tmp_path / "many"
    for i in range(120):  # distinct seeds of each generator: every one a run of its own
        for gen in registered():
            target = root / f"{gen}-seed{i}"
            shutil.copytree(tiny_runs / "cmp" / gen, target, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
            config = json.loads((target / "config.json").read_text())
            config["config"]["train"]["seed"] = i
            (target / "config.json").write_text(json.dumps(config))
    build_report([root], tmp_path / "report", notebook=False)
    for png in (tmp_path / "report" / "figures").glob("*.png"):
        height, width = cv2.imread(str(png)).shape[:2]
        assert height <= 2500 and width <= 2500, (png.name, width, height)
    table = pd.read_csv(tmp_path / "report" / "tables" / "runs.csv")
    assert len(table) == 120 * len(registered())


@pytest.mark.parametrize("plan", ['{"settle": [1, 2]}', '{"settle": {"generators": "x"}}', "{trunc", None],
                         ids=["wrong-shape", "bad-plan", "truncated", "no-plan"])
def test_the_three_way_verdict_survives_a_damaged_sweep_file(tiny_runs, tmp_path, plan, capsys):
    from analysis.report import build_report
    root = tmp_path / "two-seeds"
    for gen in registered():
        for seed in (0, 1):  # a second seed: another run, not a copy
            target = root / f"{gen}-seed{seed}"
            shutil.copytree(tiny_runs / "cmp" / gen, target, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
            config = json.loads((target / "config.json").read_text())
            config["config"]["train"]["seed"] = seed
            (target / "config.json").write_text(json.dumps(config))
    if plan is not None:
        (root / "_tune_args.json").write_text(plan)
    build_report([root], tmp_path / "report", notebook=False)
    table = pd.read_csv(tmp_path / "report" / "tables" / "three_way.csv")
    assert set(table.outcome) <= {"better", "equivalent", "open", "uninformative", "worse"} and (table.seeds == 2).all()
    n = len(registered())
    # Every pair, then every generator against the control its runs recorded, on every metric.
    assert len(table) == (n * (n - 1) // 2 + n) * table.metric.nunique() and (table.b == "control").sum() == n * table.metric.nunique()
    if plan is not None:
        assert "the verdict takes one look at the seeds there" in capsys.readouterr().err


# -- the cluster's GPUs and nodes ----------------------------------------------------------------------

def test_a_gpu_given_but_not_visible_is_one_line_unless_cpu_is_allowed(tmp_path):
    args = ["train.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(tmp_path)]
    done = run_cli(*args, env={"CUDA_VISIBLE_DEVICES": "0"})  # what SLURM's --gres or Ray sets; no GPU here
    line = one_error_line(done)
    assert "given GPU(s) (CUDA_VISIBLE_DEVICES=0) but TensorFlow sees none" in line and "PIX2PIX_ALLOW_CPU=1" in line
    assert not any(tmp_path.iterdir())  # refused before the run directory is touched
    done = run_cli(*args, env={"CUDA_VISIBLE_DEVICES": "0", "PIX2PIX_ALLOW_CPU": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert run_cli(*args, env={"CUDA_VISIBLE_DEVICES": "-1"}).returncode == 0  # "no GPU" said explicitly


def test_a_trial_no_node_can_hold_is_refused_not_waited_for(tmp_path):
    done = run_cli("tune.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(tmp_path / "out"),
                   "--cpus-per-trial", "64")
    assert "--cpus-per-trial 64 --gpus-per-trial 0: no node of the cluster has that much" in one_error_line(done)
    assert not (tmp_path / "out").exists()


def test_the_report_says_which_generators_have_one_run_and_what_its_marks_rest_on():
    from analysis.report import TITLES, _html, evidence_sentence
    sentence = evidence_sentence(pd.DataFrame(), "", single=["hybrid"], generators=2)
    assert sentence.startswith("hybrid has one trained run") and "One trained run per generator" not in sentence
    assert evidence_sentence(pd.DataFrame(), "", single=["hybrid", "unet"], generators=2).startswith("One trained run")
    frame = pd.DataFrame([{"generator": "unet", "ssim": "**0.5**"}])
    page = _html([], {"study_marked": frame, "run_level": frame}, {})
    assert "at the run level (Welch over the seeds' means" in page and TITLES["study_marked"] not in page
    assert "paired Wilcoxon" in _html([], {"study_marked": frame}, {})


def test_a_corrupt_png_prints_no_opencv_error_line(tiny_runs, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    done = run_cli("evaluate.py", str(tiny_runs / "cmp" / "unet"), "--translate", str(labels), "--to", str(tmp_path / "o"))
    assert one_error_line(done).startswith(f"error: {labels / 'a.png'}")
    assert "[ERROR" not in done.stderr + done.stdout and "libpng" not in done.stderr + done.stdout


def test_a_sweep_past_its_disk_limit_is_refused_before_ray_starts(tmp_path):
    """The estimate (trials x checkpoints kept x the largest checkpoint) is checked against --disk-limit
    (default: the free space), in one line, before anything is written."""
    from gan.config import make_config
    from gan.models import build_discriminator, build_generator
    done = run_cli("tune.py", "--gens", "unet,hybrid", "--preset", "tiny", "--seeds", "2", "--out", str(tmp_path / "out"),
                   "--disk-limit", "0.0001", timeout=300)
    line = one_error_line(done)
    assert done.returncode == 2 and line.startswith("error: --disk-limit: this sweep writes up to "), line
    biggest = 0
    for gen in ("unet", "hybrid"):
        cfg = make_config("tiny", {"model.generator": gen}).model
        nets = (build_generator(cfg, 32), build_discriminator(cfg, 32))
        biggest = max(biggest, 4 * sum(3 * w.numpy().size if w.trainable else w.numpy().size
                                       for net in nets for w in net.weights))
    # 4 trials x 3 checkpoints (two kept, one more while the next is written) of the larger net
    assert f"(4 trials x up to 3 checkpoints of <= {biggest / 1e9:.3g} GB)" in line
    assert not (tmp_path / "out").exists()
