"""Process-pool workers that end with the process that started them.

A parent killed outright (kill -9, the kernel's OOM killer, a node agent)
runs no clean-up, and `concurrent.futures` workers then wait on their task
queue for ever - for the synthetic-data generator and the trainer's metric
pool alike. Used as (part of) a pool's initializer.
"""

from __future__ import annotations

import os
import signal
import sys


def end_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform != "linux":  # prctl is Linux's; elsewhere orphans are left to the OS as before
        return
    import ctypes
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
