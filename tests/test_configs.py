"""Experiment files (jobs/configs/, `--config FILE`): each is read by the launchers it names, the study's
tracks mean exactly the command lines they replace, flags typed beside a file win, and a broken file is
one line naming it."""

from __future__ import annotations


import pytest

from conftest import ROOT, run_cli
from jobs import submit, tune

CONFIGS = sorted((ROOT / "jobs" / "configs").glob("*.py"))

# The command lines docs/results.md gave before its tracks became files: a file must mean the same.
SPELLED_OUT = {
    "study.py": "--gens all --settle --settle-metrics hist_corr,template_match,feature_match,ssim --preset cityscapes_cpu "
                "--data cityscapes --data.split_file docs/results/split.json --eval.segmenter runs/segmenter/segmenter "
                "--experiment settle --report reports/settle",
    "study_fcn.py": "--gens all --settle --settle-metrics fcn_pixel_acc --margin fcn_pixel_acc=0.0311 --first-seed 5 "
                    "--preset cityscapes_cpu --data cityscapes --data.split_file docs/results/split.json "
                    "--eval.segmenter runs/segmenter/segmenter --experiment settle-fcn",
    "budget.py": "--gens all --sweep hparams,aug --samples 3 --scheduler asha --metric val_fcn_iou --then-seeds 2 "
                 "--preset cityscapes_cpu --train.steps 400 --train.eval_every 200 --data cityscapes "
                 "--data.split_file docs/results/split.json --eval.segmenter runs/segmenter/segmenter "
                 "--eval.fcn_every_eval true --experiment budget --report reports/budget",
    "demo.py": "--gens all --preset small --report reports",
}


def parsed(parse, argv: list[str]) -> tuple[dict, dict]:
    from gan.cli import parse_overrides
    args, extra = parse(argv)
    return {k: v for k, v in vars(args).items() if k not in ("config", "from_config")}, parse_overrides(extra)


@pytest.mark.parametrize("name", sorted(SPELLED_OUT))
def test_a_study_track_file_means_the_command_line_it_replaces(name):
    assert parsed(tune.parse_args, ["--config", str(ROOT / "jobs" / "configs" / name)]) == \
        parsed(tune.parse_args, SPELLED_OUT[name].split())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_experiment_file_is_read_by_the_launchers_it_names(path):
    """Each file's docstring names the commands that take it; each of those reads every key of it."""
    text = path.read_text()
    assert text.startswith('"""') and "get_config" in text
    launchers = [p for p in (tune, submit) if f"jobs/{p.__name__.split('.')[-1]}.py --config" in text]
    assert launchers, f"{path.name}: its docstring names no command that takes it"
    for launcher in launchers:
        args, _ = launcher.parse_args(["--config", str(path)])
        assert args.from_config


def test_the_results_page_reproduces_each_track_in_one_line():
    page = (ROOT / "docs" / "results.md").read_text()
    for name in ("study.py", "study_fcn.py", "variance.py", "budget.py"):
        assert f"jobs/tune.py --config jobs/configs/{name}" in page, name


def test_a_file_drives_a_launch_and_flags_typed_beside_it_win(tmp_path):
    """submit.py on local processes from a file (the generator, the preset, two seeds, a field), with the
    field and the seeds overridden on the command line."""
    import json
    config = tmp_path / "mine.py"
    config.write_text('def get_config():\n    return {"gens": "hybrid", "preset": "tiny", "seeds": 3, '
                      '"train.steps": 2, "train.eval_every": 2, "experiment": "fromfile"}\n')
    done = run_cli("submit.py", "--config", str(config), "--seeds", "2", "--train.steps", "4", "--cluster", "local",
                   "--out", str(tmp_path / "runs"), "--logs", str(tmp_path / "logs"), "--wait", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = sorted(p.name for p in (tmp_path / "runs" / "fromfile").iterdir())
    assert runs == ["hybrid-seed0", "hybrid-seed1"]
    steps = {json.loads((tmp_path / "runs" / "fromfile" / r / "config.json").read_text())["config"]["train"]["steps"]
             for r in runs}
    assert steps == {4}


@pytest.mark.parametrize("content,message", [
    (None, "--config {path}: no such file"),
    ("{}", "--config {path}: an experiment file is a Python file (.py)"),
    ("def get_config(:\n", "--config {path}: cannot be read (SyntaxError"),
    ("def get_config():\n    return {'gens': 'unet', 'colour': 'red'}\n", "--config {path}: 'colour' is not a flag of this command"),
    ("def get_config():\n    return {'margin': 'ssim=0.1'}\n", "--config {path}: margin takes a list"),
    ("def get_config():\n    return {'gens': ['unet']}\n", "--config {path}: gens takes a string, got ['unet']"),
    ("def get_config():\n    return {'seeds': 2.5}\n", "--config {path}: seeds takes a whole number, got 2.5"),
    ("def get_config():\n    return {'settle': 'yes'}\n", "--config {path}: settle takes true or false"),
    ("def get_config():\n    return {'scheduler': 'pbt'}\n", "--config {path}: scheduler takes one of fifo, asha"),
    ("def get_config():\n    raise SystemExit(3)\n", "--config {path}: cannot be read (SystemExit"),
    ("def get_config():\n    return ['gens']\n", "--config {path}: get_config() must return a dict"),
    ("def get_config():\n    return {'optim.lr_g': 'fast'}\n", "--optim.lr_g: expected float, got 'fast'"),
])
@pytest.mark.parametrize("command", ["tune.py", "train.py"])
def test_a_broken_experiment_file_is_one_line_naming_it(tmp_path, command, content, message):
    path = tmp_path / "exp.py"
    if content == "{}":  # JSON, not an experiment file
        path = tmp_path / "exp.json"
    if content is not None:
        path.write_text(content)
    import re
    key = re.search(r"\{'(\w+)'", content or "")
    if command == "train.py" and key and key.group(1) in ("margin", "seeds", "settle", "scheduler"):
        message = f"--config {{path}}: '{key.group(1)}' is not a flag of this command"  # the trainer has none
    done = run_cli(command, "--config", str(path), "--out", str(tmp_path / "runs"), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") \
        and message.format(path=path) in lines[0], done.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_with_the_file_that_started_it_is_not_a_change_of_plan():
    from cluster.sweep_plan import refuse_plan_flags_on_resume
    from gan.errors import UserError
    args, _ = tune.parse_args(["--config", str(ROOT / "jobs" / "configs" / "study_fcn.py"), "--resume"])
    refuse_plan_flags_on_resume(args)  # the file's own --margin and --first-seed: the plan it stored
    args, _ = tune.parse_args(["--config", str(ROOT / "jobs" / "configs" / "study_fcn.py"), "--resume",
                               "--first-seed", "6"])
    with pytest.raises(UserError, match="--first-seed cannot change it"):
        refuse_plan_flags_on_resume(args)
