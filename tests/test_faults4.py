"""The fourth round of faults: each ends in one clear line with the right exit code and loses nothing, or
behaves correctly; for every generator where a generator is involved."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, run_cli
from gan import models

pytestmark = pytest.mark.slow


def one_error_line(done: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert done.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("gen", models.names())
def test_a_repaired_best_checkpoint_is_still_the_bar_the_next_evaluation_must_beat(tmp_path, gen):
    """eval.select best_val_feature_match, a checkpoint at every evaluation, three kept; the best checkpoint
    damaged, the run extended: the best intact checkpoint takes its place, the next evaluation is kept only
    if it beats that, the summary names one step, and best/ holds one checkpoint."""
    from gan.config import make_config
    from gan.train import train
    common = {"model.generator": gen, "eval.select": "best_val_feature_match", "train.eval_every": 2,
              "train.checkpoints_to_keep": 3}
    assert train(make_config("tiny", {**common, "train.steps": 8}), tmp_path) == 0
    run = tmp_path / "default" / gen
    best = run / "checkpoints" / "best"
    (data,) = best.glob("ckpt-*.data-*")
    first_best = int(data.name.split("-")[1].split(".")[0])
    data.write_bytes(data.read_bytes()[:100])
    assert train(make_config("tiny", {**common, "train.steps": 12}), tmp_path) == 0
    summary = json.loads((run / "summary.json").read_text())
    metrics = pd.read_csv(run / "metrics.csv")
    val = metrics[metrics.split == "val"].set_index("step").feature_match
    selected = summary["selected"]
    kept = sorted(int(p.name.split("-")[1].split(".")[0]) for p in best.glob("ckpt-*.index"))
    assert kept == [selected["step"]], (kept, selected)
    # The intact checkpoints at the repair: steps 4, 6 and 8 (three kept); the bar is the best of them.
    bar_step = max((4, 6, 8), key=lambda s: (val[s], -s))
    later = {s: val[s] for s in (10, 12)}
    expected = max([bar_step, *[s for s, v in later.items() if v > val[bar_step]]], key=lambda s: (val[s], -s))
    assert selected["step"] == expected and selected["value"] == pytest.approx(val[expected], abs=1e-6), (selected, val)
    assert f"(step {expected})" in selected["note"] and f"(step {first_best})" in selected["note"], selected


@pytest.mark.parametrize("gen", models.names())
def test_a_run_written_before_per_generator_settings_resumes_and_extends(tiny_runs, tmp_path, gen):
    """config.json with the earlier flat model fields (model.dropout, model.resnet_blocks, ...): the same
    run to a resume, which extends it."""
    from gan.config import make_config
    run = tmp_path / "cmp" / gen
    shutil.copytree(tiny_runs / "cmp" / gen, run)
    record = json.loads((run / "config.json").read_text())
    model = record["config"]["model"]
    own = {}
    for name in models.names():  # every generator's section, back to the flat names they had
        section = model.pop(name, {})
        for old, new in models.generator(name).aliases.items():
            if name == gen and new in section:
                own[old] = section[new]
    record["config"]["model"] = {**model, **own}
    (run / "config.json").write_text(json.dumps(record))
    assert make_config("tiny", {"model.generator": gen}).model.generator == gen
    done = run_cli("train.py", "--preset", "tiny", "--gens", gen, "--out", str(tmp_path), "--experiment", "cmp",
                   "--train.steps", "12")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "status.json").read_text())["step"] == 12


@pytest.mark.parametrize("gen", models.names())
def test_a_finished_run_run_again_says_so_without_starting_tensorflow(tiny_runs, tmp_path, gen):
    """The same command again on a finished run (a sweep run twice, a settle round's reused seed): one line,
    exit 0, the run's files unchanged but for the environment record, and no TensorFlow started (seconds
    for every reused trial)."""
    shutil.copytree(tiny_runs / "cmp" / gen, tmp_path / "cmp" / gen)
    tables = {p.name: p.read_bytes() for p in (tmp_path / "cmp" / gen).glob("*.csv")}
    done = subprocess.run([sys.executable, "-c", f"""
