"""Comparison tables from run directories: the study's test table, best steps, cost, sweeps.

Every table is a pandas DataFrame; `write_table` saves CSV, Markdown and LaTeX.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gan.errors import UserError

from analysis.runs import (FCN_METRICS, Run, lower_is_better, metric_names, find_runs, swept_fields, test_frame,
                           timings_frame)


def test_table(runs: list[Run]) -> pd.DataFrame:
    """Per generator: mean and std (ddof=1) of each per-image test metric, over every image of every
    finished run of that generator, plus seconds per 1,000 training steps."""
    tests = test_frame(runs)
    timings = timings_frame(runs)
    metrics = metric_columns(tests)
    rows = []
    for gen in sorted({r.generator for r in runs}):
        mine = [r for r in runs if r.generator == gen]
        row = {"generator": gen, "runs": len(mine), "finished": sum(r.state == "finished" for r in mine)}
        images = tests[tests.generator == gen] if not tests.empty else tests
        row["images"] = len(images)
        for m in metrics:
            column = images[m] if m in images else pd.Series(dtype=float)  # a run from before the metric
            row[f"{m}_mean"] = column.mean() if column.notna().any() else float("nan")
            row[f"{m}_std"] = column.std(ddof=1) if column.notna().sum() > 1 else float("nan")
        for key in ("fid", "kid"):
            values = [r.summary[key] for r in mine if key in r.summary]
            if values:
                row[key] = sum(values) / len(values)
        t = timings[timings.generator == gen] if not timings.empty else timings
        if len(t):
            # The study's execution time, from the intervals that had the host to themselves.
            alone = t[~t.shared]
            row["seconds_per_1k_steps"] = (1000 * alone.train_seconds.sum() / alone.steps.sum()
                                           if len(alone) else float("nan"))
            row["intervals_shared"] = f"{int(t.shared.sum())} of {len(t)}"
            row["seconds_per_1k_steps_all"] = 1000 * t.train_seconds.sum() / t.steps.sum()  # shared ones too
        rows.append(row)
    return pd.DataFrame(rows)


def metric_columns(tests: pd.DataFrame) -> list[str]:
    """The image metrics the runs have (the study's four first), and the FCN-score columns when a segmenter
    was used; with no test rows yet, every known metric (shown as missing)."""
    return [m for m in metric_names(tests) if tests.empty or m in tests] + [m for m in FCN_METRICS if m in tests]


def study_table(runs: list[Run]) -> pd.DataFrame:
    """The study's layout: one row per generator, 'mean (std)' strings, time per 1,000 steps; with a
    segmenter, a last row with the FCN-score of the real test photos (the reference)."""
    t = test_table(runs)
    metrics = metric_columns(test_frame(runs))
    out = pd.DataFrame({"generator": t.generator})
    for m in metrics:
        out[m] = [f"{a:.3f} ({b:.3f})" if pd.notna(a) else "-" for a, b in zip(t[f"{m}_mean"], t[f"{m}_std"])]
    for key in ("fid", "kid"):
        if key in t:
            out[key] = [f"{v:.3f}" if pd.notna(v) else "-" for v in t[key]]
    if "seconds_per_1k_steps" in t:
        # Intervals that shared the host with another run are left out (their count is shown).
        def seconds(alone: float, shared: str, everything: float) -> str:
            if shared.startswith("0 "):
                return f"{alone:.1f}"
            if pd.notna(alone):
                return f"{alone:.1f} ({shared} shared)"
            return f"- (all {shared.split(' of ')[1]} shared: {everything:.1f})"  # not comparable, still shown
        out["s / 1k steps"] = [seconds(*v) for v in zip(t.seconds_per_1k_steps, t.intervals_shared,
                                                        t.seconds_per_1k_steps_all)]
    real = fcn_reference(runs)
    if real:
        reference = {c: "-" for c in out.columns}
        reference["generator"] = REAL_PHOTOS
        reference.update({m: f"{mean:.3f} ({std:.3f})" for m, (mean, std) in real.items()})
        out = pd.concat([out, pd.DataFrame([reference])], ignore_index=True)
    return out


REAL_PHOTOS = "real photos (reference)"


def marked_study_table(study: pd.DataFrame, verdict: pd.DataFrame) -> pd.DataFrame:
    """The study table with each metric's best generator in bold, marked with a dagger where its lead
    over some other generator is not significant (see `analysis.stats.verdict`)."""
    out = study.copy()
    for _, v in verdict.iterrows():
        if v.metric in out:
            rows = out.generator == v.best
            out.loc[rows, v.metric] = [f"**{cell}**" + ("" if v.significant else " †") for cell in out.loc[rows, v.metric]]
    return out


def fcn_reference(runs: list[Run]) -> dict[str, tuple[float, float]]:
    """The segmenter's score on the real test photos, {metric: (mean, std) over images}, averaged over
    the runs that measured it (all see the same test photos); {} when no run used a segmenter."""
    real = [r.summary["fcn"]["real_image_mean"] for r in runs if "fcn" in r.summary]
    return {m: (sum(x[m]["mean"] for x in real) / len(real), sum(x[m]["std"] for x in real) / len(real))
            for m in FCN_METRICS} if real else {}


def fcn_table(runs: list[Run]) -> pd.DataFrame:
    """Numeric test FCN-score per generator (`<metric>_mean`, `<metric>_std`) and the real-photo row;
    empty when no run used a segmenter."""
    real = fcn_reference(runs)
    if not real:
        return pd.DataFrame()
    t = test_table(runs)
    columns = ["generator"] + [f"{m}_{s}" for m in FCN_METRICS for s in ("mean", "std")]
    t = t[[c for c in columns if c in t]].dropna(subset=[f"{FCN_METRICS[0]}_mean"])  # generators without FCN
    row = {"generator": REAL_PHOTOS, **{f"{m}_{s}": v for m, ms in real.items() for s, v in zip(("mean", "std"), ms)}}
    return pd.concat([t, pd.DataFrame([row])], ignore_index=True)


def by_training_time(metrics: pd.DataFrame, timings: pd.DataFrame) -> pd.DataFrame:
    """Every evaluation row with `seconds`, the run's cumulative training seconds at that step, and
    `shared`, whether any interval up to it shared its host (from `timings_frame`)."""
    if metrics.empty or timings.empty:
        return pd.DataFrame()
    t = timings.sort_values(["run", "step"]).copy()
    t["seconds"] = t.groupby("run").train_seconds.cumsum()
    t["shared"] = t.groupby("run").shared.cummax().astype(bool)
    return metrics.merge(t[["run", "step", "seconds", "shared"]], on=["run", "step"], how="inner")


def equal_time_table(metrics: pd.DataFrame, timings: pd.DataFrame) -> pd.DataFrame:
    """Per generator, validation metrics at the largest training time every generator reached (the last
    evaluation of each run at or before it; mean over its seeds), with the step and whether any of those
    intervals shared a host: the verdict per hour of training rather than per step."""
    frame = by_training_time(metrics, timings)
    if frame.empty:
        return pd.DataFrame()
    val = frame[frame.split == "val"]
    horizon = val.groupby("generator").seconds.max().min()
    at = val[val.seconds <= horizon].sort_values("seconds").groupby("run").tail(1)
    shown = [m for m in metric_names(metrics) if m in at]
    table = at.groupby("generator").agg(runs=("run", "nunique"), step=("step", "mean"), seconds=("seconds", "mean"),
                                        shared=("shared", "any"), **{m: (m, "mean") for m in shown})
    # A generator whose first evaluation came after the budget stays in the table, without scores.
    table = table.reindex(sorted(val.generator.unique())).reset_index()
    table.insert(1, "time_budget_seconds", float(horizon))
    return table


def segmenter_fid_table(runs: list[Run]) -> pd.DataFrame:
    """Per generator (mean over its runs): the Fréchet distance and KID between real and generated test
    photos in the segmenter's feature space, each beside its real-vs-real floor (lower is better; at the
    floor the generated photos are as close to the real ones as real photos are to each other)."""
    rows = [{"generator": r.generator, "runs": 1, **r.summary["segmenter_fid"]} for r in runs
            if r.summary.get("segmenter_fid")]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.groupby("generator").agg({"runs": "sum", **{c: "mean" for c in frame if c not in
                                                            ("generator", "runs")}}).reset_index()


def per_run_table(runs: list[Run], tests: pd.DataFrame) -> pd.DataFrame:
    """One row per tested run (a seed): its test mean of every metric, and its segmenter Fréchet distance
    and KID, so that the spread between seeds sits beside the generators' mean (std)."""
    if tests.empty:
        return pd.DataFrame()
    metrics = metric_columns(tests)
    frame = tests.groupby(["generator", "seed", "run"], sort=True)[metrics].mean().reset_index()
    fid = {r.name: r.summary["segmenter_fid"] for r in runs if r.summary.get("segmenter_fid")}
    if fid:  # columns only when some run was judged by a segmenter
        for key in ("fid", "kid"):
            frame[f"segmenter_{key}"] = frame.run.map(lambda name: fid.get(name, {}).get(key, float("nan")))
    return frame


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: state, step, best validation step by SSIM, cost."""
    rows = []
    for r in runs:
        row = {"run": r.name, "generator": r.generator, "state": r.state, "step": r.status.get("step", 0),
               "message": r.status.get("message", ""), "data": r.data_label}
        if r.summary.get("selected"):  # which checkpoint the test split scored (eval.select)
            row["tested_at"] = f"{r.summary['selected'].get('rule')} (step {r.summary['selected'].get('step')})"
        val = r.metrics[r.metrics.split == "val"] if not r.metrics.empty else pd.DataFrame()
        if len(val):
            best = val.loc[val.ssim.idxmax()]
            row.update(best_step=int(best.step), best_val_ssim=best.ssim)
        if not r.timings.empty:
            t = r.timings
            devices = int(r.config["train"]["devices"]) if str(r.config["train"]["devices"]).isdigit() else 1
            row.update(train_seconds=t.train_seconds.sum(), eval_seconds=t.eval_seconds.sum(),
                       device_seconds=devices * t.train_seconds.sum(),
                       seconds_per_1k_steps=1000 * t.train_seconds.sum() / t.steps.sum(),
                       images_per_second=(t.steps.sum() * r.config["train"]["batch_size"]) / t.train_seconds.sum())
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_table_all(runs: list[Run], metric: str = "ssim") -> pd.DataFrame:
    """Every run's swept values and its last validation `metric` (an image metric, or an FCN-score of runs
    trained with eval.fcn_every_eval), with the step it was measured at: a trial a scheduler stopped
    early is shown at the step it reached."""
    fields = swept_fields(runs)
    rows = []
    for r in runs:
        frame = r.fcn_metrics if metric in FCN_METRICS else r.metrics
        val = frame[frame.split == "val"] if metric in frame else pd.DataFrame()
        if not len(val):
            continue
        flat = r.flat_config()
        rows.append({"generator": r.generator, "run": r.name, f"val_{metric}": val[metric].iloc[-1],
                     "step": int(val.step.iloc[-1]), **{f: flat.get(f) for f in fields}})
    return pd.DataFrame(rows)


def sweep_table(runs: list[Run], metric: str = "ssim") -> pd.DataFrame:
    """For sweeps: the best configuration per generator by the final validation `metric`."""
    frame = sweep_table_all(runs, metric)
    if frame.empty:
        return frame
    ascending = metric in lower_is_better(runs)
    return (frame.sort_values(f"val_{metric}", ascending=ascending).groupby("generator", as_index=False).head(1)
            .sort_values("generator").reset_index(drop=True))


def best_configuration_runs(runs: list[Run], metric: str = "ssim") -> list[Run]:
    """A sweep's runs narrowed to each generator's best configuration by its last validation `metric`
    (all seeds of that configuration), among the runs that scored the test split: comparing generators
    over a mix of their configurations would average good settings with bad ones. The runs themselves
    when nothing is swept, or when no run scored the test split."""
    fields = swept_fields(runs)
    if not fields:
        return list(runs)
    frame = sweep_table_all(runs, metric)
    if frame.empty:
        raise UserError(f"--metric {metric}: no run of this sweep has it at validation, so its best configurations "
                        f"cannot be chosen (an FCN-score needs runs trained with eval.fcn_every_eval)")
    frame = frame[frame.run.isin({r.name for r in runs if not r.test_metrics.empty})]
    if frame.empty:
        return list(runs)
    best = set(frame.sort_values(f"val_{metric}", ascending=metric in lower_is_better(runs))
               .groupby("generator").head(1).run)

    def setting(run: Run) -> str:  # from the runs' own configs: a table's cells may read 6 as 6.0
        flat = run.flat_config()
        return json.dumps([run.generator, *(flat.get(f) for f in fields)], default=str)
    chosen = {setting(r) for r in runs if r.name in best}
    return [r for r in runs if setting(r) in chosen]


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """Markdown without the optional `tabulate` dependency."""
    def cell(v):
        if not isinstance(v, float):
            return str(v)
        # Small values (learning rates) keep their significant digits instead of reading as 0.000.
        return f"{v:.{digits}g}" if v and abs(v) < 10 ** -(digits - 1) else f"{v:.{digits}f}"
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_table(frame: pd.DataFrame, stem: Path) -> None:
    """stem.csv, stem.md and stem.tex (the folder made if needed)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".md").write_text(to_markdown(frame) + "\n")
    stem.with_suffix(".tex").write_text(frame.to_latex(index=False, float_format="%.3f", escape=True))


