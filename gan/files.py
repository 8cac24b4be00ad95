"""Files that are never half-written: atomic writes, JSON and small CSV tables (standard library only).

Every write goes to a temporary file in the same folder and is renamed over
the old one, so a reader opening any file at any moment sees either the old
or the new whole file, never half a row. The tables are small (one row per
evaluation), so "append" rewrites the file; that keeps the guarantee simple.
A damaged file is a UserError naming it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

from gan.contract import check_columns
from gan.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: colleagues on a shared cluster can read results


def atomic_write(path: Path, data: str | bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # is_unfinished_write's pattern
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


def is_unfinished_write(path: Path) -> bool:
    """A file `atomic_write` was writing when its process died (`.<name>.<8 random characters>`): never
    anything a reader should see."""
    return path.is_file() and re.fullmatch(r"\..+\.[A-Za-z0-9_]{8}", path.name) is not None


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