import sys
from gan.config import make_config
from gan.train import train
code = train(make_config("tiny", {{"model.generator": {gen!r}, "experiment": "cmp"}}), {str(tmp_path)!r})
print("exit", code, "tensorflow" in sys.modules)"""], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.splitlines()[-1] == "exit 0 False", done.stdout[-2000:] + done.stderr[-2000:]
    assert "already finished at step 8; nothing to do" in done.stdout
    assert {p.name: p.read_bytes() for p in (tmp_path / "cmp" / gen).glob("*.csv")} == tables


def test_a_crash_inside_tensorflows_import_shows_its_fatal_line_and_the_rerun_starts(tmp_path):
    """TensorFlow aborting while it is imported (as on a CPU without the instructions its wheel needs),
    here a stand-in package that prints start-up chatter and a FATAL line, then aborts: the job's stderr
    has the FATAL line and no chatter, exit 134; the folder it leaves (a lease, empty subfolders) does not
    block the same command once TensorFlow imports."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "os.write(2, b'I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine.\\n')\n"
        "os.write(2, b'F0000 00:00:1.0 1 cpu_feature_guard.cc:1] The TensorFlow library was compiled to use AVX "
        "instructions, but these are not available on your machine.\\n')\n"
        "os.abort()\n")
    args = ["train.py", "--gens", "hybrid", "--preset", "tiny", "--out", str(tmp_path / "out")]
    done = run_cli(*args, env={"PYTHONPATH": str(tmp_path / "fake")})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == -6, done.stderr
    assert lines == ["F0000 00:00:1.0 1 cpu_feature_guard.cc:1] The TensorFlow library was compiled to use AVX "
                     "instructions, but these are not available on your machine."], done.stderr
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.parametrize("args,message", [
    (["train.py", "--gens", "unet", "--model.resnet.blocks", "-5"],
     "error: --model.resnet.blocks: resnet is not among --gens unet; drop the flag or train resnet too"),
    (["train.py", "--gens", "resnet", "--model.resnet_blocks", "3", "--model.resnet.blocks", "4"],
     "error: --model.resnet_blocks and --model.resnet.blocks name the same setting; give one (--model.resnet.blocks)"),
    (["tune.py", "--gens", "unet", "--disk-limit", "nan"], "error: --disk-limit: a number of GB > 0, got nan"),
    (["tune.py", "--gens", "unet", "--disk-limit", "inf"], "error: --disk-limit: a number of GB > 0, got inf"),
    (["submit.py", "--gens", "unet", "--cluster", "local", "--model.hybrid.blocks", "2"],
     "error: --model.hybrid.blocks: hybrid is not among --gens unet"),
], ids=["other-generator", "twice-named", "nan-limit", "inf-limit", "submit-other-generator"])
def test_flags_that_would_be_ignored_or_recorded_unchecked_are_one_line(tmp_path, args, message):
    done = run_cli(*args, "--preset", "tiny", "--out", str(tmp_path / "out"), timeout=120)
    assert one_error_line(done).startswith(message)
    assert not (tmp_path / "out").exists()


def test_a_closed_stdout_pipe_neither_fails_a_run_nor_an_evaluation(tmp_path):
    """`jobs/train.py ... | head -1` and `jobs/evaluate.py ... | head -1`: the reader goes away, the job
    carries on to its end (exit 0), the run finished."""
    import subprocess
    for args in (["train.py", "--gens", "hybrid", "--preset", "tiny", "--out", str(tmp_path)],
                 ["evaluate.py", str(tmp_path / "default" / "hybrid"), "--split", "val"]):  # the run just trained
        proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / args[0]), *args[1:]], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.readline()
        proc.stdout.close()  # head -1 has what it wanted
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert "Broken pipe" not in err and "Traceback" not in err, err[-2000:]
    assert json.loads((tmp_path / "default" / "hybrid" / "status.json").read_text())["state"] == "finished"


