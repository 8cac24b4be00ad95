"""The run-directory contract (docs/design.md), in one place: what training writes and analysis reads.

Standard library only, so `analysis/` imports it without TensorFlow, OpenCV or
scikit-image. File names, CSV columns, metric names and which way is better,
the metric-definitions version, the path layout and the `kind` that tells a
pix2pix run from anything else (the segmenter's run directory, say).

    <root>/<experiment>/<run_name>/
      config.json  status.json  split.json  metrics.csv  timings.csv  fcn_metrics.csv
      test_metrics.csv  summary.json  lease.json  samples/  checkpoints/  tensorboard/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gan.errors import UserError

RUN_KIND = "pix2pix"  # config.json "kind"; gan/segmenter.py writes "segmenter"

# The study's four columns (grayscale, as the cited references compute them), then the extras.
STUDY_METRICS = ("hist_corr", "template_match", "feature_match", "ssim")
EXTRA_METRICS = ("ssim_rgb", "template_match_rgb", "psnr", "l1")
METRIC_NAMES = STUDY_METRICS + EXTRA_METRICS
FCN_METRICS = ("fcn_pixel_acc", "fcn_class_acc", "fcn_iou")  # with a segmenter (gan/segmenter.py)
LOWER_IS_BETTER = frozenset({"l1"})
# Version of the metric definitions in gan/metrics.py; runs of different versions are never mixed
# silently. 1: ssim and template_match on RGB, ORB defaults at every size. 2: the study columns on
# grayscale, *_rgb extras, ORB border/patch scaled below 256 px.
METRICS_VERSION = 2

METRICS_COLUMNS = ("step", "split", *METRIC_NAMES, "images")
FCN_COLUMNS = ("step", "split", *FCN_METRICS, "images")
# system_seconds: kernel CPU time of the interval's training steps (page faults show up here);
# host / device / cpus: where the interval ran; started / ended: its wall-clock span (Unix seconds),
# so the analysis can tell intervals that shared a host with another run.
TIMINGS_COLUMNS = ("step", "steps", "train_seconds", "steps_per_second", "images_per_second", "eval_seconds",
                   "system_seconds", "host", "device", "cpus", "started", "ended")

CONFIG, STATUS, SPLIT, SUMMARY, LEASE = "config.json", "status.json", "split.json", "summary.json", "lease.json"
METRICS_CSV, TIMINGS_CSV, FCN_CSV, TEST_CSV = "metrics.csv", "timings.csv", "fcn_metrics.csv", "test_metrics.csv"
# stopped: ended early on purpose by a sweep's scheduler (ASHA); preempted: rerun or --resume to continue.
STATES = ("running", "finished", "failed", "preempted", "stopped")


def run_path(root: str | Path, experiment: str, run_name: str) -> Path:
    return Path(root) / experiment / run_name


# -- shapes: what a reader may rely on once a file parsed -------------------------

def _fail(path, what: str) -> None:
    raise UserError(f"{path}: {what}; restore it from a copy or move the run aside")


def check_status(obj: Any, path) -> dict:
    """status.json: {} (not yet written) or {"state": one of STATES, "step": int >= 0, ...}."""
    if not isinstance(obj, dict):
        _fail(path, f"not a status record (a JSON object), but {type(obj).__name__}")
    if obj and (obj.get("state") not in STATES or not _count(obj.get("step"))):
        _fail(path, f"not a status record (needs state in {'/'.join(STATES)} and a step >= 0)")
    return obj


def check_config(obj: Any, path) -> dict:
    """config.json: {"kind": str, "config": {<group>: {...}}, "environment": {...}, "data": {...}};
    a pix2pix run's config names its generator and training seed."""
    if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict):
        _fail(path, "not a run configuration (a JSON object with a 'config' object)")
    for key in ("environment", "data"):
        if not isinstance(obj.get(key, {}), dict):
            _fail(path, f"'{key}' is not a JSON object")
    if obj.get("kind", RUN_KIND) == RUN_KIND:
        config = obj["config"]
        if not isinstance(config.get("model"), dict) or not isinstance(config["model"].get("generator"), str) \
                or not isinstance(config.get("train"), dict) or not _count(config["train"].get("seed")):
            _fail(path, "not a pix2pix run configuration (needs config.model.generator and config.train.seed)")
    return obj


def check_summary(obj: Any, path) -> dict:
    """summary.json: an object; the parts the analysis reads have their shapes (objects of numbers)."""
    check_object(obj, path)
    for key in ("fcn", "segmenter_fid", "selected", "test"):
        if key in obj and not isinstance(obj[key], dict):
            _fail(path, f"'{key}' is not a JSON object")
    if not all(isinstance(v, (int, float)) for v in obj.get("segmenter_fid", {}).values()):
        _fail(path, "'segmenter_fid' holds a value that is not a number")
    if "fcn" in obj and not isinstance(obj["fcn"].get("real_image_mean", {}), dict):
        _fail(path, "'fcn.real_image_mean' is not a JSON object")
    return obj


def check_object(obj: Any, path) -> dict:
    """summary.json and the other JSON records: an object."""
    if not isinstance(obj, dict):
        _fail(path, f"not a JSON object, but {type(obj).__name__}")
    return obj


def check_columns(columns, required: tuple[str, ...], path) -> None:
    """A CSV of the run directory starts with its header; `required` must be in it."""
    missing = [c for c in required if c not in list(columns if columns is not None else ())]
    if missing:
        _fail(path, f"not a table of this run directory (its first line lacks the column(s) {', '.join(missing)})")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
