"""Discover run directories and load them into tidy pandas frames.

A run directory is any folder holding `config.json` (docs/design.md) — single
runs, a Tune experiment, a SLURM array alike. Runs that are still running,
preempted or failed are loaded too, with their state, so a report can say
which they are. Folders moved aside by `--overwrite` (`*.replaced-*`) and
Tune's own state (`_tune`) are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gan import contract  # the run-directory contract: standard library only, no TensorFlow
from gan.errors import UserError
from gan.lease import holder_alive, read_holder

FCN_METRICS = list(contract.FCN_METRICS)
SPECS_ATTR = "metric_specs"  # a frame's attrs key: the specs of the runs it was built from


def metric_table(of=None) -> dict[str, dict]:
    """The image metrics {name: {"better", "study", "version"}} of these runs (a list of Run), or of a frame
    built from runs (`test_frame`, `metrics_frame`, ...: it carries them in its attrs): the contract's
    legacy table plus what each run records in its config.json. No process-wide registry: a metric added
    to gan/evaluators/metrics.py reaches every table and figure through the runs that measured it, and a
    run without a metric's column simply has none (missing, never an error)."""
    table = dict(contract.LEGACY_METRICS)
    if isinstance(of, pd.DataFrame):
        table.update(of.attrs.get(SPECS_ATTR, {}))
    elif of is not None:
        for run in of:
            for name, spec in run.metric_specs.items():
                table.setdefault(name, spec)
    return table


def metric_names(of=None) -> list[str]:
    """The image metrics of these runs or of this frame, the study's four first."""
    table = metric_table(of)
    return sorted(table, key=lambda m: not table[m].get("study"))


def study_metrics(of=None) -> list[str]:
    table = metric_table(of)
    return [m for m in metric_names(of) if table[m].get("study")]


def lower_is_better(of=None) -> set[str]:
    return contract.lower_is_better(metric_table(of))


def _with_specs(frame: pd.DataFrame, runs) -> pd.DataFrame:
    frame.attrs[SPECS_ATTR] = metric_table(runs)
    return frame


@dataclass
class Run:
    path: Path
    config: dict
    status: dict
    metrics: pd.DataFrame
    timings: pd.DataFrame
    test_metrics: pd.DataFrame
    summary: dict = field(default_factory=dict)
    fcn_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)  # with eval.fcn_every_eval
    label: str = ""  # set by find_runs when two roots hold runs of the same name
    environment: dict = field(default_factory=dict)  # config.json's: versions, host, metrics_version

    data: dict = field(default_factory=dict)  # config.json's: source, format, fingerprint (gan/datasets/fetch.py)
    metric_specs: dict = field(default_factory=dict)  # config.json's "metrics" (or the legacy table)
    split_key: str = ""  # which 400/50/50 split: a hash of split.json's file lists (see `split_key`)

    @property
    def data_label(self) -> str:
        """'<folder name> <fingerprint[:12]>': which copy of which dataset the run trained on."""
        source = Path(self.data.get("source", self.config.get("data", {}).get("source", "?"))).name
        return f"{source} {self.data.get('fingerprint', '')[:12]}".strip()


    @property
    def name(self) -> str:
        return self.label or f"{self.config.get('experiment', '')}/{self.config.get('run_name') or self.generator}"

    @property
    def generator(self) -> str:
        return self.config["model"]["generator"]

    @property
    def state(self) -> str:
        """status.json's state; 'interrupted' for a 'running' run whose trainer is gone (killed, node lost,
        disk full): its lease is missing, or names a process that is gone or no longer beats."""
        state = self.status.get("state", "unknown")
        if state == "running" and not holder_alive(read_holder(self.path / contract.LEASE))[0]:
            return "interrupted"
        return state

    @property
    def state_note(self) -> str:
        """Why a run is shown as interrupted ('' otherwise)."""
        if self.state != "interrupted":
            return ""
        return f"status says running, but its trainer is gone ({holder_alive(read_holder(self.path / contract.LEASE))[1]})"

    @property
    def judge(self) -> str:
        """Which segmenter gave the run's FCN-score ('' without one): its weights' identity, or for runs from
        before it was recorded, the real test photos' score it gave (the same judge on the same split gives
        the same)."""
        fcn = self.summary.get("fcn") or {}
        if fcn.get("segmenter_id"):
            return str(fcn["segmenter_id"])
        real = (fcn.get("real") or {}).get("pixel_acc")
        return f"scored the real test photos {real:.6f}" if isinstance(real, (int, float)) else ""

    @property
    def control(self) -> dict[str, dict[str, float]]:
        """The trivial outputs' and the real photos' mean scores on the run's test photos, as the trainer
        recorded them ({} for a run from before: gan/evaluators/controls.py)."""
        control = self.summary.get("control")
        return control if isinstance(control, dict) else {}

    @property
    def seed(self) -> int:
        return self.config["train"]["seed"]

    def flat_config(self) -> dict:
        """Every config field of the run's generator by dotted name, in today's names. A field added after
        the run was written reads as its default (the run ran under it), an older flat name as the setting
        it now is (`model.resnet_blocks` -> `model.resnet.blocks`), and other generators' own settings are
        left out (a U-Net run has no ResNet blocks): so nothing looks swept between old and new runs of
        one configuration."""
        from gan.config import run_fields  # plain dataclasses: no TensorFlow
        return run_fields(self.config, self.generator)


