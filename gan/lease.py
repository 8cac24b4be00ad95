"""One trainer per run directory: the lease protocol (`lease.json`), standard library only.

A second trainer (a SLURM requeue racing a task that is not yet dead, a Ray
retry beside a partitioned worker, the same command typed twice) is refused
with one line naming the holder and what it is (each lease records its role:
trainer, re-scoring process, sweep driver). The holder is identified by host, pid, the
pid's start time and the machine's boot id, and proves it is alive by a
heartbeat that a background thread refreshes every `beat_every` seconds
whatever the trainer is doing (tracing, evaluating, checkpointing). A lease
is taken over when its holder is gone:

- same host: the pid no longer runs, or runs a different process (another
  start time or boot id: a pid reused after a restart), or the heartbeat is
  `stale_after` seconds old (a hung or stopped process);
- another host: no heartbeat for `stale_after` seconds, which the newcomer
  waits out once.

Creation is atomic (`os.link` fails if the file exists; a stale lease is
renamed away first, so of two takers one wins). `analysis/` reads leases
through `holder_alive` to show a dead "running" run as interrupted.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from gan.contract import LEASE_BEAT, LEASE_TEMP
from gan.errors import UserError, raise_for_write

STALE_AFTER = 120.0  # seconds without a heartbeat after which a holder is gone
BEAT_EVERY = 20.0


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: pid and heartbeat only
        return ""


def process_start(pid: int) -> str:
    """The start time of `pid` in clock ticks since boot ('' when unknown or not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ')' may hold spaces


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders this process created (deepest first) that are still empty; one that is not (someone
    else wrote there since) stops the walk and is kept."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def read_holder(path: Path) -> dict[str, Any] | None:
    """The lease's record; None when there is no lease, {} when it is damaged or of the wrong shape."""
    try:
        holder = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}  # half-written or damaged: stale
    return holder if isinstance(holder, dict) else {}


def holder_alive(holder: dict[str, Any] | None, stale_after: float = STALE_AFTER) -> tuple[bool, str]:
    """(alive, why not): whether the lease's holder may still be training."""
    if not holder:
        return False, "no lease" if holder is None else "damaged lease"
    try:
        pid, age = int(holder["pid"]), time.time() - float(holder.get("heartbeat", 0))
    except (KeyError, TypeError, ValueError):
        return False, "damaged lease"
    if holder.get("host") != socket.gethostname():
        return (True, "") if age < stale_after else (False, f"no heartbeat for {age:.0f} s")
    if holder.get("boot_id") and holder["boot_id"] != boot_id():
        return False, "the host restarted since"
    if not _pid_runs(pid):
        return False, f"pid {pid} is gone"
    if holder.get("pid_start") and holder["pid_start"] != process_start(pid):
        return False, f"pid {pid} now belongs to another process"
    if age >= stale_after:
        return False, f"no heartbeat for {age:.0f} s"
    return True, ""


