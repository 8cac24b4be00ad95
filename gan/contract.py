"""The run-directory contract (DESIGN.md), in one place: what training writes and analysis reads.

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
STATES = ("running", "finished", "failed", "preempted")


def run_path(root: str | Path, experiment: str, run_name: str) -> Path:
    return Path(root) / experiment / run_name
