"""The study of docs/results.md, its four metrics: the three generators at 128 px on the study's fixed
400/50/50 split of the pix2pix Cityscapes archive, seeds in rounds until every comparison is decided.

    python jobs/tune.py --config jobs/configs/study.py                  # Ray (this machine, or --address)
    python jobs/submit.py --config jobs/configs/study.py --partition gpu --gpus-per-trial 1 --time 120

Needs the archive (`python jobs/get_data.py download cityscapes`) and the judge the runs are scored by
(`python jobs/train_segmenter.py --data cityscapes` -> runs/segmenter/segmenter). The plan is measured
(the control on the split's test photos) and frozen before the first round; `--resume` continues it.
"""


def get_config():
    return {
        "gens": "all",
        "preset": "cityscapes_cpu",
        "data": "cityscapes",
        "data.split_file": "docs/results/split.json",
        "eval.segmenter": "runs/segmenter/segmenter",
        "settle": True,
        "settle_metrics": "hist_corr,template_match,feature_match,ssim",
        "experiment": "settle",
        "report": "reports/settle",
    }
