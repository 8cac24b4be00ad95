"""The study's image-comparison metrics, computed per image in worker processes.

All functions take uint8 RGB arrays (generated, real) of the same shape. No
TensorFlow here: worker processes import only NumPy, OpenCV and scikit-image,
and `analysis/` may reuse the definitions.

- `hist_corr`: grayscale (OpenCV BGR->GRAY weights), 256-bin histograms over
  [0, 256), `cv2.compareHist(..., HISTCMP_CORREL)`; -1..1.
- `template_match`: `cv2.matchTemplate(generated, real, TM_CCOEFF_NORMED)` on
  the whole RGB images (same size, so one score); -1..1. OpenCV's value for a
  constant image (zero variance) is taken as is; a non-finite result is 0.
- `feature_match`: ORB (OpenCV defaults: 500 features, scale 1.2, 8 levels)
  on both grayscale images; brute-force Hamming k-NN (k=2) from the real
  image's descriptors to the generated one's; Lowe's ratio test at 0.75;
  good matches / keypoints of the real image; 0..1, 0 when either image has
  no descriptors.
- `ssim`: `skimage.metrics.structural_similarity(real, generated,
  channel_axis=-1, data_range=255)`, default 7x7 window.
- `psnr`: 10 log10(255^2 / MSE) in dB, capped at 100 dB (identical images).
- `l1`: mean absolute difference scaled to 0..1 (|a - b| / 255).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable

import cv2
import numpy as np
from skimage.metrics import structural_similarity

RATIO_TEST = 0.75
PSNR_CAP_DB = 100.0


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def hist_corr(generated: np.ndarray, real: np.ndarray) -> float:
    hists = [cv2.calcHist([_gray(im)], [0], None, [256], [0, 256]) for im in (generated, real)]
    return float(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_CORREL))


def template_match(generated: np.ndarray, real: np.ndarray) -> float:
    score = float(cv2.matchTemplate(generated, real, cv2.TM_CCOEFF_NORMED)[0, 0])
    return score if math.isfinite(score) else 0.0


_ORB = None


def feature_match(generated: np.ndarray, real: np.ndarray) -> float:
    global _ORB
    if _ORB is None:  # one detector per process; creation is the slow part
        _ORB = cv2.ORB_create()
    kp_real, des_real = _ORB.detectAndCompute(_gray(real), None)
    _, des_gen = _ORB.detectAndCompute(_gray(generated), None)
    if des_real is None or des_gen is None or not kp_real:
        return 0.0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(des_real, des_gen, k=2)
    good = sum(1 for m in matches if len(m) == 2 and m[0].distance < RATIO_TEST * m[1].distance)
    return good / len(kp_real)


def ssim(generated: np.ndarray, real: np.ndarray) -> float:
    return float(structural_similarity(real, generated, channel_axis=-1, data_range=255))


def psnr(generated: np.ndarray, real: np.ndarray) -> float:
    mse = float(np.mean((generated.astype(np.float64) - real.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(255.0 ** 2 / mse))


def l1(generated: np.ndarray, real: np.ndarray) -> float:
    return float(np.mean(np.abs(generated.astype(np.float32) - real.astype(np.float32))) / 255.0)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "hist_corr": hist_corr, "template_match": template_match, "feature_match": feature_match,
    "ssim": ssim, "psnr": psnr, "l1": l1}
METRIC_NAMES = tuple(METRICS)


def image_metrics(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    if generated.shape != real.shape or generated.dtype != np.uint8 or real.dtype != np.uint8:
        raise ValueError(f"metrics need two uint8 images of one shape, got {generated.shape} {generated.dtype} "
                         f"and {real.shape} {real.dtype}")
    return {name: fn(generated, real) for name, fn in METRICS.items()}


def _batch_metrics(pairs: tuple[np.ndarray, np.ndarray]) -> list[dict[str, float]]:
    generated, real = pairs
    return [image_metrics(g, r) for g, r in zip(generated, real)]


def _worker_init() -> None:
    cv2.setNumThreads(1)  # the pool is the parallelism


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
                                             initializer=_worker_init)
        chunks = np.array_split(np.arange(len(generated)), min(self.workers * 2, len(generated)))
        parts = self._pool.map(_batch_metrics, [(generated[c], real[c]) for c in chunks])
        return [row for part in parts for row in part]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "MetricPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
