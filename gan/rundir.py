"""The run directory: the one interface between training, launchers and analysis.

    <root>/<experiment>/<run_name>/
      config.json  status.json  split.json  metrics.csv  timings.csv
      test_metrics.csv  summary.json  samples/  checkpoints/  tensorboard/

Names and columns are in `gan/contract.py`; every file is written whole
(`gan/files.py`); config.json records where the run ran (`gan/provenance.py`).
`RunDir.prepare` creates a run or checks that a folder holds the same one.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from gan.config import for_generator, run_fields
from gan.contract import (CHECKPOINTS, CONFIG, FCN_CSV, LEASE, METRICS_CSV, METRICS_KEYS, RESUMABLE_FIELDS, RUN_KIND,
                          REPLACED, SAMPLES, SPLIT, STATUS, SUMMARY, TENSORBOARD, TEST_CSV, TIMINGS_COLUMNS, TIMINGS_CSV, check_config,
                          check_status)
from gan.errors import UserError
from gan.files import is_unfinished_write, read_csv, read_json, write_csv, write_json
from gan.provenance import environment

# Fields a resumed run may change: they do not change what is learned (more steps extend the run;
# workers and logging are bookkeeping; the kernel switches compute the same function with the same
# variables). A field added after a run was written counts as its default there (`prepare`).

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

    def check_kind(self) -> None:
        """A folder holding another kind of run (the segmenter's) is named as such, before its tables are
        read as this kind's (which would call them damaged)."""
        if self.config.exists():
            old = check_config(read_json(self.config), self.config)
            if old.get("kind", RUN_KIND) != self.kind:
                raise UserError(f"--out {self.path}: holds a {old.get('kind', RUN_KIND)} run, not a {self.kind} "
                                "run; choose another --out, --experiment or --run-name")

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
                data: dict[str, Any] | None = None, read_old=None, resumable=RESUMABLE_FIELDS,
                metrics: dict[str, dict] | None = None) -> bool:
        """Create the run or check that it is the same run. Returns True when resuming.

        A folder holding a different run is refused (nothing touched) unless
        `overwrite`, which moves the old run aside rather than deleting it.
        `read_old(config.json's "config")` gives the old run's dotted fields (default: a pix2pix
        Config's, a field the old run did not have yet reading as its default); `resumable` the fields a
        resumed run may change; `metrics` the image metrics a training run records (name -> better,
        study, version; passed by the trainer, which imports their registry).
        """
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path}: exists and is not a directory")
        # A run that died before its config.json (TensorFlow aborting at import, or killed while writing that
        # file) leaves its lease, empty subfolders and an unfinished write: that is no run yet, and the same
        # command starts it.
        leftovers = {self.lease.name, self.samples.name, self.checkpoints.name, self.tensorboard.name}
        entries = list(self.path.iterdir()) if self.path.is_dir() else []
        unfinished = [p for p in entries if is_unfinished_write(p)]
        if any(p.name not in leftovers or p.is_dir() and any(p.iterdir()) or p.is_file() and p.name != self.lease.name
               for p in entries if p not in unfinished):
            if not self.config.exists():
                if not overwrite:
                    raise UserError(f"--out {self.path}: folder is not empty and holds no run "
                                    "(config.json missing); choose another --out or pass --overwrite")
            else:
                old = check_config(read_json(self.config), self.config)
                if old.get("kind", RUN_KIND) != self.kind:
                    raise UserError(f"--out {self.path}: holds a {old.get('kind', RUN_KIND)} run, not a {self.kind} "
                                    "run; choose another --out or --run-name")
                # A field the old run did not have yet reads as its default (it ran under it), an older
                # flat name as today's setting; the generator's own settings only, on both sides.
                if read_old:
                    old_flat = read_old(old["config"])
                else:
                    generator = flat.get("model.generator")
                    old_flat, flat = run_fields(old.get("config", {}), generator), for_generator(flat, generator)
                changed = sorted(k for k in set(old_flat) | set(flat)
                                 if k not in resumable and old_flat.get(k) != flat.get(k))
                if not changed:
                    self._write_config(config, data, metrics)  # records e.g. a longer train.steps
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
        for p in unfinished:
            p.unlink(missing_ok=True)
        self._write_config(config, data, metrics)
        return False

    def _write_config(self, config: dict[str, Any], data: dict[str, Any] | None = None,
                      metrics: dict[str, dict] | None = None) -> None:
        record = {"kind": self.kind, "config": config, "data": data or {}, "environment": environment()}
        if metrics is not None:  # a training run's image metrics: name -> better, study, version
            record["metrics"] = metrics
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
