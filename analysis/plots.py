"""Figures (matplotlib, PNG + SVG): metric evolution, step time, sweeps, the FCN-score, the sample sheet."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gan import contract  # noqa: E402
from analysis.runs import FCN_METRICS, Run, metric_names  # noqa: E402


# Beyond this many runs a figure draws one line (with a band) per generator instead of one per run.
MAX_RUN_LINES = 10


def save(fig, stem: Path) -> list[Path]:
    """PNG and SVG of one layout: the constrained layout and the tight box are computed once, not once per
    file and again for its box (each a full draw: most of a report's time)."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.draw_without_rendering()
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
    fig.set_layout_engine("none")  # both files keep the layout just computed
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches=box)
    plt.close(fig)
    return paths


def _run_split_lines(frame: pd.DataFrame, metrics: list[str], axes, x: str = "step") -> bool:
    """One panel per metric: validation solid, train subset dashed. A line per run; where every generator
    has several runs (seeds), their mean per evaluation with a band from the lowest to the highest run.
    True when it drew bands."""
    from matplotlib.ticker import MaxNLocator
    seeds = frame.groupby("generator").run.nunique() if "generator" in frame else pd.Series(dtype=int)
    # A line per run while they stay legible; beyond that (a sweep of hundreds) one band per generator.
    by = "generator" if len(seeds) and (seeds.min() > 1 or seeds.sum() > MAX_RUN_LINES) else "run"
    colours = dict(zip(sorted(frame[by].unique()), plt.cm.tab10.colors))
    for ax, metric in zip(axes.flat, metrics):
        for (name, split), group in frame.groupby([by, "split"]):
            style = "-" if split == "val" else "--"
            if by == "run":
                ax.plot(group[x], group[metric], linestyle=style, color=colours[name], label=f"{name} ({split})",
                        marker="." if len(group) < 30 else None)
                continue
            band = group.groupby("step").agg(x=(x, "mean"), mean=(metric, "mean"), low=(metric, "min"),
                                             high=(metric, "max"), runs=("run", "nunique"))
            ax.plot(band.x, band["mean"], linestyle=style, color=colours[name],
                    label=f"{name} ({split}, mean of {int(band.runs.max())} runs)")
            ax.fill_between(band.x, band.low, band.high, color=colours[name], alpha=0.15 if split == "val" else 0.07)
        ax.set_title(metric)
        ax.set_xlabel("step" if x == "step" else "training seconds (cumulative)")
        if x == "step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return by == "generator"


