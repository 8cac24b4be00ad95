"""The study's image-comparison metrics, computed per image in worker processes.

All functions take uint8 RGB arrays (generated, real) of the same shape. No
TensorFlow here: worker processes import only NumPy, OpenCV and scikit-image,
and `analysis/` may reuse the definitions.

The four study columns work on grayscale images (OpenCV's RGB->GRAY
weights), as the references the study cites compute them (OpenCV's
histogram-comparison and template-matching tutorials, an ORB tutorial,
scikit-image's SSIM example):
- `hist_corr`: 256-bin histograms over [0, 256),
  `cv2.compareHist(..., HISTCMP_CORREL)`; -1..1.
- `template_match`: `cv2.matchTemplate(generated, real, TM_CCOEFF_NORMED)` of
  the whole images (same size, so one score); -1..1. A constant image (zero
  variance) has no correlation: 0.
- `feature_match`: ORB (500 features, scale 1.2, 8 levels) on both images;
  brute-force Hamming k-NN (k=2) from the real image's descriptors to the
  generated one's; Lowe's ratio test at 0.75; good matches / keypoints of the
  real image; 0..1, 0 when either image has no descriptors. At 256 px and
  above ORB's defaults (31 px border and patch); below, border and patch
  scale with the image (16 px at 128, 8 at 64), so the small demos have
  keypoints too - the study's 256 px protocol is unchanged.
- `ssim`: `skimage.metrics.structural_similarity(real, generated,
  data_range=255)`, default 7x7 window.
Extra columns: `ssim_rgb` and `template_match_rgb` (the same on the RGB
images; OpenCV sums the channels), `psnr` (dB, capped at 100 for identical
images), `l1` (mean absolute difference scaled to 0..1).

Each metric is one function registered with `@metric(...)`: its name (the
CSV column), which way is better, whether it is one of the study's four, and
the version of its definition. Every run records these in its config.json,
so the analysis reads a metric's direction from the run, and never averages
runs measured with different versions of a metric without saying so. (Runs
from before the record read as `gan/contract.LEGACY_METRICS`.) A new metric
is one decorated function here (the README's "Extending" section).
"""

from __future__ import annotations

import math
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from gan.registry import Registry
from gan.workers import end_with_parent

RATIO_TEST = 0.75
PSNR_CAP_DB = 100.0
ORB_FULL_SIZE = 256  # ORB's default 31 px border and patch from this size up


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]  # (generated, real) uint8 RGB of one shape -> a number
    higher_is_better: bool = True
    study: bool = False  # one of the study's four columns
    version: int = 1  # bump when the definition changes; runs of different versions are never mixed silently

    def spec(self) -> dict:
        """What a run records of it (config.json "metrics"), and what the analysis reads."""
        return {"better": "higher" if self.higher_is_better else "lower", "study": self.study,
                "version": self.version}


def _check_metric(m: Metric) -> None:
    if not m.name.isidentifier() or m.name in ("step", "split", "images", "image"):
        raise ValueError(f"metric name {m.name!r}: letters, digits and '_', not a column the tables already have")


METRICS: Registry[Metric] = Registry("metric", check=_check_metric)  # in registration order: the CSV's order


def metric(*, higher_is_better: bool = True, study: bool = False, version: int = 1):
    """Register the decorated function as a metric named after it (in definition order: the CSV's order)."""
    def register(fn):
        register_metric(Metric(fn.__name__, fn, higher_is_better, study, version))
        return fn
    return register


def register_metric(m: Metric) -> Metric:
    return METRICS.register(m)


def unregister_metric(name: str) -> None:
    METRICS.unregister(name)


def metric_names() -> tuple[str, ...]:
    return tuple(METRICS)


def metric_specs() -> dict[str, dict]:
    return {name: m.spec() for name, m in METRICS.items()}


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _template_match(generated: np.ndarray, real: np.ndarray) -> float:
    score = float(cv2.matchTemplate(generated, real, cv2.TM_CCOEFF_NORMED)[0, 0])
    return score if math.isfinite(score) else 0.0


_ORB: dict[int, "cv2.ORB"] = {}


def orb_patch_size(size: int) -> int:
    """ORB's border and patch size for an image whose shorter side is `size` (31 from 256 px up)."""
    return 31 if size >= ORB_FULL_SIZE else max(5, round(31 * size / ORB_FULL_SIZE))


@metric(study=True)
def hist_corr(generated: np.ndarray, real: np.ndarray) -> float:
    hists = [cv2.calcHist([_gray(im)], [0], None, [256], [0, 256]) for im in (generated, real)]
    return float(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_CORREL))


@metric(study=True, version=2)
def template_match(generated: np.ndarray, real: np.ndarray) -> float:
    return _template_match(_gray(generated), _gray(real))


