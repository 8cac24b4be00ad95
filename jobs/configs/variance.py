"""The variance design of docs/results.md: the U-Net on six data splits, two training seeds each, so the
report splits a run's variance into the seed's share and the split's (variance_by_source).

    python jobs/tune.py --config jobs/configs/variance.py        # 12 runs, unet-split<k>-seed<s>

Each split k is drawn by data.split_seed k from the archive (400/50/50), so split 0 here is drawn, not the
study's split file; the page's table pools the study's seeds on its split with splits 1-5 of this design.
"""


def get_config():
    return {
        "gens": "unet",
        "preset": "cityscapes_cpu",
        "data": "cityscapes",
        "seeds": 2,
        "splits": 6,
        "experiment": "variance",
        "report": "reports/variance",
    }
