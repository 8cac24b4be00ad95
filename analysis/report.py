"""One report from any set of runs: tables, figures, statistics, a self-contained HTML page,
and the executed comparison notebook exported to HTML.

    python jobs/report.py runs/default -o reports/default
"""

from __future__ import annotations

import base64
import html
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from analysis import plots, stats, tables
from analysis.runs import (consistency_warnings, fcn_frame, find_runs, lower_is_better, metric_names, metrics_frame,
                           study_metrics, swept_fields, test_frame, timings_frame)

NOTEBOOK = Path(__file__).parent / "notebooks" / "compare.ipynb"


def build_report(roots: list[str | Path], out: str | Path, notebook: bool = True, metric: str = "ssim",
                 runs=None) -> Path:
    """Write every table and figure under `out` and return the path of report.html. `runs`: the runs under
    `roots` when the caller has read them already (find_runs), so 1,000 run directories are read once."""
    out = Path(out)
    runs = find_runs(*roots) if runs is None else runs
    for path, reason in runs.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    for note in runs.notes():
        print(f"note: {note}", file=sys.stderr)
    if not runs:
        raise FileNotFoundError(f"no readable pix2pix run directories under {', '.join(map(str, roots))}")
    # Written into a folder beside `out` and moved into place at the end: a report cut off (a full disk,
    # Ctrl-C) leaves the previous one as it was and no half-written files or empty folders.
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _build(runs, roots, partial, notebook, metric)
        if out.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, aside / out.name)
            os.rename(partial, out)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(partial, out)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return out / "report.html"


def _build(runs, roots, out: Path, notebook: bool, metric: str) -> None:
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    compared = tables.best_configuration_runs(runs, metric)  # a sweep: each generator's best configuration
    tests, evaluations, timings = test_frame(compared), metrics_frame(compared), timings_frame(compared)
    frames, evidence_note = report_tables(compared, tests, evaluations, timings, metric, roots=runs.roots)
    if len(compared) < len(runs):
        frames.update(runs=tables.runs_table(runs), sweep_best=tables.sweep_table(runs, metric))
        evidence_note = " ".join(filter(None, [
            f"A sweep: the comparison and its statistics take each generator's best configuration by validation "
            f"{metric} ({', '.join(r.name for r in compared)}); the sweep table and figure show every trial. "
            f"For evidence on test that the selection did not see, retrain those configurations on fresh seeds "
            f"(jobs/tune.py --then-seeds N).", evidence_note]))
    for name, frame in frames.items():
        tables.write_table(frame, out / "tables" / name)
    figures = report_figures(compared, frames, evaluations, timings, metric, out / "figures", every_run=runs)
    page = out / "report.html"
    page.write_text(_html(runs, frames, figures, evidence_note))
    if evidence_note:
        print(f"note: {evidence_note}", file=sys.stderr)
    if notebook:
        execute_notebook(roots, out)


def report_tables(runs, tests: pd.DataFrame, evaluations: pd.DataFrame, timings: pd.DataFrame,
                  metric: str, roots=()) -> tuple[dict[str, pd.DataFrame], str]:
    """The report's tables by name, and the one-seed caveat ('' with seeds enough for run-level claims)."""
    study = tables.study_table(runs)
    frames = {"study": study}
    evidence_note = ""
    if not tests.empty:
        metrics = tables.metric_columns(tests)
        paired = stats.paired_tests(tests, metrics)
        # How many seeds the gaps would need: with one seed the verdict's caveat, with several the size of
        # the study that would settle what the runs leave open.
        frames["seeds_needed"], source = stats.seeds_table(tests, metrics, evaluations)
        if stats.seeds_per_generator(tests) >= 2:  # seeds allow claims about the architectures
            frames["three_way"] = three_way_verdict(tests, metrics, roots, list(runs))
            frames["run_level"] = stats.run_level(tests, metrics)
            frames["verdict"] = stats.verdict(tests, frames["run_level"], metrics)
        else:
            frames["verdict"] = stats.verdict(tests, paired, metrics)
            single = sorted(g for g, n in tests.groupby("generator").run.nunique().items() if n < 2)
            evidence_note = evidence_sentence(frames["seeds_needed"], source, single, tests.generator.nunique())
        frames["study_marked"] = tables.marked_study_table(study, frames["verdict"])
        frames["bootstrap_ci"] = stats.bootstrap_ci(tests, metrics)
        frames["paired_tests"] = paired
    frames.update(test_summary=tables.test_table(runs), runs=tables.runs_table(runs))
    if not tests.empty:
        frames["per_run"] = tables.per_run_table(runs, tests)
    optional = {"segmenter_fid": tables.segmenter_fid_table(runs),
                "equal_time": tables.equal_time_table(evaluations, timings)}
    if not tests.empty and tests.groupby("generator").seed.nunique().max() > 1:
        optional["seed_spread"] = stats.seed_spread(tests, metrics)  # the FCN-score too
    if not tests.empty and tests.groupby("generator").split.nunique().max() > 1:
        optional["variance_by_source"] = stats.variance_by_source(tests, metrics)
    if swept_fields(runs):
        optional["sweep_best"] = tables.sweep_table(runs, metric)
    frames.update({name: frame for name, frame in optional.items() if not frame.empty})
    return frames, evidence_note


