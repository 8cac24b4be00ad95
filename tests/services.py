"""Real services for the end-to-end tests: a single-node SLURM and a two-node Ray cluster on 127.0.0.1.

Each starts only its own processes and stops only those, by PID. Where a
service truly cannot run (not root and SLURM not installed, e.g. a laptop)
the tests skip with the reason; in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: these tests must run, not skip)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- SLURM -------------------------------------------------------------------

def _ensure_slurm_installed() -> None:
    """Tests never install packages: .ci/provision does (root), or the test skips (fails under CI=true)."""
    if not (shutil.which("slurmctld") and shutil.which("munged")):
        unavailable("SLURM is not installed (Debian: slurm-wlm and munge; .ci/provision installs them)")


class Slurm:
    """slurmctld + slurmd (+ munged if none runs) from a private config in `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.pids: list[int] = []
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}

    def start(self) -> "Slurm":
        if os.geteuid() != 0:
            unavailable("a private SLURM needs root (slurmd runs jobs as their users)")
        _ensure_slurm_installed()
        self._start_munge()
        host = socket.gethostname()
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout.split("\n")[0]
        cpus = int(node.split("CPUs=")[1].split()[0])
        memory = int(int(node.split("RealMemory=")[1].split()[0]) * 0.9)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # slurmctld runs as user slurm
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        for sub in ("state", "log"):
            shutil.chown(self.root / sub, "slurm", "slurm")
        ctl_port, d_port = _free_port(), _free_port()
        (self.root / "slurm.conf").write_text(f"""
ClusterName=pix2pixtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
SlurmUser=slurm
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
KillWait=60
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        for daemon in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd"):
            subprocess.run([daemon], env=self.env, check=True, capture_output=True, timeout=60)
        for pidfile in ("slurmctld.pid", "slurmd.pid"):
            self.pids.append(self._read_pid(self.root / pidfile))
        deadline = time.time() + 60
        while time.time() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T").stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"SLURM node not idle: {state!r}; see {self.root / 'log'}")

    def _start_munge(self) -> None:
        pidfile = Path("/run/munge/munged.pid")
        if pidfile.exists() and _alive(self._read_pid(pidfile)):
            return  # someone else's munged: use it, do not stop it
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"], check=True, timeout=30)
        self.pids.append(self._read_pid(pidfile))

    @staticmethod
    def _read_pid(path: Path, timeout: float = 10) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.1)
        raise RuntimeError(f"{path}: no pid")

    def run(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, check=check, timeout=60)

    def wait_job(self, job_id: str, timeout: float = 600) -> None:
        """Until no task of the job is pending or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.run("squeue", "-h", "-j", job_id).stdout.strip():
                return
            time.sleep(0.25)
        raise TimeoutError(f"job {job_id} still queued: {self.run('squeue', '-j', job_id).stdout}")

    def release_requeued(self, job_id: str, timeout: float = 120) -> None:
        """SLURM holds a requeued job ~2 minutes (a SLURM built-in delay): once it is pending again, start it now.
        Not within the second of the requeue: slurmd revokes the killed instance's credential at one-second
        resolution, and an instance started in that same second is killed as "Job credential revoked" and
        leaves the queue for good (seen once, the test then waiting on a job that no longer existed)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() == "PENDING":
                time.sleep(2)
                self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
                return
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} was not requeued: {self.run('squeue', '-j', job_id).stdout}")

    def stop(self) -> None:
        for pid in reversed(self.pids):
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in self.pids):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- a small filesystem of the test's own ------------------------------------

@contextlib.contextmanager
def tmpfs(mount: Path, options: str, why: str):
    """`mount -t tmpfs -o OPTIONS` on `mount` (root only; skips, or fails under CI, elsewhere), unmounted after."""
    mount.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        unavailable(f"{why} needs root (mount -t tmpfs)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        unavailable(f"mount -t tmpfs -o {options} failed: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(path: Path) -> Path:
    """Write `path` until its filesystem refuses another byte (ENOSPC); the filled file. Unbuffered: a
    buffered file would raise ENOSPC again on closing, for the bytes its buffer still held."""
    with open(path, "wb", buffering=0) as f:
        size = 1 << 16
        while size:
            try:
                f.write(bytes(size))
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                size //= 2  # the last few bytes in smaller writes, down to one
    return path


# -- a two-node Ray cluster of the test module's own -------------------------------------------------------

TINY = ["--preset", "tiny", "--cpus-per-trial", "1"]


def tune_cmd(out: Path, *args: str) -> list[str]:
    from conftest import ROOT
    return [sys.executable, str(ROOT / "jobs" / "tune.py"), "--out", str(out), *TINY, *args]


def run_tune(cluster, out: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    from conftest import ROOT
    return subprocess.run(tune_cmd(out, *args), capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def assert_no_trial_line_after(stdout: str, start: str) -> None:
    """The driver leaves Ray before its summary, so no trial's forwarded log line ('(trainable pid=...)')
    lands inside or after it."""
    summary = stdout[stdout.index(start):]
    assert not re.search(r"\(\w+ pid=\d+", summary), summary[-2000:]
