"""The equal tuning budget of docs/results.md: per generator, three configurations drawn from the hparams
and aug spaces under per-generator ASHA on the FCN-score, then its best and its default retrained on two
fresh seeds and compared on test.

    python jobs/tune.py --config jobs/configs/budget.py          # about 80 min on 2 cores
"""


def get_config():
    return {
        "gens": "all",
        "sweep": "hparams,aug",
        "samples": 3,
        "scheduler": "asha",
        "metric": "val_fcn_iou",
        "then_seeds": 2,
        "preset": "cityscapes_cpu",
        "train.steps": 400,
        "train.eval_every": 200,
        "data": "cityscapes",
        "data.split_file": "docs/results/split.json",
        "eval.segmenter": "runs/segmenter/segmenter",
        "eval.fcn_every_eval": True,
        "experiment": "budget",
        "report": "reports/budget",
    }