def report_figures(runs, frames: dict[str, pd.DataFrame], evaluations: pd.DataFrame, timings: pd.DataFrame,
                   metric: str, folder: Path, every_run=None) -> dict[str, Path]:
    """The report's figures by caption (the PNG of each); the sweep figure shows `every_run` (default: `runs`)."""
    every_run = runs if every_run is None else every_run
    figures: dict[str, Path] = {}
    if not evaluations.empty:
        figures["Metric evolution"] = plots.evolution(evaluations, folder / "evolution")[0]
    fcn = fcn_frame(runs)
    if not fcn.empty:
        figures["FCN-score every evaluation"] = plots.fcn_evolution(fcn, folder / "fcn_evolution")[0]
    fcn_test = tables.fcn_table(runs)
    if not fcn_test.empty:
        figures["Test FCN-score with the real photos' reference"] = plots.fcn_test(fcn_test, folder / "fcn_test")[0]
    if not timings.empty:
        figures["Training time per interval"] = plots.step_time(timings, folder / "step_time")[0]
        by_time = plots.quality_by_time(evaluations, timings, folder / "quality_by_time")
        if by_time:
            figures["Validation metrics against training seconds"] = by_time[0]
    if "sweep_best" in frames:
        all_runs = tables.sweep_table_all(every_run, metric)
        figures[f"Sweep: parameters vs val {metric}"] = plots.sweep(all_runs, swept_fields(every_run), metric,
                                                                  folder / "sweep")[0]
    sheet = plots.sample_sheet([r for r in runs if r.state == "finished"], folder / "samples")
    if sheet:
        figures["Test samples: input | target | each run"] = sheet[0]
    return figures


def three_way_verdict(tests: pd.DataFrame, metrics: list[str], roots: list, runs: list | None = None) -> pd.DataFrame:
    """Per pair and metric: better / equivalent within the margin / open (with the seeds it would take) /
    uninformative (no generator beats a trivial output), the difference with its interval, P(a beats b)
    with its interval, the seeds used, and each generator against the control (analysis/settle.py). The
    plan is the settle sweep's own when a root holds one; else one look at the seeds there, on every metric
    whose runs recorded a control (the trivial outputs on their test photos), margins a tenth of the span
    from the control to the real photos, alpha 0.05 per metric."""
    import json

    from analysis import settle
    from gan.contract import TUNE_ARGS
    stored = [Path(r) / TUNE_ARGS for r in roots if (Path(r) / TUNE_ARGS).exists()]
    saved = {}
    for path in stored:
        try:
            saved = (json.loads(path.read_text()) or {}).get("settle") or saved
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            print(f"warning: {path}: not a readable sweep file; the verdict takes one look at the seeds there",
                  file=sys.stderr)
    per_run = tests.groupby(["generator", "run", "seed"])[metrics].mean().reset_index()
    gens = sorted(per_run.generator.unique())
    plan = None
    if saved:
        try:
            plan, _ = settle.load(saved)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            print(f"warning: {stored[-1]}: its settle plan is refused ({e}); the verdict takes one look at the "
                  "seeds there", file=sys.stderr)
    if len(gens) < 2:
        return pd.DataFrame()
    if plan is not None and set(plan.generators) <= set(gens) and set(plan.metrics) <= set(per_run):
        scores = {g: {int(r.seed): {m: float(r[m]) for m in plan.metrics} for _, r in group.iterrows()}
                  for g, group in per_run.groupby("generator")}
    else:
        plan, scores = one_look(per_run, metrics, gens, lower_is_better(tests), runs or [])
    if not plan.metrics:
        return pd.DataFrame()
    rows, _ = settle.replay(scores, plan)
    return pd.DataFrame(rows).drop(columns="final", errors="ignore")


