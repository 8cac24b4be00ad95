"""Train (or resume) pix2pix generators; one run directory per generator.

    python jobs/train.py --gens hybrid --preset small           # ~1 min on 2 CPU cores
    python jobs/train.py --gens all --preset small              # the three generators, then a comparison
    python jobs/train.py --gens unet --data cityscapes          # the paper protocol on real data
    python jobs/train.py --gens unet --optim.lr_g 1e-4          # any config field by its dotted name
    python jobs/train.py --config my_run.py --train.steps 500   # an experiment file; flags win

Rerunning the same command resumes from the last checkpoint; a different
config in an existing run directory is refused unless --overwrite (which moves
the old run aside). Exit codes: 0 finished, 2 bad input, 3 diverged (NaN),
75 preempted (SIGTERM/SIGUSR1: checkpointed, rerun to resume).
"""

import argparse

from gan.cli import (add_common_flags, add_config_flag, add_gens_flag, config_from_args, generator_list,
                     parse_overrides, parse_with_config, refuse_other_generators_settings, run_main)
from gan.errors import UserError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flag(parser)
    add_gens_flag(parser, default="unet")
    parser.add_argument("--run-name", default=None, help="run folder name (default: the generator)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a different run in the same folder (the old one is moved aside)")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="at the end, write the comparison report (tables, figures, HTML) here")
    add_common_flags(parser)
    args, extra = parse_with_config(parser)
    gens = generator_list(args.gens)
    if args.run_name and len(gens) > 1:
        raise UserError("--run-name: takes one generator, not several")
    refuse_other_generators_settings(parse_overrides(extra), gens)
    configs = [config_from_args(args, extra, **{"model.generator": g, "run_name": args.run_name or ""})
               for g in gens]  # validate every config before the first run starts

    from gan.train import run_path, train
    code = 0
    for cfg in configs:
        code = train(cfg, args.out, overwrite=args.overwrite)
        if code:
            return code
    if len(configs) > 1:
        from analysis.tables import comparison_table  # here, not above: pandas after TensorFlow (gan/quiet.py)
        print(comparison_table([run_path(cfg, args.out) for cfg in configs]))
    if args.report:
        from analysis.report import build_report
        print(f"report: {build_report([run_path(cfg, args.out) for cfg in configs], args.report)}")
    return code


if __name__ == "__main__":
    run_main(main)
