"""The run directory's writers: the one interface between training, launchers and analysis.

    <root>/<experiment>/<run_name>/
      config.json  status.json  split.json  metrics.csv  timings.csv
      test_metrics.csv  summary.json  samples/  checkpoints/  tensorboard/

Names and columns are in `gan/contract.py`. Every write goes to a temporary
file in the same folder and is renamed over the old one, so a reader opening
any file at any moment sees either the old or the new whole file, never half
a row. CSV files are small (one row per evaluation), so "append" rewrites the
file; that keeps the guarantee simple.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from gan.config import Config, flatten
from gan.contract import (CHECKPOINTS, CONFIG, FCN_CSV, LEASE, METRICS_CSV, METRICS_KEYS, METRICS_VERSION, RUN_KIND,
                          REPLACED, SAMPLES, SPLIT, STATUS, SUMMARY, TENSORBOARD, TEST_CSV, TIMINGS_COLUMNS, TIMINGS_CSV,
                          check_columns, check_config, check_status)
from gan.errors import UserError

# Fields a resumed run may change: they do not change what is learned (more steps extend the run;
# workers and logging are bookkeeping; the kernel switches compute the same function with the same
# variables). A field added after a run was written counts as its default there (`prepare`).
RESUMABLE_FIELDS = {"train.steps", "eval.workers", "train.log_every", "train.checkpoints_to_keep",
                    "data.cache_dir", "eval.segmenter", "eval.inception_weights", "optim.adam", "model.upsample",
                    "model.conv"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: colleagues on a shared cluster can read results


def atomic_write(path: Path, data: str | bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)  # mkstemp makes 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in `path` (`default` if it does not exist); a damaged file is a UserError naming it."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); restore it from a copy or move the run aside") from None


def read_csv(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """The rows of a CSV ([] if it does not exist); a header without the `required` columns is a UserError."""
    if not Path(path).exists():
        return []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a readable CSV ({e}); restore it from a copy or move the run aside") from None
    if required and (rows or reader.fieldnames):
        check_columns(reader.fieldnames, required, path)
    return rows


def write_csv(path: Path, columns: list[str] | tuple[str, ...], rows: Iterable[dict[str, Any]]) -> None:
    buf = io.StringIO()
    # restval "": a row written before a column existed (a metric added since) leaves it empty - missing,
    # not zero, for every reader.
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="raise", restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def append_csv(path: Path, columns: list[str] | tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Add rows; the file keeps its columns, and gains any of `columns` it lacks (an older run resumed by a
    version with a new metric: its earlier rows read as missing there)."""
    old = read_csv(path, required=tuple(columns[:2]))
    header = list(old[0]) if old else []
    write_csv(path, header + [c for c in columns if c not in header], old + rows)


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