def one_look(per_run: pd.DataFrame, metrics: list[str], gens: list[str], lower: set[str], runs: list):
    """(plan, scores) of one look at the seeds there, the runs of each generator in seed order as seeds
    0..n-1; the control and the real photos' score from what the runs recorded (their first generator's
    run at each seed index: a fixed split gives every run the same), the margin a tenth of that span."""
    from analysis import settle
    from gan.contract import CONTROL_REAL as REAL, CONTROL_TRIVIAL as TRIVIAL
    n = int(per_run.groupby("generator").run.nunique().min())
    ordered = {g: group.sort_values(["seed", "run"]) for g, group in per_run.groupby("generator")}
    recorded = {r.name: r.control for r in runs}
    first = [recorded.get(name, {}) for name in ordered[gens[0]].run][:n]
    shown = [m for m in metrics if per_run[m].notna().all()
             and all(all(m in c.get(t, {}) for t in (*TRIVIAL, REAL)) for c in first)]
    by_seed, name, ceiling = {}, {}, {}
    for k, c in enumerate(first):
        by_seed[str(k)] = {}
        for m in shown:
            pick = (min if m in lower else max)(TRIVIAL, key=lambda t: c[t][m])
            by_seed[str(k)][m], name[m], ceiling[m] = c[pick][m], pick, c[REAL][m]
    margins = {m: float(f"{settle.MARGIN_FRACTION * abs(ceiling[m] - by_seed['0'][m]):.4g}") for m in shown}
    shown = [m for m in shown if margins[m] > 0]
    plan = settle.Plan(generators=gens, metrics=shown, margins={m: margins[m] for m in shown},
                       lower_is_better=[m for m in shown if m in lower], first=n, max_seeds=n,
                       control_by_seed=by_seed if shown else {}, control_name=name, ceiling=ceiling)
    scores = {g: {i: {m: float(r[m]) for m in shown} for i, (_, r) in enumerate(group.iterrows())}
              for g, group in ordered.items()}
    return plan, scores


def evidence_sentence(needed: pd.DataFrame, source: str, single: list[str] | None = None, generators: int = 0) -> str:
    """The one-seed caveat: what the verdict compares, and the seeds it would take to say more. `single`:
    the generators with one trained run (all of them, or some)."""
    if single and len(single) < generators:
        sentence = (f"{', '.join(single)} {'has' if len(single) == 1 else 'have'} one trained run: the verdict "
                    "tests images of the trained models (paired over the test photos, seeds averaged), not the "
                    "architectures; a run-level verdict needs 2+ seeds of every generator.")
    else:
        sentence = ("One trained run per generator: this verdict compares these trained models, not the "
                    "architectures (a reseed can reverse it).")
    if not needed.empty and (needed.seeds_needed > 0).any():
        worst, best = int(needed.seeds_needed.max()), int(needed[needed.seeds_needed > 0].seeds_needed.min())
        sentence += (f" Resolving the gaps it shows at 80 % power would take {best} to {worst} seeds per generator"
                     f" (per metric in 'seeds needed'; spread from {source}); train them with --seeds N.")
    else:
        sentence += " Train several seeds (--seeds N) to compare the architectures."
    return sentence


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


TITLES = {"study": "Test metrics per generator: mean (std) over test images",
              "three_way": "Verdict per pair and metric: better / equivalent within the margin / open (with the "
                           "seeds it would take) / uninformative (no generator beats a trivial output: a gray image "
                           "or another photo); then each generator against that control; runs as the samples, "
                           "Bonferroni over looks and comparisons",
              "verdict": "Verdict: the best generator per metric, and whom it beats significantly",
              "study_marked": "Test mean (std) per generator: best in bold, † where the lead is not "
                              "significant (paired Wilcoxon, Holm p >= 0.05)",
              "bootstrap_ci": "95 % bootstrap confidence intervals of the test means",
              "paired_tests": "Paired Wilcoxon signed-rank tests between generators over test images "
                              "(Holm-corrected): these trained models, not the architectures",
              "run_level": "Run level: difference of means with Welch's t-interval over the run means (the "
                           "verdict's, Holm-corrected p) and the hierarchical bootstrap interval (seeds, then "
                           "images; too narrow with 2-3 seeds), P(a beats b) over runs",
              "seeds_needed": "Seeds per generator a run-level comparison would need (80 % power, alpha 0.05)",
              "segmenter_fid": "Fréchet distance and KID in the segmenter's feature space (lower is better), "
                               "beside the real-vs-real floor",
              "equal_time": "Equal compute: validation metrics at the largest training time every generator "
                            "reached (shared: some interval shared its host)",
              "seed_spread": "Spread across seeds",
              "variance_by_source": "Where the spread between runs comes from: SD between training seeds on one "
                                    "split, SD a new data split adds (its test photos included), and the split's "
                                    "share of a run's variance (one-way random effects over the splits)", "runs": "Runs: state, best validation step, cost",
              "per_run": "Per run (seed): test means and the segmenter's Fréchet distance and KID",
              "sweep_best": "Best configuration per generator", "test_summary": "Test summary (numeric)"}


