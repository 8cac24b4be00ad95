"""Discover run directories and load them into tidy pandas frames.

A run directory is any folder holding `config.json` (DESIGN.md). Runs that
are still running, preempted or failed are loaded too, with their state, so
a report can say which they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Run:
    path: Path
    config: dict
    status: dict
    metrics: pd.DataFrame
    timings: pd.DataFrame
    test_metrics: pd.DataFrame
    summary: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.config.get('experiment', '')}/{self.config.get('run_name') or self.generator}"

    @property
    def generator(self) -> str:
        return self.config["model"]["generator"]

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()


def load_run(path: Path) -> Run:
    path = Path(path)
    config = json.loads((path / "config.json").read_text())["config"]
    status = json.loads((path / "status.json").read_text()) if (path / "status.json").exists() else {}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else {}
    return Run(path, config, status, _csv(path / "metrics.csv"), _csv(path / "timings.csv"),
               _csv(path / "test_metrics.csv"), summary)


def find_runs(*roots: str | Path) -> list[Run]:
    """Every run under the roots (a root may itself be a run), sorted by path."""
    paths: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder")
        if (root / "config.json").exists():
            paths.add(root)
        paths.update(p.parent for p in root.rglob("config.json") if ".replaced-" not in str(p.parent))
    return [load_run(p) for p in sorted(paths)]