def evolution(metrics: pd.DataFrame, stem: Path) -> list[Path]:
    """One panel per metric; train dashed, validation solid; one colour per run (as the study's figures), or
    per generator with its seeds' band."""
    shown = [m for m in metric_names(metrics) if m in metrics]
    rows = -(-len(shown) // 4)
    fig, axes = plt.subplots(rows, 4, figsize=(18, 4 * rows), squeeze=False, layout="constrained")
    banded = _run_split_lines(metrics, shown, axes)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Metrics every evaluation (solid: validation, dashed: train subset"
                 + ("; bands: lowest to highest run)" if banded else ")"))
    return save(fig, stem)


def quality_by_time(metrics: pd.DataFrame, timings: pd.DataFrame, stem: Path) -> list[Path] | None:
    """Validation metrics against cumulative training seconds (`analysis.tables.by_training_time`): which
    generator is best per hour, not per step. Intervals that shared a host are marked in the title."""
    from analysis.tables import by_training_time
    frame = by_training_time(metrics, timings)
    if frame.empty:
        return None
    shown = [m for m in metric_names(metrics) if m in frame]
    rows = -(-len(shown) // 4)
    fig, axes = plt.subplots(rows, 4, figsize=(18, 4 * rows), squeeze=False, layout="constrained")
    _run_split_lines(frame[frame.split == "val"], shown, axes, x="seconds")
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    shared = " (some intervals shared a host: their seconds include waiting)" if frame.shared.any() else ""
    fig.suptitle("Validation metrics against training seconds" + shared)
    return save(fig, stem)


def fcn_evolution(fcn: pd.DataFrame, stem: Path) -> list[Path]:
    """The FCN-score at every evaluation: generated val solid, train subset dashed, one colour per run;
    the same segmenter on the real val photos dotted black (the reference the generators chase)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), squeeze=False, layout="constrained")
    _run_split_lines(fcn[fcn.split.isin(["train", "val"])], FCN_METRICS, axes)
    real = fcn[fcn.split == "val_real"].groupby("step")[FCN_METRICS].mean()
    for ax, metric in zip(axes.flat, FCN_METRICS):
        ax.plot(real.index, real[metric], ":", color="black", label="real val photos")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("FCN-score every evaluation (segmenter on generated photos vs the input labels)")
    return save(fig, stem)


def fcn_test(table: pd.DataFrame, stem: Path) -> list[Path]:
    """Test FCN-score per generator (mean and std over test images) beside the real photos' score
    (grey), from `analysis.tables.fcn_table`."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.5), squeeze=False, layout="constrained")
    names = table.generator.astype(str).tolist()
    colours = [f"C{i}" for i in range(len(names) - 1)] + ["0.4"]  # the last row is the real photos
    for ax, metric in zip(axes.flat, FCN_METRICS):
        ax.bar(names, table[f"{metric}_mean"], yerr=table[f"{metric}_std"], color=colours, capsize=3)
        ax.set_title(f"test {metric}")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    return save(fig, stem)


def step_time(timings: pd.DataFrame, stem: Path) -> list[Path]:
    """Seconds per 1,000 steps per interval; each run's first interval (which includes tracing the step
    function) is left off the line and noted in the legend, so it does not flatten the rest. Beyond
    MAX_RUN_LINES runs: per generator the median over its runs with a band from the lowest to the highest."""
    from matplotlib.ticker import MaxNLocator
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    timings = timings.sort_values(["run", "step"]).assign(rate=lambda t: 1000 * t.train_seconds / t.steps)
    if timings.run.nunique() > MAX_RUN_LINES:
        first = timings.groupby("run").cumcount() == 0  # each run's tracing interval, unless it is its only one
        later = timings[~first | (timings.groupby("run").step.transform("size") == 1)]
        for i, (gen, group) in enumerate(later.groupby("generator")):
            band = group.groupby("step").rate.agg(["median", "min", "max"])
            ax.plot(band.index, band["median"], color=f"C{i}", marker="." if len(band) < 20 else None,
                    label=f"{gen} (median of {group.run.nunique()} runs)")  # a marker: one interval is a point
            ax.fill_between(band.index, band["min"], band["max"], color=f"C{i}", alpha=0.15)
        ax.set_title("first intervals (tracing) left off; bands: lowest to highest run", fontsize=9)
    else:
        for run, group in timings.groupby("run"):
            rate = group.rate
            first = f"; first interval {rate.iloc[0]:.0f} (tracing)" if len(group) > 1 else ""
            ax.plot(group.step.iloc[1:] if len(group) > 1 else group.step, rate.iloc[1:] if len(group) > 1 else rate,
                    marker=".", label=f"{run}{first}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("seconds per 1,000 steps (interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, stem)


def sweep(table: pd.DataFrame, fields: list[str], metric: str, stem: Path) -> list[Path]:
    """Each swept field against the final validation metric, one colour per generator."""
    fig, axes = plt.subplots(1, len(fields), figsize=(4 * len(fields), 3.5), squeeze=False,
                             layout="constrained")
    for ax, field in zip(axes.flat, fields):
        categorical = table[field].dtype == object or table[field].dtype == bool
        for gen, group in table.groupby("generator"):
            ax.scatter(group[field].astype(str) if categorical else group[field], group[f"val_{metric}"], label=gen)
        ax.set_xlabel(field)
        ax.set_ylabel(f"val {metric}")
    axes.flat[0].legend(fontsize=7)
    return save(fig, stem)


def sample_sheet(runs: list[Run], stem: Path) -> list[Path] | None:
    """Input | target | each run's output on the same test images (from each run's samples/test.png)."""
    import cv2
    if len(runs) > MAX_RUN_LINES:  # a column per run stays legible for a few: then one run per generator
        runs = list({r.generator: r for r in sorted(runs, key=lambda r: r.name, reverse=True)}.values())[::-1]
    grids = [(r, cv2.imread(str(r.path / contract.SAMPLES / contract.TEST_SHEET))) for r in runs]
    grids = [(r, g[:, :, ::-1]) for r, g in grids if g is not None]
    if not grids:
        return None
    shape = grids[0][1].shape
    grids = [(r, g) for r, g in grids if g.shape == shape]  # same image size and sample count
    width = shape[1] // 3
    columns = [grids[0][1][:, :width], grids[0][1][:, width:2 * width]] + [g[:, 2 * width:] for _, g in grids]
    titles = ["input", "target"] + [r.name for r, _ in grids]
    fig, axes = plt.subplots(1, len(columns), figsize=(2.2 * len(columns), 2.2 * shape[0] / width))
    for ax, column, title in zip(np.atleast_1d(axes), columns, titles):
        ax.imshow(column)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return save(fig, stem)
