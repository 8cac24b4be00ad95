"""Fault injection (issue 11): two trainers on one run, damaged checkpoints, Ctrl-C during an evaluation,
damaged JSON, empty images, odd output paths. Each ends in one clear line, and nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, assert_exact_rows, make_pix2pix, run_cli, tree_digest
from gan.models import names

pytestmark = pytest.mark.slow

TINY = ["--preset", "tiny", "--gens", "hybrid"]


def start_train(out: Path, *extra: str) -> subprocess.Popen:
    """jobs/train.py in its own process group (as a terminal or scancel would signal it)."""
    return subprocess.Popen([sys.executable, str(ROOT / "jobs" / "train.py"), *TINY, "--out", str(out), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def train_here(out: Path, fields: dict) -> tuple[int, str]:
    """The run `jobs/train.py` with TINY makes, trained in this process (for runs no signal reaches): its exit
    code and the lines it said."""
    from gan.config import make_config
    from gan.train import train
    said: list[str] = []
    code = train(make_config("tiny", {"model.generator": "hybrid", **fields}), out, log=said.append)
    return code, "\n".join(said)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def rows(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def one_error_line(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def test_second_trainer_is_refused_and_a_stale_lease_taken_over(tmp_path):
    first = start_train(tmp_path, "--train.steps", "6000", "--train.eval_every", "50")
    run = tmp_path / "default" / "hybrid"
    wait_for(lambda: rows(run / "metrics.csv") >= 2, first)
    done = run_cli("train.py", *TINY, "--out", str(tmp_path), "--train.steps", "6000", "--train.eval_every", "50")
    line = one_error_line(done)
    assert f"in use by another trainer (pid {first.pid} on {socket.gethostname()}" in line, line
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 75
    # Nothing was written twice.
    metrics = pd.read_csv(run / "metrics.csv")
    assert not metrics.duplicated(["step", "split"]).any()
    assert not (run / "lease.json").exists()  # released on exit
    # A lease left by a process that is gone (kill -9 leaves one) is taken over, with a note.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "lease.json").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "token": "x",
                                                "heartbeat": time.time()}))
    steps = (json.loads((run / "status.json").read_text())["step"] // 50 + 2) * 50
    code, said = train_here(tmp_path, {"train.steps": steps, "train.eval_every": 50})
    assert code == 0 and f"took over the lease of a trainer that is gone (pid {dead.pid}" in said, said
    assert_exact_rows(run, steps, 50)


@pytest.mark.parametrize("damage", ["truncate_data", "garbage_index"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny_runs, tmp_path, damage):
    import shutil
    args = [*TINY, "--out", str(tmp_path), "--experiment", "default", "--train.eval_every", "4"]
    shutil.copytree(tiny_runs / "cmp" / "hybrid", tmp_path / "default" / "hybrid")  # 8 steps: ckpt-4 and ckpt-8
    config = json.loads((tmp_path / "default" / "hybrid" / "config.json").read_text())
    config["config"]["experiment"] = "default"
    (tmp_path / "default" / "hybrid" / "config.json").write_text(json.dumps(config))
    ckpts = tmp_path / "default" / "hybrid" / "checkpoints"
    if damage == "truncate_data":
        data = next(ckpts.glob("ckpt-8.data-*"))
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    else:
        (ckpts / "ckpt-8.index").write_bytes(b"\x00garbage" * 10)
    # jobs/evaluate.py skips it (read-only) and says so.
    done = run_cli("evaluate.py", str(tmp_path / "default" / "hybrid"), "--split", "val")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"checkpoint {ckpts / 'ckpt-8'} cannot be restored" in done.stdout and "step 4, val" in done.stdout
    assert "using the older checkpoint" in done.stdout and "redone" not in done.stdout  # not training's wording
    # Training on: resumes at step 4 with a warning, sets the damaged files aside, redoes 5..12 exactly.
    done = run_cli("train.py", *args, "--train.steps", "12")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from the older checkpoint" in done.stdout and "at step 4/12" in done.stdout, done.stdout
    assert list(ckpts.glob("ckpt-8.*.damaged"))
    assert "deprecat" not in (done.stdout + done.stderr).lower()  # the checkpoint state is written by us
    assert_exact_rows(tmp_path / "default" / "hybrid", 12, 4)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR2], ids=["ctrl-c", "submitit-usr2"])
def test_a_signal_to_the_process_group_during_evaluations_preempts(tmp_path, sig):
    """Metric workers ignore the stop signals; the trainer checkpoints and exits 75 (not a broken pool).
    SIGUSR2 is submitit's preemption warning: the trainer stops on it too, so that submitit's own handler
    never exits from inside a checkpoint write (seen as a failed job in the SLURM round trip)."""
    proc = start_train(tmp_path, "--train.steps", "4000", "--train.eval_every", "2", "--eval.workers", "2",
                       "--data.n_val", "8")
    run = tmp_path / "default" / "hybrid"
    wait_for(lambda: rows(run / "metrics.csv") >= 4, proc)  # the pool's workers exist from the first evaluation
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "preempted" and sig.name in status["message"]
    assert "BrokenProcessPool" not in out


def test_damaged_json_is_named_and_the_report_skips_what_it_cannot_read(tiny_runs, tmp_path):
    import shutil
    root = tmp_path / "runs"
    for gen in names():
        shutil.copytree(tiny_runs / "cmp" / gen, root / "cmp" / gen)
    config = root / "cmp" / "resnet" / "config.json"
    config.write_text(config.read_text()[:40])  # truncated
    status = root / "cmp" / "hybrid" / "status.json"
    (root / "segmenter" / "segmenter").mkdir(parents=True)  # another kind of run beside them
    (root / "segmenter" / "segmenter" / "config.json").write_text(json.dumps({"kind": "segmenter", "config": {}}))
    done = run_cli("report.py", str(root), "-o", str(tmp_path / "report"), "--no-notebook")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"skipped: {config}: not valid JSON" in done.stderr
    assert "not a pix2pix run (config.json kind: segmenter)" in done.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Skipped" in page and "| unet |" in done.stdout and "| resnet |" not in done.stdout
    tables = subprocess.run([sys.executable, "-m", "analysis.tables", str(root)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert tables.returncode == 0 and "| hybrid |" in tables.stdout and "skipped:" in tables.stderr
    # The trainer names the damaged file, exit 2, and leaves the run as it is.
    status.write_text("{\"state\": ")
    before = tree_digest(root / "cmp" / "hybrid")
    done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--experiment", "cmp", "--out", str(root))
    assert one_error_line(done).startswith(f"error: {status}: not valid JSON")
    assert tree_digest(root / "cmp" / "hybrid") == before


def test_empty_image_files_are_named(tiny_runs, tmp_path):
    root = make_pix2pix(tmp_path / "ds")
    empty = root / "train" / "002.jpg"
    empty.write_bytes(b"")
    done = run_cli("train.py", *TINY, "--data", str(root), "--out", str(tmp_path / "out"))
    assert one_error_line(done) == f"error: {empty}: empty file (0 bytes)"
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.png").write_bytes((root / "val" / "008.jpg").read_bytes())
    (labels / "b.png").write_bytes(b"")
    done = run_cli("evaluate.py", str(tiny_runs / "cmp" / "hybrid"), "--translate", str(labels),
                   "--to", str(tmp_path / "photos"))
    assert one_error_line(done) == f"error: {labels / 'b.png'}: empty file (0 bytes)"
    assert not (tmp_path / "photos").exists()  # nothing half-written


def test_odd_output_paths_and_names(tmp_path):
    (tmp_path / "file").write_text("x")
    done = run_cli("train.py", *TINY, "--out", str(tmp_path / "file" / "runs"))
    assert "cannot create the run directory" in one_error_line(done)
    done = run_cli("train.py", *TINY, "--out", str(tmp_path), "--run-name", "..")
    assert one_error_line(done).startswith("error: --run-name: '..' is not a valid folder name")


def test_run_files_follow_the_umask(tmp_path):
    assert train_here(tmp_path, {"train.steps": 4})[0] == 0  # the umask is the process's, here as in a job
    for name in ("config.json", "status.json", "metrics.csv", "timings.csv", "summary.json"):
        mode = stat.S_IMODE((tmp_path / "default" / "hybrid" / name).stat().st_mode)
        assert mode == 0o666 & ~_umask(), (name, oct(mode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("space,args,message", [
    ({"optim.lr_g": {"grid": ["fast", "slow"]}}, [], "--space: optim.lr_g = 'fast' (unet): expected float"),
    ({"model.hybrid.blocks": {"grid": [6.5, 9]}}, [], "--space: model.hybrid.blocks = 6.5 (hybrid): expected int"),
    ({"data.image_size": {"grid": [32, 33]}}, [], "--space: data.image_size = 33 (unet): 33 is not a power of two"),
    ({"optim.lr_g": {"loguniform": ["a", 5e-4]}}, [], "--space: optim.lr_g: loguniform needs [low, high], two finite"),
    ({"optim.lr_g": {"loguniform": [5e-4, -1]}}, [], "--space: optim.lr_g: loguniform needs low < high"),
    ({"model.hybrid_downs": {"choice": [3, 6]}}, [], "--space: model.hybrid.downs = 6 (hybrid): 6 down blocks"),
    ({"model.unet.dropout": {"choice": [0.0]}}, ["--gens", "resnet"],
     "--space: model.unet.dropout is a setting of unet, which this sweep does not train (--gens resnet)"),
    ({}, ["--samples", "0"], "--samples: must be >= 1, got 0"),
    ({}, ["--metric", "nosuch"], "--metric: 'nosuch' is not reported by the trials"),
], ids=["word-for-float", "fraction-for-int", "bad-size", "word-in-range", "reversed-range", "per-generator",
        "no-samples", "unknown-metric", "other-generators-setting"])
def test_tune_space_values_are_checked_before_ray_starts(tmp_path, space, args, message):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    done = run_cli("tune.py", "--gens", "unet,hybrid", "--preset", "tiny", "--space", str(path), *args,
                   "--out", str(tmp_path / "out"), timeout=120)
    assert one_error_line(done).startswith(f"error: {message}"), done.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # nothing written, Ray never started


@pytest.mark.parametrize("content", ["[1, 2]", '{"space": {"model.generator": {"grid": ["unet"]}}}', "{trunc"],
                         ids=["wrong-shape", "older-version", "truncated"])
def test_tune_resume_refuses_a_sweep_file_it_did_not_write(tmp_path, content):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "_tune_args.json").write_text(content)
    done = run_cli("tune.py", "--out", str(tmp_path), "--experiment", "sweep", "--resume", timeout=120)
    assert done.returncode == 2 and one_error_line(done).startswith(f"error: {tmp_path / 'sweep' / '_tune_args.json'}"), \
        done.stderr[-2000:]
    assert (tmp_path / "sweep" / "_tune_args.json").read_text() == content  # left as it was


def test_tune_refuses_a_second_driver_and_a_different_sweep_in_one_experiment(tmp_path):
    """The command typed twice: the second driver is one line naming the first (here, this test's lease).
    Another sweep into an experiment that holds one: one line naming what differs and how to resume."""
    from gan.contract import TUNE_ARGS, TUNE_LEASE
    from gan.lease import Lease
    lease = Lease(tmp_path / "sweep" / TUNE_LEASE, log=lambda *_: None, holder="sweep driver").acquire()
    try:
        done = run_cli("tune.py", "--gens", "unet", "--preset", "tiny", "--out", str(tmp_path), "--experiment", "sweep",
                       timeout=120)
    finally:
        lease.release()
    assert one_error_line(done).startswith(f"error: --experiment {tmp_path / 'sweep'}: in use by another sweep driver "
                                           f"(pid {os.getpid()} on "), done.stderr[-2000:]
    held = {"space": {"model.generator": {"grid": ["unet"]}}, "configurations": [], "preset": "small", "samples": 1}
    (tmp_path / "sweep" / TUNE_ARGS).write_text(json.dumps(held))
    done = run_cli("tune.py", "--gens", "unet", "--preset", "tiny", "--out", str(tmp_path), "--experiment", "sweep",
                   timeout=120)
    line = one_error_line(done)
    assert line.startswith(f"error: --experiment {tmp_path / 'sweep'}: holds a different sweep (") and "preset" in line \
        and line.endswith("--experiment sweep --resume, or choose another --experiment"), line
    assert json.loads((tmp_path / "sweep" / TUNE_ARGS).read_text()) == held  # left as it was
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [TUNE_ARGS]  # no lease left behind


def test_tune_validates_every_generator_before_ray_starts(tmp_path):
    done = run_cli("tune.py", "--gens", "unet,hybrid", "--preset", "tiny", "--data.image_size", "32",
                   "--model.hybrid_downs", "6", "--out", str(tmp_path), timeout=120)
    # The older flat name still works; the message names the setting as the generator owns it now.
    assert one_error_line(done) == "error: --model.hybrid.downs: 6 down blocks cannot take 32px images"
    assert not (tmp_path / "default").exists()


def test_every_checkpoint_damaged_starts_over_without_losing_the_files(tmp_path):
    assert train_here(tmp_path, {"train.eval_every": 4, "train.steps": 8})[0] == 0
    run = tmp_path / "default" / "hybrid"
    for index in (run / "checkpoints").glob("ckpt-*.index"):
        index.write_bytes(b"\x00garbage")
    code, said = train_here(tmp_path, {"train.eval_every": 4, "train.steps": 12})
    assert code == 0 and said.count("cannot be restored") == 2 and "at step 0/12" in said, said
    assert len(list((run / "checkpoints").glob("*.damaged"))) >= 4  # set aside, not deleted
    assert (run / "checkpoints" / "ckpt-12.index").exists()
    assert_exact_rows(run, 12, 4)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_killed_trainer_takes_its_metric_workers_along(tmp_path):
    """kill -9 after an evaluation: the metric pool's workers (and multiprocessing's resource tracker,
    which waits for them) end too, instead of waiting on their task queue for ever."""
    trainer = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "train.py"), "--preset", "tiny", "--gens", "hybrid",
                                "--train.steps", "100000", "--train.eval_every", "4", "--eval.workers", "2",
                                "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "default" / "hybrid" / "metrics.csv"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > 1):
        assert trainer.poll() is None and time.monotonic() < deadline, "the trainer evaluated nothing"
        time.sleep(0.2)
    children = [int(p) for p in Path(f"/proc/{trainer.pid}/task/{trainer.pid}/children").read_text().split()]
    assert len(children) >= 2, children
    trainer.kill()
    trainer.wait()
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children):
        assert time.monotonic() < deadline, "metric workers outlived their killed trainer"
        time.sleep(0.2)


# -- issue 19: faults found by probing ----------------------------------------------------------------

WRONG_SHAPES = {"status-null": ("status.json", "null"), "status-list": ("status.json", "[]"),
                "status-number-list": ("status.json", "[1]"), "config-list": ("config.json", "[]"),
                "config-without-keys": ("config.json", '{"config": {}}'),
                "metrics-without-header": ("metrics.csv", "4,train,0.1,0.2\n"),
                "summary-with-a-string": ("summary.json", '{"segmenter_fid": "x", "selected": 3}')}


def test_valid_json_or_csv_of_the_wrong_shape_is_named(tiny_runs, tmp_path):
    """Train refuses the damaged run in one line naming the file and leaves it untouched; the report and
    the tables skip it, naming the file, and go on with the rest."""
    import shutil
    root = tmp_path / "runs"
    shutil.copytree(tiny_runs / "cmp" / "unet", root / "cmp" / "unet")
    for case, (name, text) in WRONG_SHAPES.items():
        run = root / "cmp" / case
        shutil.copytree(tiny_runs / "cmp" / "hybrid", run)
        config = json.loads((run / "config.json").read_text())
        config["config"]["run_name"] = case
        (run / "config.json").write_text(json.dumps(config))
        (run / name).write_text(text)
        if name == "summary.json":  # written by the trainer at the end, read by the analysis only
            continue
        before = tree_digest(run)
        done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--experiment", "cmp", "--run-name", case,
                       "--out", str(root), "--train.steps", "12")
        assert one_error_line(done).startswith(f"error: {run / name}: "), (case, done.stderr[-2000:])
        assert tree_digest(run) == before, case
    done = run_cli("report.py", str(root), "-o", str(tmp_path / "report"), "--no-notebook")
    assert done.returncode == 0, done.stderr[-2000:]
    for case, (name, _) in WRONG_SHAPES.items():
        assert f"skipped: {root / 'cmp' / case / name}: " in done.stderr, case
    assert "| unet |" in done.stdout
    tables = subprocess.run([sys.executable, "-m", "analysis.tables", str(root)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert tables.returncode == 0 and "| unet |" in tables.stdout, tables.stderr[-2000:]
    assert "Traceback" not in tables.stderr + done.stderr


def test_lease_of_a_reused_pid_or_a_silent_holder_is_taken_over(tmp_path):
    """A lease whose pid now runs another process, or that has not beaten for an hour, is taken over;
    a live, beating trainer's is not."""
    from gan.lease import Lease, boot_id, process_start
    live = subprocess.Popen(["sleep", "120"])  # a live process that is not a trainer
    try:
        path = tmp_path / "run" / "lease.json"
        path.parent.mkdir()
        now, host = time.time(), socket.gethostname()
        holders = {"pid reused": {"pid": live.pid, "pid_start": "1", "heartbeat": now},
                   "hour-old heartbeat": {"pid": live.pid, "heartbeat": now - 3601},
                   "host restarted": {"pid": live.pid, "boot_id": "another boot", "heartbeat": now}}
        for why, holder in holders.items():
            path.write_text(json.dumps({"host": host, "token": "x", **holder}))
            notes = []
            lease = Lease(path, log=notes.append).acquire()
            assert notes and "took over the lease" in notes[0], why
            lease.release()
            assert not path.exists()
        path.write_text(json.dumps({"host": host, "token": "x", "pid": live.pid, "heartbeat": now,
                                    "pid_start": process_start(live.pid), "boot_id": boot_id()}))
        with pytest.raises(Exception, match=f"in use by another trainer \\(pid {live.pid} on "):
            Lease(path, log=lambda *_: None).acquire()
        # A lease names what holds it, so a trainer refused by a re-scoring says so, and the other way round.
        record = json.loads(path.read_text()) | {"role": "re-scoring process"}
        path.write_text(json.dumps(record))
        with pytest.raises(Exception, match=f"run: in use by a re-scoring process \\(pid {live.pid}"):
            Lease(path, log=lambda *_: None, flag="run").acquire()
        path.write_text(json.dumps(record | {"role": "<b>x</b>\nerror: forged"}))  # a hostile role: not repeated
        with pytest.raises(Exception, match=f"^run [^\\n]*: in use by another trainer \\(pid {live.pid}[^\\n]*$"):
            Lease(path, log=lambda *_: None, flag="run").acquire()
        path.write_text(json.dumps(record | {"role": "trainer"}))
        with pytest.raises(Exception, match=f"in use by a trainer \\(pid {live.pid}"):
            Lease(path, log=lambda *_: None, holder="re-scoring process").acquire()
    finally:
        live.kill()
        live.wait()

