"""Comparison tables: the study's mean (std) test table per generator, and timings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.runs import Run, find_runs, load_run

METRICS = ["hist_corr", "template_match", "feature_match", "ssim", "psnr", "l1"]


def test_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: mean and std of each per-image test metric, seconds per 1,000 steps."""
    rows = []
    for run in runs:
        row = {"run": run.name, "generator": run.generator, "state": run.state,
               "step": run.status.get("step", 0)}
        if not run.test_metrics.empty:
            for m in METRICS:
                row[f"{m}_mean"] = run.test_metrics[m].mean()
                row[f"{m}_std"] = run.test_metrics[m].std(ddof=1)
        if not run.timings.empty:
            row["seconds_per_1k_steps"] = 1000 * run.timings["train_seconds"].sum() / run.timings["steps"].sum()
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(run_paths: list[Path] | None = None, runs: list[Run] | None = None) -> str:
    """The study's table as Markdown: mean (std) of each test metric per run."""
    runs = runs if runs is not None else [load_run(p) for p in run_paths]
    table = test_table(runs)
    header = ["run", "state", *METRICS, "s / 1k steps"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [r["run"], r["state"]]
        for m in METRICS:
            cells.append(f"{r[f'{m}_mean']:.3f} ({r[f'{m}_std']:.3f})" if f"{m}_mean" in r and pd.notna(
                r.get(f"{m}_mean")) else "-")
        cells.append(f"{r['seconds_per_1k_steps']:.0f}" if pd.notna(r.get("seconds_per_1k_steps")) else "-")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    print(comparison_table(runs=find_runs(*sys.argv[1:])))
