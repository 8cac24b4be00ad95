"""Compare the generators, and sweep hyper-parameters and augmentations, with Ray Tune.

    python jobs/tune.py --gens all --preset small                 # the three generators in parallel
    python jobs/tune.py --gens unet,hybrid --sweep hparams --samples 8 --scheduler asha
    python jobs/tune.py --gens all --sweep aug --space my_space.json --address ray://head:10001
    python jobs/tune.py --experiment sweep1 --resume              # after the driver died

Every trial writes the same run directory as jobs/train.py under
<out>/<experiment>/<run_name>; Tune's own state is in <out>/<experiment>/_tune.
Connects to --address or $RAY_ADDRESS, else starts Ray on this machine.
Ends with the best configuration per generator and the comparison table.
"""

import argparse
import json
import math
import os
from pathlib import Path

from gan.cli import add_common_flags, parse_overrides, run_main
from gan.config import GENERATOR_NAMES, make_config
from gan.errors import UserError
from gan.fastpath import fast_path_vars
from gan.rundir import read_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gens", default="all", help=f"{', '.join(GENERATOR_NAMES)} (comma list) or all")
    parser.add_argument("--sweep", default="", help="named spaces to add: hparams, aug (comma list)")
    parser.add_argument("--space", default=None, help="JSON file of extra dotted-name samplers")
    parser.add_argument("--samples", type=int, default=1, help="samples of the random part of the space")
    parser.add_argument("--scheduler", choices=["fifo", "asha"], default="fifo")
    parser.add_argument("--metric", default="val_ssim", help="validation metric for ASHA and 'best' "
                        "(val_<metric>; lower is better for l1)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial")
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="at the end, write the comparison report (tables, figures, HTML) here")
    add_common_flags(parser)
    args, extra = parser.parse_known_args()
    experiment = args.experiment or "default"
    args_file = Path(args.out) / experiment / "_tune_args.json"

    if args.resume:
        if not args_file.exists():
            raise UserError(f"--resume: no Tune experiment at {args_file.parent / '_tune'}")
        saved = read_json(args_file)
    else:
        overrides = parse_overrides(extra)
        if args.data is not None:
            overrides["data.source"] = args.data
        if args.data_format is not None:
            overrides["data.format"] = args.data_format
        gens = list(GENERATOR_NAMES) if args.gens == "all" else args.gens.split(",")
        # Every generator's config is validated before Ray starts (a size one generator cannot take
        # must fail here in one line, not inside every trial).
        cfg = [make_config(args.preset, {**overrides, "model.generator": g}) for g in gens][0]
        saved = {"gens": gens, "sweeps": [s for s in args.sweep.split(",") if s], "space": args.space,
                 "overrides": overrides, "preset": args.preset, "samples": args.samples,
                 "scheduler": args.scheduler, "metric": args.metric, "max_failures": args.max_failures,
                 "cpus": args.cpus_per_trial, "gpus": args.gpus_per_trial,
                 "max_evaluations": math.ceil(cfg.train.steps / cfg.train.eval_every)}
    metric = saved["metric"]
    mode = "min" if metric.endswith("l1") else "max"

    import ray

    from cluster import spaces
    from cluster import tune as tuning

    space = spaces.build_space(saved["gens"], saved["sweeps"], saved["space"])
    address = args.address or os.environ.get("RAY_ADDRESS")
    # Trials train on the fast path: the workers get the caching allocator (gan/fastpath.py).
    fast_path = fast_path_vars()
    runtime_env = {"env_vars": fast_path} if fast_path else None
    ray.init(address=address, runtime_env=runtime_env, **({} if address else {"include_dashboard": False}))
    if args.resume:
        tuner = tuning.restore_tuner(args.out, experiment, saved["cpus"], saved["gpus"])
    else:
        args_file.parent.mkdir(parents=True, exist_ok=True)
        args_file.write_text(json.dumps(saved, indent=2))
        tuner = tuning.make_tuner(
            space, base=make_config(saved["preset"], saved["overrides"]), out=args.out, experiment=experiment,
            scheduler=saved["scheduler"], metric=metric, mode=mode, num_samples=saved["samples"],
            max_failures=saved["max_failures"], cpus_per_trial=saved["cpus"], gpus_per_trial=saved["gpus"],
            max_evaluations=saved["max_evaluations"])
    results = tuner.fit()

    frame = results.get_dataframe()
    errors = [r for r in results if r.error]
    print(f"\n{len(results)} trials, {len(errors)} errored; runs in {Path(args.out) / experiment}")
    if metric in frame:
        print(f"best configuration per generator by {metric} ({mode}):")
        for gen, group in frame.groupby("config/model.generator"):
            best = group.loc[group[metric].idxmax() if mode == "max" else group[metric].idxmin()]
            swept = {k[len("config/"):]: best[k] for k in group if k.startswith("config/")
                     and not k.startswith((f"config/{tuning.BASE}", f"config/{tuning.OUT}"))
                     and k != "config/model.generator"}
            print(f"  {gen}: {metric} {best[metric]:.4f} at step {int(best['step'])}  {swept or ''}  {best['run']}")
    from analysis.runs import find_runs
    from analysis.tables import comparison_table
    print()
    print(comparison_table(runs=find_runs(Path(args.out) / experiment)))
    if args.report:
        from analysis.report import build_report
        print(f"report: {build_report([Path(args.out) / experiment], args.report)}")
    return 1 if errors else 0


if __name__ == "__main__":
    run_main(main)