def test_run_names_are_cut_between_values_never_inside_one():
    from cluster.plan import run_name
    values = {"model.generator": "hybrid", "model.hybrid.blocks": 9, "model.hybrid.downs": 3, "model.hybrid.dropout": 0.3,
              "optim.beta1": 0.5, "optim.l1_weight": 50.0, "optim.lr_d": 5.19e-05, "optim.lr_g": 0.000325}
    name = run_name(values)
    head, digest = name.rsplit("-", 1)
    assert len(head) <= 80 and len(digest) == 6
    parts = [f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
             for k, v in sorted(values.items()) if k != "model.generator"]
    assert any(head == "-".join(["hybrid", *parts[:k]]) for k in range(1, len(parts) + 1)), name
    assert "lr_g=0.-" not in name and name != run_name({**values, "optim.lr_g": 0.0003})


def test_a_replay_over_unreadable_or_no_runs_says_so(tmp_path, capsys):
    """analysis.settle over an empty folder and over a run whose summary.json is damaged: the notes say
    that no run counts and which run could not be read, beside the pending first look."""
    import shutil

    from analysis import settle
    plan = ROOT / "docs" / "results" / "settle" / "plan-control.json"
    (tmp_path / "empty").mkdir()
    assert settle.main(["--plan", str(plan), str(tmp_path / "empty")]) == 0
    err = capsys.readouterr().err
    assert f"note: no run under {tmp_path / 'empty'} counts for this plan" in err
    shutil.copytree(ROOT / "docs" / "results" / "seeds" / "unet-seed0", tmp_path / "runs" / "unet-seed0")
    (tmp_path / "runs" / "unet-seed0" / "summary.json").write_text("{trunc")
    assert settle.main(["--plan", str(plan), str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    assert f"unreadable: {tmp_path / 'runs' / 'unet-seed0'}" in err or "left out:" in err, err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unreachable_ray_address_is_one_line_in_seconds(tmp_path, how):
    """Nothing listens at the address (--address or RAY_ADDRESS): one line naming it, before Ray starts
    retrying for minutes, and nothing written."""
    import time
    args = ["tune.py", "--gens", "unet", "--preset", "tiny", "--out", str(tmp_path / "out")]
    t0 = time.time()
    done = run_cli(*args, *(["--address", "127.0.0.1:1"] if how == "flag" else []),
                   env={"RAY_ADDRESS": "127.0.0.1:1"} if how == "env" else None, timeout=120)
    assert one_error_line(done).startswith("error: --address 127.0.0.1:1: nothing answers at 127.0.0.1:1")
    assert time.time() - t0 < 60 and not (tmp_path / "out").exists()


def test_a_report_cut_off_by_a_full_disk_leaves_the_previous_one_and_nothing_half_written(tiny_runs, tmp_path):
    """The report is built beside its folder and moved into place at the end: a disk that fills while it is
    written is one line (exit 74), the previous report stays as it was, and no empty tables, figures or
    partial folders are left."""
    from services import fill, tmpfs
    with tmpfs(tmp_path / "disk", "size=16m", "a small filesystem for the disk-full test") as disk:
        out = disk / "report"
        first = run_cli("report.py", str(tiny_runs / "cmp"), "--no-notebook", "-o", str(out), timeout=300)
        assert first.returncode == 0, first.stderr[-2000:]
        before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        fill(disk / "filler")
        done = run_cli("report.py", str(tiny_runs / "cmp"), "--no-notebook", "-o", str(out), timeout=300)
        assert done.returncode == 74 and done.stderr.strip().splitlines()[-1].startswith("error: disk full"), \
            done.stderr[-2000:]
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "report"]


def test_a_disk_full_from_the_start_leaves_no_empty_folders(tiny_runs, tmp_path):
    """Training into, or translating onto, a disk with no space left is one line (exit 74) and leaves none of
    the folders it would have made (--out, the experiment, the run, --to)."""
    from conftest import make_pix2pix
    from services import fill, tmpfs
    labels = tmp_path / "labels"
    make_pix2pix(tmp_path / "pairs", counts=(1, 0, 0))
    labels.mkdir()
    shutil.copy(next((tmp_path / "pairs" / "train").iterdir()), labels / "a.jpg")
    with tmpfs(tmp_path / "disk", "size=1m", "a small filesystem for the disk-full test") as disk:
        fill(disk / "filler")
        trained = run_cli("train.py", "--gens", "unet", "--preset", "tiny", "--out", str(disk / "runs"),
                          "--experiment", "e1", timeout=300)
        assert trained.returncode == 74, trained.stderr[-2000:]
        assert trained.stderr.strip().splitlines()[-1].startswith("error: disk full"), trained.stderr[-2000:]
        translated = run_cli("evaluate.py", str(tiny_runs / "cmp" / "unet"), "--translate", str(labels),
                             "--to", str(disk / "photos" / "new"), timeout=300)
        assert translated.returncode == 74, translated.stderr[-2000:]
        assert translated.stderr.strip().splitlines()[-1].startswith("error: disk full"), translated.stderr[-2000:]
        assert [p.name for p in disk.iterdir()] == ["filler"]


@pytest.mark.slow
def test_ctrl_c_of_a_local_settle_driver_is_one_interruption_line_and_no_traceback(tmp_path):
    """Ctrl-C reaches the whole terminal group (the driver, submitit's local controllers, the trainers):
    the driver says "interrupted" with the command that continues (exit 75) and no controller prints a
    traceback onto the terminal."""
    import os
    import signal
    import time
    args = ["--gens", "unet,hybrid", "--settle", "--settle-metrics", "l1", "--margin", "l1=0.1", "--first-look", "2",
            "--cluster", "local",
            "--preset", "tiny", "--out", str(tmp_path / "runs"), "--logs", str(tmp_path / "logs"), "--experiment", "s"]
    driver = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "submit.py"), *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for line in driver.stdout:  # the round is submitted: its controllers and trainers run
            if line.startswith("submitted:"):
                break
        deadline = time.time() + 120
        while time.time() < deadline and len(list((tmp_path / "runs" / "s").glob("*/config.json"))) < 2:
            time.sleep(0.5)
        os.killpg(driver.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 75, out + err
    last = out.strip().splitlines()[-1]
    assert last.startswith("interrupted:") and last.endswith("--experiment s"), out  # the same command continues
    assert "Traceback" not in err, err


def test_an_interruption_after_the_finished_record_leaves_the_run_finished(tmp_path):
    """A Ctrl-C (or a closed pipe) at the very moment the run writes its last line: the exception goes on
    up, but status.json keeps saying "finished" (a sweep's resume and the comparison count it as done)."""
    from gan.config import make_config
    from gan.train import train

    def log(line: str) -> None:
        if ": finished " in line:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(make_config("tiny", {"model.generator": "unet"}), tmp_path, log=log)
    run = tmp_path / "default" / "unet"
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert (run / "summary.json").exists()


def test_a_run_killed_while_writing_its_first_config_is_started_by_the_same_command(tmp_path):
    """A trainer killed between creating its run folder and finishing config.json (a Ray trial's process
    taken down with its driver) leaves its lease, empty subfolders and the unfinished `.config.json.<8>`:
    no run yet, so the same command starts it and the unfinished write is removed. A folder holding
    anything else is still refused, untouched."""
    from conftest import tree_digest
    from gan.config import make_config
    from gan.errors import UserError
    from gan.rundir import RunDir
    cfg = make_config("tiny")
    run = RunDir(tmp_path / "unet")
    for folder in (run.samples, run.checkpoints, run.tensorboard):
        folder.mkdir(parents=True)
    run.lease.write_text("{}")
    (run.path / ".config.json.mktrt2s6").write_text('{"config": {"data"')
    assert run.prepare(cfg.to_dict(), cfg.flat()) is False  # a new run, not a resumed one
    assert json.loads(run.config.read_text())["config"] == cfg.to_dict()
    assert not list(run.path.glob(".config.json.*"))
    other = RunDir(tmp_path / "other")
    other.path.mkdir()
    (other.path / "notes.txt").write_text("mine")
    (other.path / ".config.json.abcd1234").write_text("{")
    before = tree_digest(other.path)
    with pytest.raises(UserError, match="holds no run"):
        other.prepare(cfg.to_dict(), cfg.flat())
    assert tree_digest(other.path) == before
