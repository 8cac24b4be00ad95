"""The trivial outputs every comparison is held against: a constant gray image and another real test photo,
scored on a split's test photos with no training, beside the real photos scored against themselves.

The settle rule's control (analysis/settle.py) is, per metric, the better of the two trivial outputs; its
margins are a fraction of the span from it to the real photos (jobs/margins.py prints them). A metric on
which no generator beats the control cannot tell the generators apart from a gray image, so its
"equivalent" would carry no information. Images are uint8 (N, H, W, 3), as the loader gives them.
"""

from __future__ import annotations

import numpy as np

from gan.contract import CONTROL_REAL as REAL, CONTROL_TRIVIAL as TRIVIAL


def trivial_outputs(photos: np.ndarray) -> dict[str, np.ndarray]:
    """The two trivial outputs for these test photos: gray 128 everywhere; each photo's neighbour in the split."""
    return {TRIVIAL[0]: np.full_like(photos, 128), TRIVIAL[1]: np.roll(photos, 1, axis=0)}


def control_means(photos: np.ndarray, labels: np.ndarray, pool, segmenter=None) -> dict[str, dict[str, float]]:
    """{trivial output or 'real photos': {metric: mean over the test photos}}: the study's image metrics
    (`pool`: a gan.evaluators.metrics.MetricPool) and, with a segmenter, the FCN-score of each (for the
    real photos: their own segmentation against their labels)."""
    candidates = {**trivial_outputs(photos), REAL: photos}
    means = {}
    for name, images in candidates.items():
        rows = pool(images, photos)
        means[name] = {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}
        if segmenter is not None:
            fcn, _ = segmenter.fcn_scores(images, labels)
            means[name].update({m: float(np.mean([r[m] for r in fcn])) for m in fcn[0]})
    return means


def control_of(means: dict[str, dict[str, float]], metrics: list[str],
               lower_is_better: set[str] = frozenset()) -> tuple[dict[str, float], dict[str, str], dict[str, float]]:
    """(control score, which trivial output it is, the real photos' score) per metric: the control is the
    better of the trivial outputs, so a generator must beat the harder of the two."""
    control, name, ceiling = {}, {}, {}
    for m in metrics:
        pick = (min if m in lower_is_better else max)(TRIVIAL, key=lambda t: means[t][m])
        control[m], name[m], ceiling[m] = means[pick][m], pick, means[REAL][m]
    return control, name, ceiling


def measure(cfg, metrics: list[str], lower_is_better: set[str] = frozenset()):
    """(control, name, ceiling as control_of gives them, the judge's identity or "") on the test split `cfg`
    draws (its data, split and image size), the segmenter of `cfg.eval.segmenter` scoring the FCN metrics."""
    from gan.datasets.loader import load_dataset
    from gan.evaluators.metrics import MetricPool
    test = load_dataset(cfg).test
    segmenter = None
    if any(m.startswith("fcn_") for m in metrics) and cfg.eval.segmenter:
        from gan.evaluators.segmenter import Segmenter
        segmenter = Segmenter.load(cfg.eval.segmenter)
    with MetricPool(cfg.eval.workers) as pool:
        means = control_means(test.targets, test.inputs, pool, segmenter)
    return (*control_of(means, metrics, lower_is_better), segmenter.identity if segmenter else "")