def test_an_hour_old_lease_of_a_live_pid_no_longer_blocks_a_rerun(tiny_runs, tmp_path):
    import shutil
    run = tmp_path / "cmp" / "hybrid"
    shutil.copytree(tiny_runs / "cmp" / "hybrid", run)
    (run / "lease.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "x",
                                                "heartbeat": time.time() - 3601}))
    done = run_cli("train.py", *TINY, "--experiment", "cmp", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already finished at step 8; nothing to do" in done.stdout
    assert f"took over the lease of a trainer that is gone (pid {os.getpid()}" in done.stdout
    assert "no heartbeat for 36" in done.stdout


def test_heartbeat_is_kept_while_the_trainer_is_busy(tmp_path):
    from gan.lease import Lease, read_holder
    path = tmp_path / "lease.json"
    lease = Lease(path, beat_every=0.2, log=lambda *_: None).acquire()
    try:
        first = read_holder(path)["heartbeat"]
        time.sleep(1.0)  # the main thread does nothing: the heartbeat thread still beats
        assert read_holder(path)["heartbeat"] > first
        path.write_text(json.dumps({**read_holder(path), "token": "someone else"}))
        time.sleep(0.6)
        with pytest.raises(Exception, match="another trainer took over this run"):
            lease.check()
    finally:
        lease.release()
    assert path.exists()  # not ours any more: left alone


def test_a_lease_taken_by_a_relative_path_survives_a_change_of_directory(tmp_path, monkeypatch):
    """The report's notebook runs with the working directory in the report folder while a sweep driver's
    heartbeat goes on (found on a README run: 'cannot refresh the heartbeat', and the lease left behind)."""
    from gan.lease import Lease, read_holder
    (tmp_path / "runs" / "default").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    warnings = []
    lease = Lease(Path("runs/default/_tune_lease.json"), beat_every=0.2, log=warnings.append).acquire()
    path = tmp_path / "runs" / "default" / "_tune_lease.json"
    first = read_holder(path)["heartbeat"]
    monkeypatch.chdir(tmp_path / "elsewhere")
    time.sleep(1.0)
    assert read_holder(path)["heartbeat"] > first and warnings == []
    lease.release()
    assert not path.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs of our own (root only), unmounted afterwards."""
    from services import tmpfs
    with tmpfs(tmp_path / "disk", "size=16m", "a small filesystem for the disk-full test") as mount:
        yield mount


@pytest.mark.parametrize("left", [300_000, 0], ids=["a-few-hundred-kB-left", "nothing-left"])
def test_full_disk_ends_in_one_line_and_resumes_once_freed(small_disk, left):
    out, run = small_disk / "out", small_disk / "out" / "default" / "hybrid"
    args = [*TINY, "--out", str(out), "--train.steps", "40", "--train.eval_every", "10"]
    proc = start_train(out, "--train.steps", "40", "--train.eval_every", "10")
    wait_for(lambda: (run / "checkpoints" / "checkpoint").exists(), proc)
    from services import fill
    filler = fill(small_disk / "filler")  # fill the disk, then give back `left` bytes
    os.truncate(filler, max(0, filler.stat().st_size - left))
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 74, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: disk full: no space left on device writing "), output
    assert "Traceback" not in output
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["message"].startswith(f"disk full at step {status['step']}")
    filler.unlink()
    done = run_cli("train.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stdout
    assert_exact_rows(run, 40, 10)


@pytest.mark.parametrize("when", ["while-training", "while-starting"])
def test_double_ctrl_c_still_checkpoints_and_preempts(tmp_path, when):
    """A second stop signal while the first is being handled (an impatient user's second Ctrl-C, scancel's
    TERM after it): the run still ends preempted, exit 75, with one note. The second is a TERM sent at
    once: two SIGINTs sent together can merge into one delivery, and one sent later can land after a fast
    checkpoint has ended the run; Python runs the handlers of signals pending together in signal-number
    order, so the INT is the one that stops and the TERM the one that is noted."""
    proc = start_train(tmp_path, "--train.steps", "4000", "--train.eval_every", "10")
    run = tmp_path / "default" / "hybrid"
    if when == "while-training":
        wait_for(lambda: rows(run / "metrics.csv") >= 2, proc)
    else:  # while TensorFlow starts: once the run directory exists, before the first step
        wait_for(lambda: (run / "config.json").exists(), proc)
    os.killpg(proc.pid, signal.SIGINT)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert "SIGTERM: already stopping; finishing the checkpoint first" in out, out[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "preempted" and "SIGINT" in status["message"]
    if when == "while-starting":
        return  # resuming after an interrupted start is the case below
    done = run_cli("train.py", *TINY, "--out", str(tmp_path), "--train.steps", str(status["step"] + 10),
                   "--train.eval_every", "10")
    assert done.returncode == 0 and f"{run} at step {status['step']}/" in done.stdout, done.stderr[-2000:]


def test_translate_never_overwrites_its_input_or_existing_photos(tiny_runs, tmp_path):
    import cv2
    from gan.datasets.synthetic import draw_scene
    run = tiny_runs / "cmp" / "unet"
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(2):
        cv2.imwrite(str(labels / f"{i}.png"), draw_scene(1, i, 32)[1][:, :, ::-1])
    before = tree_digest(labels)
    done = run_cli("evaluate.py", str(run), "--translate", str(labels), "--to", str(labels / "."))
    assert "is the --translate folder" in one_error_line(done)
    assert tree_digest(labels) == before
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "1.png").write_bytes(b"mine")
    done = run_cli("evaluate.py", str(run), "--translate", str(labels), "--to", str(photos))
    assert "1 of the photos exist already (e.g. 1.png); pass --overwrite" in one_error_line(done)
    assert (photos / "1.png").read_bytes() == b"mine" and not (photos / "0.png").exists()
    done = run_cli("evaluate.py", str(run), "--translate", str(labels), "--to", str(photos), "--overwrite")
    assert done.returncode == 0 and cv2.imread(str(photos / "1.png")).shape == (32, 32, 3), done.stderr[-2000:]


def test_truncated_png_is_named_without_opencv_warnings(tiny_runs, tmp_path):
    import cv2
    from gan.datasets.synthetic import draw_scene
    labels = tmp_path / "labels"
    labels.mkdir()
    ok, png = cv2.imencode(".png", draw_scene(1, 0, 32)[1])
    (labels / "a.png").write_bytes(png.tobytes()[: len(png) // 2])
    done = run_cli("evaluate.py", str(tiny_runs / "cmp" / "hybrid"), "--translate", str(labels),
                   "--to", str(tmp_path / "photos"))
    assert one_error_line(done).startswith(f"error: {labels / 'a.png'}: ")
    assert "[ WARN" not in done.stderr + done.stdout  # OpenCV's own warning line


def test_report_and_tables_outputs(tiny_runs, tmp_path):
    (tmp_path / "afile").write_text("x")
    done = run_cli("report.py", str(tiny_runs / "cmp"), "-o", str(tmp_path / "afile"), "--no-notebook")
    assert one_error_line(done) == f"error: --report {tmp_path / 'afile'}: exists and is not a folder"
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "missing"):
        tables = subprocess.run([sys.executable, "-m", "analysis.tables", str(root)], capture_output=True,
                                text=True, cwd=ROOT, timeout=120)
        assert tables.returncode == 2 and tables.stderr.startswith("error: "), tables.stderr
        assert len(tables.stderr.strip().splitlines()) == 1