class RunDir:
    """Paths and writers of one run: a pix2pix training run, or another `kind` (the segmenter's) that
    shares the contract's files, status, lease and resume rules."""

    def __init__(self, path: Path, kind: str = RUN_KIND):
        self.path, self.kind = Path(path), kind
        self.config = self.path / CONFIG
        self.status = self.path / STATUS
        self.split = self.path / SPLIT
        self.metrics = self.path / METRICS_CSV
        self.timings = self.path / TIMINGS_CSV
        self.test_metrics = self.path / TEST_CSV
        self.fcn_metrics = self.path / FCN_CSV
        self.summary = self.path / SUMMARY
        self.samples = self.path / SAMPLES
        self.checkpoints = self.path / CHECKPOINTS
        self.tensorboard = self.path / TENSORBOARD
        self.lease = self.path / LEASE

    def read_status(self) -> dict[str, Any]:
        return check_status(read_json(self.status, {}), self.status)

    def check_tables(self) -> None:
        """Every CSV the trainer appends to is readable and has its header (a UserError naming it if not):
        called before anything is written, so a damaged run is refused untouched."""
        for path, columns in ((self.metrics, METRICS_KEYS), (self.timings, TIMINGS_COLUMNS[:2]),
                              (self.fcn_metrics, METRICS_KEYS)):
            read_csv(path, required=columns)

    def set_status(self, state: str, step: int, message: str = "") -> None:
        record = {"state": state, "step": step, "message": message, "pid": os.getpid(),
                  "host": socket.gethostname(), "updated": time.time()}
        try:
            write_json(self.status, record)
        except OSError as e:
            if e.errno != errno.ENOSPC or not self.status.exists():
                raise
            # A full disk has no room for the new file of an atomic write, but the old file's block is
            # there: rewrite it in place (a status record is far below one block).
            with open(self.status, "r+b") as f:
                f.write((json.dumps(record, sort_keys=True) + "\n").encode())
                f.truncate()
                f.flush()
                os.fsync(f.fileno())

    def prepare(self, config: dict[str, Any], flat: dict[str, Any], overwrite: bool = False,
                data: dict[str, Any] | None = None, read_old=None, resumable=RESUMABLE_FIELDS) -> bool:
        """Create the run or check that it is the same run. Returns True when resuming.

        A folder holding a different run is refused (nothing touched) unless
        `overwrite`, which moves the old run aside rather than deleting it.
        `read_old(config.json's "config")` gives the old run's dotted fields (default: a pix2pix
        Config's, a field the old run did not have yet reading as its default); `resumable` the fields a
        resumed run may change.
        """
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path}: exists and is not a directory")
        if self.path.is_dir() and any(p.name != self.lease.name for p in self.path.iterdir()):
            if not self.config.exists():
                if not overwrite:
                    raise UserError(f"--out {self.path}: folder is not empty and holds no run "
                                    "(config.json missing); choose another --out or pass --overwrite")
            else:
                old = check_config(read_json(self.config), self.config)
                if old.get("kind", RUN_KIND) != self.kind:
                    raise UserError(f"--out {self.path}: holds a {old.get('kind', RUN_KIND)} run, not a {self.kind} "
                                    "run; choose another --out or --run-name")
                # A field the old run did not have yet reads as its default (it ran under it).
                old_flat = (read_old(old["config"]) if read_old else
                            {**Config().flat(), **dict(flatten(old.get("config", {})))})
                changed = sorted(k for k in set(old_flat) | set(flat)
                                 if k not in resumable and old_flat.get(k) != flat.get(k))
                if not changed:
                    self._write_config(config, data)  # records e.g. a longer train.steps
                    return True
                if not overwrite:
                    k = changed[0]
                    raise UserError(f"--out {self.path}: holds a different run ({k}: {old_flat.get(k)!r} there, "
                                    f"{flat.get(k)!r} now; {len(changed)} field(s) differ); "
                                    "pass --overwrite to move it aside, or choose another --out")
            aside = self.path.with_name(f"{self.path.name}{REPLACED}{time.strftime('%Y%m%d-%H%M%S')}")
            os.rename(self.path, aside)
            print(f"moved the previous run aside to {aside}", file=sys.stderr)
            self.path.mkdir(parents=True)
            if (aside / self.lease.name).exists():  # our own lease stays with the run directory
                os.rename(aside / self.lease.name, self.lease)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (NotADirectoryError, FileExistsError, PermissionError) as e:
            raise UserError(f"--out {self.path}: cannot create the run directory ({e.strerror}: {e.filename})") from None
        for sub in (self.samples, self.checkpoints, self.tensorboard) if self.kind == RUN_KIND else ():
            sub.mkdir(exist_ok=True)
        self._write_config(config, data)
        return False

    def _write_config(self, config: dict[str, Any], data: dict[str, Any] | None = None) -> None:
        record = {"kind": self.kind, "config": config, "data": data or {}, "environment": environment()}
        if self.kind == RUN_KIND:
            from gan.metrics import metric_specs
            record["metrics"] = metric_specs()
        write_json(self.config, record)

    def truncate_after(self, step: int) -> None:
        """Drop rows past `step` (written after the checkpoint we resume from)."""
        for path in (self.metrics, self.timings, self.fcn_metrics):
            rows = read_csv(path, required=("step",))
            try:
                kept = [r for r in rows if int(r["step"]) <= step]
            except (TypeError, ValueError):
                raise UserError(f"{path}: a row's step is not a whole number; restore it from a copy or move "
                                "the run aside") from None
            if len(kept) != len(rows):
                write_csv(path, list(rows[0]), kept)
