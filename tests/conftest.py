"""Shared test fixtures: a private synthetic-data cache, small datasets on disk, a CLI runner."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gan.quiet import quiet_tensorflow

ROOT = Path(__file__).resolve().parents[1]
# Every Ray node the tests start stays on 127.0.0.1 (otherwise Ray registers loopback nodes under the
# interface address). Ray reads this when first imported, which any test importing cluster/ may do first.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


# The heaviest test files first (seconds on 2 cores, from --durations): the xdist workers take whole
# files (--dist loadfile), so starting the long ones early lets the workers finish together.
HEAVIEST_FIRST = ["test_ray.py", "test_ray_protocols.py", "test_slurm.py", "test_faults.py", "test_probes.py",
                  "test_gpu_ready.py", "test_fcn.py", "test_faults4.py", "test_promises.py", "test_bench.py",
                  "test_settle.py", "test_train.py", "test_report.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


@pytest.fixture(scope="session", autouse=True)
def synthetic_cache(tmp_path_factory):
    """Every test (and every subprocess) shares one freshly generated synthetic cache."""
    cache = tmp_path_factory.mktemp("pix2pix-cache")
    os.environ["PIX2PIX_CACHE"] = str(cache)
    quiet_tensorflow()  # as every job: subprocesses inherit the level
    return cache


def run_cli(*args: str, timeout: float = 600, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a jobs/ script the way a user does."""
    script, *rest = args
    return subprocess.run([sys.executable, str(ROOT / "jobs" / script), *rest], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT, **kwargs)


def write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def make_pix2pix(root: Path, counts=(8, 3, 3), size: int = 32, ext: str = ".jpg") -> Path:
    """A pix2pix-layout folder (photo left, label right) of synthetic scenes."""
    from gan.datasets.synthetic import draw_scene
    index = 0
    for split, n in zip(("train", "val", "test"), counts):
        for _ in range(n):
            photo, label = draw_scene(7, index, size)
            write_rgb(root / split / f"{index:03d}{ext}", np.concatenate([photo, label], axis=1))
            index += 1
    return root


def tree_digest(root: Path) -> str:
    """Hash of every file's path and bytes under root: 'untouched' means equal digests."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Winograd on every `model.conv` conv, however small: the tests' nets are below its thresholds."""
    from gan.models import winograd
    monkeypatch.setattr(winograd, "MIN_SIDE", 1)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Every registered generator trained with the tiny preset into <root>/cmp/<generator> (shared, read-only):
    trained once per test run, by whichever xdist worker asks first, the others waiting on a lock."""
    from gan import models
    from gan.config import make_config
    from gan.train import train
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is <run's folder>/popen-gwN: the run's folder is shared by them all.
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = shared / "tiny-runs"
    with open(shared / "tiny-runs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (out / "trained").exists():
            for gen in models.names():
                assert train(make_config("tiny", {"model.generator": gen, "experiment": "cmp"}), out) == 0
            (out / "trained").write_text("\n".join(models.names()))
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A test module's own Ray cluster: head + second node, each its own raylet; the driver and every trial reach it via RAY_ADDRESS."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep every node on 127.0.0.1 (Ray registers loopback nodes under the interface address otherwise)
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    import ray
    ray.init(address=cluster.address)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    ray.shutdown()
    yield cluster
    cluster.shutdown()


def assert_exact_rows(run: Path, steps: int, every: int) -> None:
    """metrics.csv has one train and one val row per evaluation, none duplicated or missing;
    timings.csv one row per interval, whose step counts add up to the run's steps."""
    import pandas as pd
    metrics = pd.read_csv(run / "metrics.csv")
    expected = [(s, split) for s in range(every, steps + 1, every) for split in ("train", "val")]
    assert list(zip(metrics.step, metrics.split)) == expected
    timings = pd.read_csv(run / "timings.csv")
    assert list(timings.step) == list(range(every, steps + 1, every))
    assert timings.steps.sum() == steps


def assert_fast_path(run: Path) -> None:
    """The process that trained `run` had the caching allocator mapped in (config.json records what
    /proc/self/maps of that process showed), and its timings name the host, device and CPUs."""
    import json
    environment = json.loads((run / "config.json").read_text())["environment"]
    assert "libmimalloc" in environment["allocator"], environment
    import pandas as pd
    timings = pd.read_csv(run / "timings.csv")
    assert (timings.system_seconds >= 0).all() and (timings.cpus >= 1).all() and (timings.device != "").all()