class Lease:
    """Exclusive use of a run directory by this process (see the module docstring)."""

    def __init__(self, path: Path, stale_after: float = STALE_AFTER, beat_every: float = BEAT_EVERY, log=print,
                 holder: str = "trainer", thing: str = "run", flag: str = "--out"):
        # Absolute: the heartbeat thread must find the lease whatever the process's working directory
        # becomes meanwhile (papermill runs the report's notebook from the report folder).
        self.path, self.stale_after, self.beat_every, self.log = Path(path).absolute(), stale_after, beat_every, log
        # For the messages: what holds the lease, what it guards, and the flag that named the directory.
        self.holder, self.thing, self.flag = holder, thing, flag
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self.lost: dict[str, Any] | None = None  # the holder that took over, seen by the heartbeat thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()

    def _record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start(os.getpid()),
                "boot_id": boot_id(), "token": self.token, "started": self._started, "heartbeat": time.time(),
                "role": self.holder}

    def _who(self, holder: dict[str, Any]) -> str:
        """What holds a lease, in words: its recorded role ("another trainer", "a re-scoring process").
        Leases written before roles were recorded, or with a role that is not a few plain words (the file
        is read from a shared folder), are taken to be of this lease's kind."""
        role = holder.get("role")
        if not (isinstance(role, str) and re.fullmatch(r"[a-z][a-z -]{0,39}", role)):
            role = self.holder
        return f"another {role}" if role == self.holder else f"a {role}"

    def acquire(self) -> "Lease":
        self._started = time.time()
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise UserError(f"{self.flag} {self.path.parent}: exists and is not a directory")
        created = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # read-only filesystem, permissions, a full disk
            remove_empty(created)
            raise_for_write(e, f"{self.flag} {self.path.parent}: cannot create the {self.thing} directory")
        try:
            return self._acquire()
        except OSError as e:
            remove_empty(created)  # leave nothing behind: the folders were ours (--out, the experiment, the run)
            raise_for_write(e, f"{self.flag} {self.path.parent}: cannot write its lease")

    def _acquire(self) -> "Lease":
        waited = False
        while True:
            if self._try_create():
                self._start_heartbeat()
                return self
            holder = read_holder(self.path)
            if holder is None:
                continue  # released between our two calls
            alive, why = holder_alive(holder, self.stale_after)
            if not alive:
                self._take_over(holder, why)
                continue
            age = time.time() - float(holder.get("heartbeat", 0))
            if holder.get("host") != socket.gethostname() and not waited:
                self.log(f"note: {self.path.parent}: held by pid {holder['pid']} on {holder['host']} "
                         f"(heartbeat {age:.0f} s ago); waiting up to {self.stale_after:.0f} s for it to go stale")
                waited = True
                time.sleep(min(self.stale_after, 5.0))
                continue
            if waited and time.time() - self._started < self.stale_after + 10:
                time.sleep(5.0)
                continue
            raise UserError(f"{self.flag} {self.path.parent}: in use by {self._who(holder)} (pid {holder['pid']} on "
                            f"{holder['host']}, heartbeat {age:.0f} s ago); wait for it to end or stop it")

    def _try_create(self) -> bool:
        tmp = self.path.with_name(LEASE_TEMP.format(pid=os.getpid()))
        try:
            tmp.write_text(json.dumps(self._record()))
            os.link(tmp, self.path)  # atomic: fails if a lease exists
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, holder: dict[str, Any], why: str) -> None:
        aside = self.path.with_name(f"lease.stale-{time.time_ns()}.json")
        try:
            os.rename(self.path, aside)  # one taker wins; the other finds the new lease
        except FileNotFoundError:
            return
        self.log(f"note: {self.path.parent}: took over the lease of {self._who(holder).replace('another ', 'a ')} that is gone "
                 f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}: {why})")
        aside.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        warned = False
        while not self._stop.wait(self.beat_every):
            holder = read_holder(self.path)
            if holder is not None and holder.get("token") != self.token:
                self.lost = holder or {"pid": "?", "host": "?"}
                return
            try:
                tmp = self.path.with_name(LEASE_BEAT.format(pid=os.getpid()))
                tmp.write_text(json.dumps(self._record()))
                os.replace(tmp, self.path)
                warned = False
            except OSError as e:  # e.g. a full disk: training goes on; the lease may look stale meanwhile
                if not warned:
                    self.log(f"warning: {self.path}: cannot refresh the heartbeat ({e.strerror})")
                    warned = True

    def check(self) -> None:
        """Raise if another trainer took this run over (the heartbeat thread noticed)."""
        if self.lost is not None:
            raise UserError(f"{self.path.parent}: {self._who(self.lost)} took over this {self.thing} (pid {self.lost.get('pid')} "
                            f"on {self.lost.get('host')}); stopping without writing")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = read_holder(self.path)
        if holder and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)
