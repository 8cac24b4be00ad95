"""Where a run ran: versions, host, git commit, the allocator and CPUs (config.json "environment")."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path

from gan.contract import METRICS_VERSION


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def environment() -> dict[str, str]:
    import tensorflow as tf

    from gan.fastpath import cpus_given, loaded_allocator
    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "host": socket.gethostname(),
            "platform": platform.platform(), "git_commit": git_commit(), "argv": " ".join(sys.argv),
            "metrics_version": METRICS_VERSION,
            "allocator": loaded_allocator() or "system (glibc malloc: slower, see gan/fastpath.py)",
            "cpus": cpus_given()}