def _html(runs, frames: dict[str, pd.DataFrame], figures: dict[str, Path], evidence_note: str = "") -> str:
    """The page: what was compared and what to beware of, the verdict first, every detail folded below."""
    parts = _head(runs)
    lead = [n for n in ("three_way", "verdict", "study_marked") if n in frames] or ["study"]
    run_level = "run_level" in frames
    for name in lead:
        title = TITLES[name]
        if name == "study_marked" and run_level:  # the marks follow the verdict's evidence: runs, not images
            title = ("Test mean (std) per generator: best in bold, † where the lead is not significant at the "
                     "run level (Welch over the seeds' means, Holm p >= 0.05)")
        parts.append(f"<h2>{title}</h2>{_table(frames[name])}")
        if name == "verdict" and evidence_note:
            parts.append(f"<p class='warn'>{html.escape(evidence_note)}</p>")
    for title, path in list(figures.items())[:1]:
        parts.append(f"<h2>{html.escape(title)}</h2>{_img(path)}")
    for name, frame in frames.items():
        if name not in lead:
            parts.append(f"<details><summary>{TITLES.get(name, name)}</summary>{_table(frame)}</details>")
    for title, path in list(figures.items())[1:]:
        parts.append(f"<details open><summary>{html.escape(title)}</summary>{_img(path)}</details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _head(runs) -> list[str]:
    """Title, what the runs are, the metrics and their directions, skipped runs, warnings, unfinished runs."""
    states = pd.Series([r.state for r in runs]).value_counts().to_dict()
    lower = lower_is_better(runs)
    others = [m for m in metric_names(runs) if m not in study_metrics(runs)]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pix2pix comparison report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#eee}.warn{color:#a40}</style></head><body>",
        "<h1>pix2pix comparison report</h1>",
        f"<p>{len(runs)} runs ({html.escape(', '.join(f'{n} {s}' for s, n in states.items()))}); "
        f"written {time.strftime('%Y-%m-%d %H:%M')}. Study metrics: "
        + html.escape(", ".join(f"{m} ({'lower' if m in lower else 'higher'} is better)" for m in study_metrics(runs)))
        + ("; also " + html.escape(", ".join(f"{m} ({'lower' if m in lower else 'higher'})" for m in others))
           if others else "") + ".</p>",
    ]
    for path, reason in getattr(runs, "skipped", []):
        parts.append(f"<p class='warn'>Skipped {html.escape(str(path))}: {html.escape(reason)}</p>")
    for note in (runs.notes() if hasattr(runs, "notes") else []):
        parts.append(f"<p class='warn'>{html.escape(note)}</p>")
    for warning in consistency_warnings(runs):
        parts.append(f"<p class='warn'>{html.escape(warning)}</p>")
    unfinished = [r for r in runs if r.state != "finished"]
    if unfinished:
        parts.append("<p class='warn'>Not finished: " + ", ".join(
            f"{html.escape(r.name)} ({html.escape(r.state)} at step {html.escape(str(r.status.get('step', 0)))}"
            + (f": {html.escape(str(r.status['message']))}" if r.status.get("message") else "")
            + (f"; {html.escape(r.state_note)}" if r.state_note else "") + ")"
            for r in unfinished) + "</p>")
    return parts


def _table(frame: pd.DataFrame) -> str:
    # Run names, states and messages come from whoever wrote the runs: escape every cell and header,
    # then turn the verdict table's own **bold** marks into tags.
    shown = frame.map(lambda v: html.escape(v) if isinstance(v, str) else v)
    shown.columns = [html.escape(str(c)) for c in shown.columns]
    shown = shown.replace(r"\*\*(.*)\*\*", r"<b>\1</b>", regex=True)
    return ("<div style='overflow-x:auto'>" + shown.to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                                           na_rep="-", escape=False) + "</div>")


def _local_kernel_manager(sockets: str):
    """nbclient's kernel manager talking to the kernel over local (IPC) sockets in the folder `sockets` rather
    than TCP: the report's kernel never listens on a port, and says nothing about unencrypted TCP."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self):
            return "ipc"

        @default("ip")
        def _ip_default(self):  # the sockets' path prefix: a private temporary folder, not the report's
            return str(Path(sockets) / "kernel")

    return LocalKernelManager


def execute_notebook(roots: list[str | Path], out: Path) -> Path:
    """Run compare.ipynb headless with the run roots as its parameter; export it to HTML."""
    import tempfile

    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    executed = out / "compare.ipynb"
    with tempfile.TemporaryDirectory(prefix="pix2pix-kernel-") as sockets:
        papermill.execute_notebook(str(NOTEBOOK), str(executed), kernel_name="python3", progress_bar=False,
                                   parameters={"roots": [str(Path(r).resolve()) for r in roots]}, cwd=str(out),
                                   kernel_manager_class=_local_kernel_manager(sockets))
    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nbformat.read(executed, as_version=4))
    page = out / "compare.html"
    page.write_text(body)
    return page
