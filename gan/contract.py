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

RUN_KIND = "pix2pix"  # config.json "kind" of a training run (a segmenter run: SEGMENTER_KIND)

# The image metrics are registered in gan/evaluators/metrics.py (name, direction, study column or not, version) and
# every run records them in config.json "metrics". A run from before that record was measured with these
# (METRICS_VERSION 2 in its environment) or, with version 1, with the ones LEGACY_V1 lists.
LEGACY_METRICS = {
    "hist_corr": {"better": "higher", "study": True, "version": 1},
    "template_match": {"better": "higher", "study": True, "version": 2},
    "feature_match": {"better": "higher", "study": True, "version": 2},
    "ssim": {"better": "higher", "study": True, "version": 2},
    "ssim_rgb": {"better": "higher", "study": False, "version": 1},
    "template_match_rgb": {"better": "higher", "study": False, "version": 1},
    "psnr": {"better": "higher", "study": False, "version": 1},
    "l1": {"better": "lower", "study": False, "version": 1},
}
# Version 1 (before 2026-11-26): ssim and template_match on RGB, ORB defaults at every size, no *_rgb.
LEGACY_V1 = {name: {**spec, "version": 1} for name, spec in LEGACY_METRICS.items() if not name.endswith("_rgb")}
# Run-level version of the metric definitions, still written for readers of older runs; a metric's own
# version is in its record.
METRICS_VERSION = 2
# The segmenter's scores of a segmentation (its metrics.csv per epoch, its summary, the FCN-score's parts).
SEGMENTER_METRICS = ("pixel_acc", "class_acc", "iou")
SEGMENTER_COLUMNS = ("epoch", "loss", *SEGMENTER_METRICS)  # a segmenter run's metrics.csv: one row per epoch
FCN_METRICS = tuple(f"fcn_{m}" for m in SEGMENTER_METRICS)  # with a segmenter (gan/evaluators/segmenter.py)
FCN_SPECS = {name: {"better": "higher", "study": False, "version": 1} for name in FCN_METRICS}
# Columns of metrics.csv around the metrics, whatever metrics a run has.
METRICS_KEYS = ("step", "split")
METRICS_TAIL = ("images",)

FCN_COLUMNS = (*METRICS_KEYS, *FCN_METRICS, *METRICS_TAIL)
# system_seconds: kernel CPU time of the interval's training steps (page faults show up here);
# host / device / cpus: where the interval ran; started / ended: its wall-clock span (Unix seconds),
# so the analysis can tell intervals that shared a host with another run.
TIMINGS_COLUMNS = ("step", "steps", "train_seconds", "steps_per_second", "images_per_second", "eval_seconds",
                   "system_seconds", "host", "device", "cpus", "started", "ended")

