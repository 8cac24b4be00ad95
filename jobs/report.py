"""Turn any set of runs into the comparison report: tables, figures, statistics, HTML, notebook.

    python jobs/report.py runs/default --report reports/default       # -o for short
    python jobs/report.py runs/sweep1 runs/slurm -o reports/all --metric val_fcn_iou --no-notebook

Reads run directories only (no TensorFlow). Writes tables/*.{csv,md,tex},
figures/*.{png,svg}, report.html (self-contained) and compare.{ipynb,html}.
"""

import argparse
from pathlib import Path

from gan.cli import run_main
from gan.errors import UserError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", help="folders holding run directories (or runs themselves)")
    # --report DIR: the report's folder, as in jobs/tune.py and jobs/train.py (--out names a runs root there).
    parser.add_argument("-o", "--report", dest="out", default="reports", help="report folder (default: reports)")
    parser.add_argument("--out", dest="out", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # older spelling
    parser.add_argument("--metric", default="val_ssim", help="validation metric the sweep tables rank by, as "
                        "jobs/tune.py names it: val_<image metric or FCN-score> (default: val_ssim)")
    parser.add_argument("--no-notebook", action="store_true", help="skip executing the notebook")
    args = parser.parse_args()
    args.metric = args.metric.removeprefix("val_")  # a bare metric name still reads as its validation score
    for root in args.roots:
        if not Path(root).is_dir():
            raise UserError(f"{root}: no such folder")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--report {args.out}: exists and is not a folder")
    refuse_inside_runs(Path(args.out), [Path(r) for r in args.roots])
    from analysis.report import build_report
    from analysis.runs import FCN_METRICS, find_runs, metric_names
    from analysis.tables import comparison_table
    try:
        runs = find_runs(*args.roots)
        known = [*metric_names(runs), *FCN_METRICS]  # what these runs measured (a metric of their own included)
        if args.metric not in known:
            raise UserError(f"--metric: {args.metric!r} is not a metric of these runs (choose from {', '.join(known)})")
        page = build_report(args.roots, args.out, notebook=not args.no_notebook, metric=args.metric, runs=runs)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        from gan.errors import raise_for_write
        raise_for_write(e, f"--report {args.out}: cannot write the report there")
    print(comparison_table(runs=runs, metric=args.metric))
    print(f"\nreport: {page}" + ("" if args.no_notebook else f"\nnotebook: {Path(args.out) / 'compare.html'}"))
    return 0


def refuse_inside_runs(out: Path, roots: list[Path]) -> None:
    """A report written into the folders it reads, or into a run, would mix its files with runs (and a run
    directory belongs to its trainer): refused."""
    from gan.contract import CONFIG
    target = out.resolve()
    for root in roots:
        if target == root.resolve() or root.resolve() in target.parents:
            raise UserError(f"--report {out}: is inside {root}, which the report reads; write it elsewhere (e.g. reports/)")
    for folder in (target, *target.parents):
        if (folder / CONFIG).is_file():
            raise UserError(f"--report {out}: is inside the run directory {folder}; write the report elsewhere")
        if folder.is_dir() and any((child / CONFIG).is_file() for child in folder.iterdir() if child.is_dir()):
            raise UserError(f"--report {out}: is inside {folder}, which holds run directories (an experiment); write "
                            "the report elsewhere (e.g. reports/)")


if __name__ == "__main__":
    run_main(main)
