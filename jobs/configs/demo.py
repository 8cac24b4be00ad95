"""The README's main job: the three generators side by side on the embedded synthetic street scenes (the
small CPU preset, a few minutes on 2 cores), ending in the comparison table and a report.

    python jobs/tune.py --config jobs/configs/demo.py
"""


def get_config():
    return {
        "gens": "all",
        "preset": "small",
        "report": "reports",
    }