CONFIG, STATUS, SPLIT, SUMMARY, LEASE = "config.json", "status.json", "split.json", "summary.json", "lease.json"
SAMPLES, CHECKPOINTS, TENSORBOARD = "samples", "checkpoints", "tensorboard"  # sub-folders of a run
BEST = "best"  # checkpoints/best/: the checkpoint eval.select best_val_<metric> kept
TEST_SHEET = "test.png"  # samples/test.png: input | target | output of the first test images
STEP_SHEET = "step_{step:06d}.png"  # samples/step_000250.png: the same on val images at an evaluation
EVAL_CSV = "eval_{split}_step{step}.csv"  # jobs/evaluate.py --split: per-image metrics of a checkpoint
CHECKPOINT_STATE = "checkpoint"  # checkpoints/checkpoint: TensorFlow's list of the kept checkpoints
CHECKPOINT_PREFIX = "ckpt"  # checkpoints/ckpt-<step>.index / .data-*: one checkpoint (CheckpointManager's name)
STEP_RECORD = "step.json"  # in a Ray Tune checkpoint: the step and run it holds
LEASE_TEMP, LEASE_BEAT = ".lease.{pid}.tmp", ".lease.{pid}.beat"  # the lease's whole-file writes, beside it
DAMAGED = ".damaged"  # checkpoints/ckpt-N.*.damaged: a checkpoint that could not be read, set aside
TUNE_STATE = "_tune"  # <root>/<experiment>/_tune: Ray Tune's own state (not a run)
TUNE_ARGS = "_tune_args.json"  # <root>/<experiment>/_tune_args.json: what jobs/tune.py --resume reruns
TUNE_LEASE = "_tune_lease.json"  # <root>/<experiment>/_tune_lease.json: the one sweep driver of the experiment
REJUDGE_PENDING = ".pending"  # <run>/rejudged/.pending/: a re-scoring in progress (moved into place when done)
SETTLE_TABLE = "settle"  # <root>/<experiment>/settle.csv and .md: the settle rule's last look (its verdict)
SETTLE_FROZEN = "frozen"  # a settle plan's own key holding its hash, each field's hash and the time it was frozen
REJUDGED = "rejudged"  # <run>/rejudged/<segmenter id>/: a test record kept when jobs/evaluate.py --rejudge re-scored it
REPLACED = ".replaced-"  # <run>.replaced-<time>: a run moved aside by --overwrite
SEGMENTER_KIND = "segmenter"  # config.json "kind" of a jobs/train_segmenter.py run
SEGMENTER_WEIGHTS = "segmenter.weights.h5"  # its weights, what --eval.segmenter loads
METRICS_CSV, TIMINGS_CSV, FCN_CSV, TEST_CSV = "metrics.csv", "timings.csv", "fcn_metrics.csv", "test_metrics.csv"
# stopped: ended early on purpose by a sweep's scheduler (ASHA); preempted: rerun or --resume to continue.
# summary.json "control": the trivial outputs every comparison is held against, and the real photos, each
# scored on the run's test photos (gan/evaluators/controls.py; analysis/settle.py's control).
CONTROL_TRIVIAL = ("constant gray image", "another real test photo")
CONTROL_REAL = "real photos"
# Config fields a resumed run may change without training otherwise (how long, how often it logs, where it
# caches, how it is measured, numerically equal fast paths); every other field makes another run.
# Config fields added after runs were counted by frozen plans, at the value that does what those runs did: a
# run's identity (analysis/settle.py config_identity) leaves them out at that value, so adding a choice
# does not change what an earlier run or plan is.
ADDED_FIELDS = {"model.discriminator": "patchgan"}
RESUMABLE_FIELDS = {"train.steps", "eval.workers", "train.log_every", "train.checkpoints_to_keep",
                    "data.cache_dir", "eval.segmenter", "eval.inception_weights", "optim.adam", "model.upsample",
                    "model.conv", "train.checkpoint_minutes", "train.steps_per_call", "eval.overlap"}
STATES = ("running", "finished", "failed", "preempted", "stopped")


def checkpoint_file(step: int) -> str:
    """'ckpt-250': the checkpoint of a step (its files are this plus .index and .data-*)."""
    return f"{CHECKPOINT_PREFIX}-{int(step)}"


def metrics_columns(names) -> tuple[str, ...]:
    """metrics.csv's header for these metric names."""
    return (*METRICS_KEYS, *names, *METRICS_TAIL)


def metric_specs(config_record: dict, environment: dict | None = None) -> dict[str, dict]:
    """A run's metrics {name: {"better", "study", "version"}}: its own record, else the legacy table of
    the run-level version it was measured with."""
    recorded = config_record.get("metrics")
    if isinstance(recorded, dict) and recorded:
        return recorded
    version = int((environment or config_record.get("environment", {})).get("metrics_version", 1))
    return dict(LEGACY_METRICS if version >= 2 else LEGACY_V1)


def lower_is_better(specs: dict[str, dict]) -> set[str]:
    return {name for name, spec in specs.items() if spec.get("better") == "lower"}


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
    metrics = obj.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) and v.get("better") in ("higher", "lower")
                                                for v in metrics.values()):
        _fail(path, "'metrics' is not an object of {\"better\": \"higher\"|\"lower\", ...} records")
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