def _flatten(d: dict, prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


class UnreadableRun(Exception):
    """A run directory the analysis cannot use; the message names the file and what is wrong."""


class RunList(list):
    """The runs found; `skipped`: (path, reason) of folders left out (unreadable, or not pix2pix runs);
    `merged`: (the run kept, [its copies]) where several folders hold the same run."""

    def __init__(self, runs=(), skipped=(), merged=(), roots=()):
        super().__init__(runs)
        self.skipped: list[tuple[Path, str]] = list(skipped)
        self.merged: list[tuple[str, list[str]]] = list(merged)
        self.roots: list[Path] = list(roots)  # the folders searched (a settle sweep's plan lives in one)

    def notes(self) -> list[str]:
        """One sentence per group of copies that counts once."""
        return [f"{kept} counted once: {', '.join(copies)} {'is a copy' if len(copies) == 1 else 'are copies'} "
                "of it (same generator, configuration, training seed, split and data)" for kept, copies in self.merged]


# Fields that name or place a run rather than define it: copies of one run differ only in these.
PLACE_FIELDS = {"run_name", "experiment", "data.source", "data.split_file", "data.cache_dir"}
# What varies between replicates of one configuration, and what only changes how a run is measured: neither
# makes a configuration of a sweep.
REPLICATE_FIELDS = {"train.seed", "data.split_seed"}
MEASUREMENT_FIELDS = {"eval.segmenter", "eval.fcn_every_eval", "eval.inception_weights", "eval.workers", "eval.samples"}


def identity(run: "Run") -> str:
    """What makes a run this run: generator, configuration (training seed included), split and data copy.
    Two folders with the same identity are one run trained twice (or copied), not two seeds."""
    flat = {k: v for k, v in run.flat_config().items() if k not in PLACE_FIELDS}
    return json.dumps([flat, run.split_key, run.data.get("fingerprint", "")], sort_keys=True, default=str)


def split_key(path: Path, config: dict) -> str:
    """A short hash of the split a run trained and was tested on: its split.json's file lists (or ids), else
    the config that chose it."""
    record = {}
    try:
        record = json.loads((path / contract.SPLIT).read_text()) if (path / contract.SPLIT).exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        record = {}
    if isinstance(record, dict) and isinstance(record.get("files"), dict):
        chosen = record["files"]
    elif isinstance(record, dict) and all(isinstance(record.get(s), list) for s in ("train", "val", "test")):
        chosen = {s: record[s] for s in ("train", "val", "test")}
    else:
        data = config.get("data", {})
        chosen = {"split_seed": data.get("split_seed"), "split_file": data.get("split_file")}
    return hashlib.sha1(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _csv(path: Path, required: tuple[str, ...] = ("step",)) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UnreadableRun(f"{path}: not a readable CSV ({str(e).strip().splitlines()[0]})") from None
    if len(frame.columns):  # a file with a first line: that line must be the header
        try:
            contract.check_columns(frame.columns, required, path)
        except UserError as e:
            raise UnreadableRun(str(e)) from None
    return frame


def _json(path: Path, check=contract.check_object) -> dict:
    try:
        return check(json.loads(path.read_text()) if path.exists() else {}, path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnreadableRun(f"{path}: not valid JSON ({e})") from None
    except UserError as e:  # valid JSON of the wrong shape
        raise UnreadableRun(str(e)) from None


def load_run(path: str | Path) -> Run:
    """One pix2pix run; UnreadableRun (naming the file) for a damaged one or for another kind of folder."""
    path = Path(path)
    config = _json(path / contract.CONFIG, contract.check_config)
    kind = config.get("kind", contract.RUN_KIND)
    if kind != contract.RUN_KIND:
        raise UnreadableRun(f"{path}: not a pix2pix run (config.json kind: {kind})")
    specs = contract.metric_specs(config)
    return Run(path, config["config"], _json(path / contract.STATUS, contract.check_status),
               _csv(path / contract.METRICS_CSV, contract.METRICS_KEYS), _csv(path / contract.TIMINGS_CSV),
               _csv(path / contract.TEST_CSV, ("image",)), _json(path / contract.SUMMARY, contract.check_summary),
               _csv(path / contract.FCN_CSV, contract.METRICS_KEYS), environment=config.get("environment", {}),
               data=config.get("data", {}), metric_specs=specs, split_key=split_key(path, config["config"]))


def consistency_warnings(runs: list[Run]) -> list[str]:
    """What makes these runs not comparable as they stand: different metric definitions, or different
    copies of the data (a fingerprint that differs between runs of one dataset name)."""
    warnings = [w for w in (version_warning(runs),) if w]
    copies: dict[str, dict[str, list[str]]] = {}
    for r in runs:
        if r.data.get("fingerprint"):
            copies.setdefault(Path(r.data["source"]).name, {}).setdefault(r.data["fingerprint"][:12], []).append(r.name)
    judges: dict[str, list[str]] = {}
    for r in runs:
        if r.judge:
            judges.setdefault(r.judge, []).append(r.name)
    if len(judges) > 1:
        warnings.append("FCN-scores come from different segmenters (" + "; ".join(
            f"{judge}: {', '.join(names)}" for judge, names in sorted(judges.items()))
            + "): not comparable; compare the FCN-scores of one judge's runs only.")
    for name, prints in sorted(copies.items()):
        if len(prints) > 1:
            warnings.append(f"Runs on '{name}' trained on different copies of it (data fingerprints "
                            + "; ".join(f"{fp}: {', '.join(names)}" for fp, names in sorted(prints.items()))
                            + "): compare them only knowingly.")
    return warnings


def version_warning(runs: list[Run]) -> str:
    """'' when every run used the same definition of each metric it has, else one sentence saying which
    metric was measured with which version by which runs."""
    parts = []
    for metric in metric_names(runs):
        versions: dict[int, list[str]] = {}
        for r in runs:
            if metric in r.metric_specs:
                versions.setdefault(int(r.metric_specs[metric].get("version", 1)), []).append(r.name)
        if len(versions) > 1:
            parts.append(f"{metric} " + "; ".join(f"version {v}: {', '.join(names)}"
                                                  for v, names in sorted(versions.items())))
    if not parts:
        return ""
    return ("Runs were measured with different metric definitions (gan/evaluators/metrics.py): " + " | ".join(parts)
            + ". Their values are not comparable; report them apart.")


def find_runs(*roots: str | Path) -> RunList:
    """Every run under the roots (a root may itself be a run), sorted by path; folders that cannot be
    read, or hold another kind of run (the segmenter's), are listed in `.skipped` instead."""
    paths: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder")
        candidates = [root / contract.CONFIG, *root.rglob(contract.CONFIG)]
        paths.update(p.parent for p in candidates if p.exists() and contract.REPLACED not in str(p)
                     and contract.TUNE_STATE not in p.parts)
    runs = RunList()
    for p in sorted(paths):
        try:
            runs.append(load_run(p))
        except UnreadableRun as e:
            runs.skipped.append((p, str(e)))
    runs = _merge_copies(runs)
    runs.roots = [Path(r) for r in roots]
    if len({r.name for r in runs}) < len(runs):  # e.g. default/unet under two roots: name them by path
        common = Path(os.path.commonpath([r.path for r in runs]))
        for r in runs:
            r.label = str(r.path.relative_to(common)) if r.path != common else r.path.name
    return runs


def _merge_copies(runs: RunList) -> RunList:
    """One run per identity: copies (the same runs under two experiments, a folder copied) would otherwise
    count as independent seeds. The finished copy with the most steps is kept."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(identity(r), []).append(r)
    kept, merged = [], []
    for group in groups.values():
        group.sort(key=lambda r: (r.state != "finished", -int(r.status.get("step", 0) or 0), str(r.path)))
        kept.append(group[0])
        if len(group) > 1:
            merged.append((str(group[0].path), [str(r.path) for r in group[1:]]))
    kept.sort(key=lambda r: str(r.path))
    return RunList(kept, runs.skipped, merged)


def swept_fields(runs: list[Run]) -> list[str]:
    """Config fields (other than names and the generator) whose value differs between runs."""
    flats = [r.flat_config() for r in runs]
    # A training seed is a replicate, not a setting: seeds are compared by the statistics, not the sweep table.
    # The data split is a replicate too (the variance table separates it), and the judge and what is measured
    # along the way change what is reported, not what is trained.
    keys = set().union(*flats) - PLACE_FIELDS - REPLICATE_FIELDS - MEASUREMENT_FIELDS - {"model.generator"}
    # A generator's own setting is compared among the runs of that generator only.
    return sorted(k for k in keys if len({json.dumps(f[k]) for f in flats if k in f}) > 1)


def metrics_frame(runs: list[Run]) -> pd.DataFrame:
    """Every evaluation row of every run: run, generator, state, step, split, metrics."""
    frames = [r.metrics.assign(run=r.name, generator=r.generator, state=r.state) for r in runs if not r.metrics.empty]
    return _with_specs(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), runs)


def fcn_frame(runs: list[Run]) -> pd.DataFrame:
    """FCN-score rows of every evaluation (runs trained with eval.fcn_every_eval): run, generator, step,
    split (train / val for generated photos, train_real / val_real for the real-photo reference)."""
    frames = [r.fcn_metrics.assign(run=r.name, generator=r.generator) for r in runs if not r.fcn_metrics.empty]
    return _with_specs(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), runs)


def timings_frame(runs: list[Run]) -> pd.DataFrame:
    """Every interval of every run, with `shared`: True where the interval overlapped in time an interval
    of another run on the same host (its seconds then measure scheduling, not the generator)."""
    frames = [r.timings.assign(run=r.name, generator=r.generator) for r in runs if not r.timings.empty]
    if not frames:
        return pd.DataFrame()
    t = pd.concat(frames, ignore_index=True)
    t["shared"] = False
    if {"started", "ended", "host"} <= set(t):
        for _, group in t.groupby("host"):
            t.loc[group.index, "shared"] = _overlaps_another_run(group)
    return t


def _overlaps_another_run(group: pd.DataFrame) -> np.ndarray:
    """For each interval of one host: does it overlap in time an interval of another run? Sorted by start,
    only the intervals that started before this one ended can overlap it (linear in the intervals that do)."""
    order = np.argsort(group.started.to_numpy(float), kind="stable")
    started = group.started.to_numpy(float)[order]
    ended = group.ended.to_numpy(float)[order]
    runs = group.run.to_numpy()[order]
    shared = np.zeros(len(group), bool)
    for i in range(len(group)):
        before = np.searchsorted(started, ended[i], side="left")  # candidates: started before i ended
        j = np.arange(before)
        hit = (ended[:before] > started[i]) & (runs[:before] != runs[i]) & (j != i)
        shared[i] = bool(hit.any())
    result = np.zeros(len(group), bool)
    result[order] = shared
    return result


def test_frame(runs: list[Run]) -> pd.DataFrame:
    """Per-image test metrics of every finished run: run, generator, seed, split (its key), image, metrics."""
    frames = [r.test_metrics.assign(run=r.name, generator=r.generator, seed=r.seed, split=r.split_key)
              for r in runs if not r.test_metrics.empty]
    return _with_specs(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), runs)
