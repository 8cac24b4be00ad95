"""The fast path: every command re-executes itself once on the caching allocator (gan/fastpath.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, assert_fast_path, run_cli
from gan.fastpath import ALLOCATOR_ENV, allocator_env, fast_path_vars, find_allocator, loaded_allocator

PROBE = ("from gan.cli import run_main; from gan.fastpath import loaded_allocator; "
         "run_main(lambda: print('mapped:', loaded_allocator()) or 0)")


def probe(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**clean, **env})


def test_choice_of_allocator():
    assert find_allocator("system") is None
    mimalloc = find_allocator("mimalloc")
    assert mimalloc and "libmimalloc" in mimalloc and os.path.isfile(mimalloc)  # installed with the project
    assert find_allocator("auto") == mimalloc
    assert find_allocator("/no/such/lib.so") is None
    env = allocator_env({ALLOCATOR_ENV: "mimalloc", "LD_PRELOAD": "/opt/other.so /opt/third.so"})
    assert env["LD_PRELOAD"] == f"{mimalloc}:/opt/other.so:/opt/third.so"  # first; the user's own kept
    assert env["MIMALLOC_PURGE_DELAY"] == "-1"
    assert allocator_env({ALLOCATOR_ENV: "mimalloc", "MIMALLOC_PURGE_DELAY": "50"})["MIMALLOC_PURGE_DELAY"] == "50"
    assert "LD_PRELOAD" not in allocator_env({ALLOCATOR_ENV: "system"})
    assert fast_path_vars({ALLOCATOR_ENV: "mimalloc"}) == {"LD_PRELOAD": mimalloc, "MIMALLOC_PURGE_DELAY": "-1"}
    assert fast_path_vars({ALLOCATOR_ENV: "system"}) == {}
    already = allocator_env({ALLOCATOR_ENV: "mimalloc"})  # a process already on the fast path passes it on
    assert fast_path_vars(already) == {"LD_PRELOAD": mimalloc, "MIMALLOC_PURGE_DELAY": "-1"}


@pytest.mark.parametrize("choice", ["auto", "/no/such/lib.so"])
def test_exported_variables_survive_a_shell(choice):
    """`export $(python -m gan.fastpath)`, as the sbatch set-up line runs it: the fast path's variables
    arrive whole, and with no allocator nothing is set to a literal string."""
    script = f"export $({sys.executable} -m gan.fastpath); echo \"[$LD_PRELOAD] [$MIMALLOC_PURGE_DELAY]\""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False,
                          env={**os.environ, ALLOCATOR_ENV: choice, "LD_PRELOAD": "", "MIMALLOC_PURGE_DELAY": ""})
    assert done.returncode == 0, done.stderr
    expected = f"[{find_allocator()}] [-1]" if choice == "auto" else "[] []"
    assert done.stdout.strip() == expected and "cannot be preloaded" not in done.stderr, done.stdout + done.stderr


def test_command_reexecutes_once_on_the_allocator():
    done = probe()
    assert done.returncode == 0, done.stderr
    assert "mapped: " in done.stdout and "libmimalloc" in done.stdout, done.stdout
    assert done.stdout.count("mapped:") == 1 and "warning" not in done.stderr


def test_system_allocator_on_request_and_one_line_when_missing():
    done = probe(**{ALLOCATOR_ENV: "system"})
    assert done.returncode == 0 and "mapped: None" in done.stdout and done.stderr == ""
    done = probe(**{ALLOCATOR_ENV: "/no/such/lib.so"})
    assert done.returncode == 0 and "mapped: None" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "pip install cmeel-mimalloc" in warnings[0], done.stderr


def test_loaded_allocator_reads_the_process_map(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
                    "7f02-7f03 r-xp 00000000 08:01 43 /venv/cmeel.prefix/lib/libmimalloc.so.3\n")
    assert loaded_allocator(str(maps)) == "/venv/cmeel.prefix/lib/libmimalloc.so.3"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert loaded_allocator(str(maps)) is None


def test_training_run_records_the_fast_path(tmp_path):
    done = run_cli("train.py", "--preset", "tiny", "--gens", "hybrid", "--out", str(tmp_path),
                   env={"LD_PRELOAD": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert_fast_path(tmp_path / "default" / "hybrid")


LEAN = ("import sys; from gan.quiet import quiet_tensorflow; quiet_tensorflow(); "
        "import {first}; loaded = [m for m in ('pandas', 'matplotlib', 'IPython') if m in sys.modules]; "
        "import pandas, matplotlib.pyplot, IPython; print('loaded during the import:', loaded)")


# Two processes cover both imports first and both ways of showing TensorFlow's lines.
@pytest.mark.parametrize("first,logs", [("tensorflow", "0"), ("keras", "1")], ids=["tensorflow-quiet", "keras-logs"])
def test_tensorflows_import_leaves_kerass_optional_integrations_unloaded_yet_importable(first, logs):
    """Keras imports pandas, matplotlib and IPython at its import when installed (a second of every trainer's
    start); the trainers' first import of TensorFlow or Keras runs without them, and they import normally
    after it, whichever of the two comes first and whether TensorFlow's lines are shown or not."""
    done = subprocess.run([sys.executable, "-c", LEAN.format(first=first)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PIX2PIX_TF_LOGS": logs})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded during the import: []" in done.stdout, done.stdout