@metric(study=True, version=2)
def feature_match(generated: np.ndarray, real: np.ndarray) -> float:
    patch = orb_patch_size(min(real.shape[:2]))
    if patch not in _ORB:  # one detector per process and size; creation is the slow part
        _ORB[patch] = cv2.ORB_create(edgeThreshold=patch, patchSize=patch)
    orb = _ORB[patch]
    kp_real, des_real = orb.detectAndCompute(_gray(real), None)
    _, des_gen = orb.detectAndCompute(_gray(generated), None)
    if des_real is None or des_gen is None or not kp_real:
        return 0.0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(des_real, des_gen, k=2)
    good = sum(1 for m in matches if len(m) == 2 and m[0].distance < RATIO_TEST * m[1].distance)
    return good / len(kp_real)


@metric(study=True, version=2)
def ssim(generated: np.ndarray, real: np.ndarray) -> float:
    return float(structural_similarity(_gray(real), _gray(generated), data_range=255))


@metric()
def ssim_rgb(generated: np.ndarray, real: np.ndarray) -> float:
    return float(structural_similarity(real, generated, channel_axis=-1, data_range=255))


@metric()
def template_match_rgb(generated: np.ndarray, real: np.ndarray) -> float:
    return _template_match(generated, real)


@metric()
def psnr(generated: np.ndarray, real: np.ndarray) -> float:
    mse = float(np.mean((generated.astype(np.float64) - real.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(255.0 ** 2 / mse))


@metric(higher_is_better=False)
def l1(generated: np.ndarray, real: np.ndarray) -> float:
    return float(np.mean(np.abs(generated.astype(np.float32) - real.astype(np.float32))) / 255.0)


def image_metrics(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    if generated.shape != real.shape or generated.dtype != np.uint8 or real.dtype != np.uint8:
        raise ValueError(f"metrics need two uint8 images of one shape, got {generated.shape} {generated.dtype} "
                         f"and {real.shape} {real.dtype}")
    return {name: m.fn(generated, real) for name, m in METRICS.items()}


def _batch_metrics(pairs: tuple[np.ndarray, np.ndarray]) -> list[dict[str, float]]:
    generated, real = pairs
    return [image_metrics(g, r) for g, r in zip(generated, real)]


def _worker_init(parent: int) -> None:
    end_with_parent(parent)  # a trainer killed with -9 takes its workers along
    cv2.setNumThreads(1)  # the pool is the parallelism
    # Ctrl-C and scancel signal the whole process group: the trainer alone decides what happens
    # (finish the evaluation, checkpoint, exit 75); a worker that died would break the pool.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


class MetricPool:
    """Computes per-image metrics in `workers` spawned processes (0 = one per core).

    Spawned, not forked: the parent holds TensorFlow's threads, which a fork
    would copy in an undefined state.
    """

    def __init__(self, workers: int = 0):
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, generated: np.ndarray, real: np.ndarray) -> list[dict[str, float]]:
        if len(generated) != len(real):
            raise ValueError("generated and real image counts differ")
        if self.workers == 1 or len(generated) < 2:
            return _batch_metrics((generated, real))
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=_worker_init, initargs=(os.getpid(),))
        chunks = np.array_split(np.arange(len(generated)), min(self.workers * 2, len(generated)))
        parts = self._pool.map(_batch_metrics, [(generated[c], real[c]) for c in chunks])
        rows = [row for part in parts for row in part]
        missing = [name for name in METRICS if rows and name not in rows[0]]
        if missing:  # registered in this process only: a spawned worker imports gan/evaluators/metrics.py afresh
            raise ValueError(f"metric {missing[0]!r} is not defined in gan/evaluators/metrics.py, so the metric workers "
                             "do not have it; define it there, or run with --eval.workers 1")
        return rows

    def submit(self, generated: np.ndarray, real: np.ndarray) -> "PendingRows":
        """The same rows as calling the pool, computed in its worker processes while the caller goes on
        (at least one worker, whatever `workers`): `.result()` waits for them."""
        if len(generated) != len(real):
            raise ValueError("generated and real image counts differ")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max(1, self.workers), mp_context=get_context("spawn"),
                                             initializer=_worker_init, initargs=(os.getpid(),))
        chunks = np.array_split(np.arange(len(generated)), max(1, min(self.workers * 2, len(generated))))
        return PendingRows([self._pool.submit(_batch_metrics, (generated[c], real[c])) for c in chunks if len(c)])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "MetricPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PendingRows:
    """Per-image metric rows still being computed (MetricPool.submit)."""

    def __init__(self, futures: list):
        self.futures = futures

    def result(self) -> list[dict[str, float]]:
        return [row for future in self.futures for row in future.result()]
