"""The study's FCN-score track (docs/results.md): the same runs scored by one kept judge, its looks from
training seed 5, the margin the page states.

    python jobs/tune.py --config jobs/configs/study_fcn.py

Its own experiment (one frozen plan per experiment); finished runs of the plan's configuration copied or
re-scored into it (`jobs/evaluate.py RUN --rejudge runs/segmenter/segmenter`) count as its seeds.
"""


def get_config():
    return {
        "gens": "all",
        "preset": "cityscapes_cpu",
        "data": "cityscapes",
        "data.split_file": "docs/results/split.json",
        "eval.segmenter": "runs/segmenter/segmenter",
        "settle": True,
        "settle_metrics": "fcn_pixel_acc",
        "margin": ["fcn_pixel_acc=0.0311"],
        "first_seed": 5,
        "experiment": "settle-fcn",
    }
