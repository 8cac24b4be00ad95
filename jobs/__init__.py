"""The commands: each file is one job a user runs (`python jobs/train.py ...`), a thin layer over cluster/,
gan/ and analysis/. `jobs.settling` is the one library module here (the settle rule's plan, shared by
jobs/tune.py and jobs/submit.py); `jobs/configs/` holds experiment files for `--config`."""
