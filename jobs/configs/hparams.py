"""A hyper-parameter and augmentation search (the README's sweep): eight configurations per generator
under per-generator ASHA on validation SSIM.

    python jobs/tune.py --config jobs/configs/hparams.py --preset small   # any flag overrides the file
    python jobs/tune.py --experiment sweep1 --resume                        # after an interruption
"""


def get_config():
    return {
        "gens": "all",
        "sweep": "hparams,aug",
        "samples": 8,
        "scheduler": "asha",
        "experiment": "sweep1",
    }
