"""Metrics: equal to direct OpenCV / scikit-image calls, and their known values."""

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gan.evaluators.metrics import (MetricPool, metric_names, feature_match, hist_corr, image_metrics, orb_patch_size, ssim,
                         template_match)
from gan.datasets.synthetic import draw_scene


@pytest.fixture(scope="module")
def photos():
    return draw_scene(0, 1, 128)[0], draw_scene(0, 2, 128)[0]


def test_identical_images_score_perfectly(photos):
    real = photos[0]
    m = image_metrics(real, real.copy())
    assert m["hist_corr"] == pytest.approx(1.0) and m["template_match"] == pytest.approx(1.0, abs=1e-5)
    assert m["ssim"] == pytest.approx(1.0) and m["feature_match"] == pytest.approx(1.0)
    assert m["psnr"] == 100.0 and m["l1"] == 0.0


def test_equal_to_direct_library_calls(photos):
    gen, real = photos
    g_gray, r_gray = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (gen, real))
    h = [cv2.calcHist([x], [0], None, [256], [0, 256]) for x in (g_gray, r_gray)]
    assert hist_corr(gen, real) == pytest.approx(cv2.compareHist(h[0], h[1], cv2.HISTCMP_CORREL))
    # The study columns on grayscale, as the cited tutorials compute them; the RGB forms beside them.
    assert template_match(gen, real) == pytest.approx(
        float(cv2.matchTemplate(g_gray, r_gray, cv2.TM_CCOEFF_NORMED)[0, 0]))
    assert ssim(gen, real) == pytest.approx(structural_similarity(r_gray, g_gray, data_range=255))
    m = image_metrics(gen, real)
    assert m["template_match_rgb"] == pytest.approx(float(cv2.matchTemplate(gen, real, cv2.TM_CCOEFF_NORMED)[0, 0]))
    assert m["ssim_rgb"] == pytest.approx(structural_similarity(real, gen, channel_axis=-1, data_range=255))
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(real, gen, data_range=255))
    orb = cv2.ORB_create(edgeThreshold=16, patchSize=16)  # 128 px: half ORB's 31 px default
    kp, d_real = orb.detectAndCompute(r_gray, None)
    _, d_gen = orb.detectAndCompute(g_gray, None)
    good = [m for m in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(d_real, d_gen, k=2)
            if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
    assert feature_match(gen, real) == pytest.approx(len(good) / len(kp))


def test_constant_images(photos):
    real = photos[0]
    gray = np.full_like(real, 128)
    m = image_metrics(gray, real)
    assert m["feature_match"] == 0.0  # no keypoints on a flat image
    assert m["template_match"] == 0.0  # zero variance: no correlation
    assert -1 <= m["hist_corr"] < 0.5 and 0 <= m["ssim"] < 0.9
    assert image_metrics(gray, gray.copy())["hist_corr"] == pytest.approx(1.0)


def test_shift_lowers_every_score(photos):
    real = photos[0]
    shifted = np.roll(real, 9, axis=1)
    same, moved = image_metrics(real, real), image_metrics(shifted, real)
    for name in ("template_match", "ssim", "psnr", "feature_match"):
        assert moved[name] < same[name], name
    assert moved["l1"] > 0
    # A histogram ignores where pixels are: a circular shift keeps it exactly.
    assert moved["hist_corr"] == pytest.approx(1.0)


def test_pool_matches_serial(photos):
    gen = np.stack([photos[0], photos[1], photos[0]])
    real = np.stack([photos[1], photos[1], photos[0]])
    serial = [image_metrics(g, r) for g, r in zip(gen, real)]
    with MetricPool(2) as pool:
        parallel = pool(gen, real)
    assert [[row[k] for k in metric_names()] for row in parallel] == \
           [[row[k] for k in metric_names()] for row in serial]


def test_mismatched_images_are_refused(photos):
    with pytest.raises(ValueError, match="one shape"):
        image_metrics(photos[0], photos[0][:64])


def test_orb_scales_below_256_px_and_keeps_defaults_from_256():
    assert [orb_patch_size(s) for s in (32, 64, 128, 256, 512)] == [5, 8, 16, 31, 31]
    # At 64 px (the small demo) ORB's default 31 px border leaves no keypoints; the scaled one finds them.
    real, other = draw_scene(0, 1, 64)[0], draw_scene(0, 2, 64)[0]
    default_kp = cv2.ORB_create().detect(cv2.cvtColor(real, cv2.COLOR_RGB2GRAY), None)
    assert len(default_kp) == 0
    assert feature_match(real, real) == pytest.approx(1.0) and 0 <= feature_match(other, real) < 1.0