def comparison_table(run_paths: list[Path] | None = None, runs: list[Run] | None = None, metric: str = "ssim") -> str:
    """The study's table as Markdown (printed at the end of the launchers); of a sweep, each generator's
    best configuration by validation `metric`, named above the table."""
    from analysis.runs import load_run
    from analysis.runs import consistency_warnings
    runs = runs if runs is not None else [load_run(p) for p in run_paths]
    warnings = "".join(f"warning: {w}\n\n" for w in consistency_warnings(runs))
    compared = best_configuration_runs(runs, metric)
    if len(compared) < len(runs):
        warnings += (f"each generator's best configuration by val {metric}: "
                     f"{', '.join(r.name for r in compared)}\n\n")
    return warnings + to_markdown(study_table(compared))


def main(argv: list[str]) -> int:
    """python -m analysis.tables ROOT...: the comparison table; exit 2 with one line when there is none."""
    import sys
    if not argv:
        print("usage: python -m analysis.tables ROOT [ROOT ...]", file=sys.stderr)
        return 2
    try:
        found = find_runs(*argv)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for _, reason in found.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    for note in found.notes():
        print(f"note: {note}", file=sys.stderr)
    if not found:
        print(f"error: no readable pix2pix runs under {' '.join(argv)}", file=sys.stderr)
        return 2
    print(comparison_table(runs=found))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
