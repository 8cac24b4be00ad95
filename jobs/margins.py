"""Measure the settle rule's equivalence margins on a dataset's test photos.

    python jobs/margins.py --data cityscapes --preset cityscapes_cpu \
        --data.split_file docs/results/split.json --eval.segmenter runs/segmenter/segmenter

A margin is 10 % of the span between a trivial output and the real photos
(analysis/settle.py): per metric, on the test split, the trivial end is the
better of a constant gray image and another real test photo (each photo's
neighbour in the split) scored against each photo; the real end is each
photo scored against itself, and for the FCN-score the real photos'
segmentation scored against their labels. Uses no generator: the margins
are fixed before any run is compared. Prints the table and the --margin
flags of `jobs/tune.py --settle`. The job's rules: config fields by dotted
name; exit 0, or 2 with one line on bad input.
"""

import argparse

from gan.cli import add_common_flags, config_from_args, run_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    args, extra = parser.parse_known_args()
    cfg = config_from_args(args, extra)

    import numpy as np

    from analysis.settle import MARGIN_FRACTION
    from gan.datasets.loader import load_dataset
    from gan.evaluators.controls import REAL, TRIVIAL, control_means
    from gan.evaluators.metrics import METRICS, MetricPool
    test = load_dataset(cfg).test
    photos = test.targets
    segmenter = None
    if cfg.eval.segmenter:
        from gan.evaluators.segmenter import Segmenter
        segmenter = Segmenter.load(cfg.eval.segmenter)
    with MetricPool(cfg.eval.workers) as pool:
        means = control_means(photos, test.inputs, pool, segmenter)
    candidates = TRIVIAL
    print(f"{len(photos)} test photos of {test.ids[0]}..; margin = {MARGIN_FRACTION:g} x (real - trivial), trivial = "
          "the better of the two trivial outputs")
    print("| metric | constant gray | another photo | real | margin |\n|---|---|---|---|---|")
    flags = []
    for metric in means[REAL]:
        lower = metric in METRICS and not METRICS[metric].higher_is_better
        trivial = (min if lower else max)(means[n][metric] for n in candidates)
        margin = MARGIN_FRACTION * abs(means[REAL][metric] - trivial)
        print(f"| {metric} | {means['constant gray image'][metric]:.4f} | {means['another real test photo'][metric]:.4f} "
              f"| {means[REAL][metric]:.4f} | {margin:.4g} |")
        if np.isfinite(margin) and margin > 0:
            flags.append(f"--margin {metric}={margin:.4g}")
    print("\n" + " ".join(flags))
    return 0


if __name__ == "__main__":
    run_main(main)
