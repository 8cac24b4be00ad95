"""Reports from real short runs: numbers equal direct computations, files written, notebook runs,
unfinished runs flagged, and the HTML renders in headless Chromium."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from conftest import ROOT, run_cli
from gan.config import make_config
from gan.train import train
from services import unavailable
from gan.models import names

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs_root(tiny_runs, tmp_path_factory):
    """Three finished tiny runs, one failed (diverged) and one left 'running' by kill -9."""
    out = tmp_path_factory.mktemp("runs")
    shutil.copytree(tiny_runs / "cmp", out / "cmp")
    diverging = make_config("tiny", {"model.generator": "hybrid", "experiment": "bad", "run_name": "diverged",
                                     "optim.lr_d": 1e30, "optim.lr_g": 1e30})
    assert train(diverging, out) == 3
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "train.py"), "--preset", "tiny", "--gens", "unet",
                             "--experiment", "bad", "--run-name", "killed", "--train.steps", "1000",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "bad" / "killed" / "metrics.csv"
    deadline = time.time() + 300
    while not metrics.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return out


@pytest.fixture(scope="module")
def report(runs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    done = run_cli("report.py", str(runs_root), "-o", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    # A quiet start: the notebook's kernel talks over local sockets (no TCP warning), no TensorFlow lines.
    assert "TCP" not in done.stderr and "cuInit" not in done.stderr and "absl" not in done.stderr, done.stderr
    return out, done.stdout


def test_study_table_equals_direct_computation(runs_root, report):
    out, stdout = report
    table = pd.read_csv(out / "tables" / "test_summary.csv").set_index("generator")
    for gen in names():
        direct = pd.read_csv(runs_root / "cmp" / gen / "test_metrics.csv")
        for metric in ("hist_corr", "template_match", "feature_match", "ssim", "psnr", "l1"):
            assert table.loc[gen, f"{metric}_mean"] == pytest.approx(direct[metric].mean())
            assert table.loc[gen, f"{metric}_std"] == pytest.approx(direct[metric].std(ddof=1), nan_ok=True)
    hybrid = pd.read_csv(runs_root / "cmp" / "hybrid" / "timings.csv")
    # The hybrid row pools the finished run and the diverged one (no timings), so it is the finished run's.
    assert table.loc["hybrid", "seconds_per_1k_steps"] == pytest.approx(
        1000 * hybrid.train_seconds.sum() / hybrid.steps.sum())
    per_run = pd.read_csv(out / "tables" / "per_run.csv").set_index("run")
    for gen in names():
        direct = pd.read_csv(runs_root / "cmp" / gen / "test_metrics.csv")
        assert per_run.loc[f"cmp/{gen}", "ssim"] == pytest.approx(direct.ssim.mean())
    assert "| unet |" in stdout and "| hybrid |" in stdout
    assert (out / "tables" / "study.md").read_text().startswith("| generator |")
    assert "\\begin{tabular}" in (out / "tables" / "study.tex").read_text()


def test_paired_tests_and_intervals_match_scipy(runs_root, report):
    out, _ = report
    a = pd.read_csv(runs_root / "cmp" / "unet" / "test_metrics.csv").set_index("image")
    b = pd.read_csv(runs_root / "cmp" / "resnet" / "test_metrics.csv").set_index("image")
    paired = pd.read_csv(out / "tables" / "paired_tests.csv")
    row = paired[(paired.metric == "l1") & (paired.a == "resnet") & (paired.b == "unet")].iloc[0]
    assert row.p == pytest.approx(scipy_stats.wilcoxon(b.l1, a.loc[b.index].l1).pvalue)
    family = paired[paired.metric == "l1"].sort_values("p")
    assert (family.p_holm >= family.p - 1e-12).all() and (family.p_holm <= 1).all()
    assert family.p_holm.iloc[0] == pytest.approx(min(1, len(family) * family.p.iloc[0]))
    ci = pd.read_csv(out / "tables" / "bootstrap_ci.csv")
    ssim = ci[(ci.generator == "unet") & (ci.metric == "ssim")].iloc[0]
    assert ssim["mean"] == pytest.approx(a.ssim.mean())
    assert ssim.ci_low <= ssim["mean"] <= ssim.ci_high


def test_unfinished_runs_are_reported(runs_root, report):
    out, _ = report
    runs = pd.read_csv(out / "tables" / "runs.csv").set_index("run")
    assert runs.loc["bad/diverged", "state"] == "failed"
    assert "non-finite loss" in runs.loc["bad/diverged", "message"]
    # status.json still says running, but the trainer was killed: its lease names a pid that is gone.
    assert json.loads((runs_root / "bad" / "killed" / "status.json").read_text())["state"] == "running"
    assert runs.loc["bad/killed", "state"] == "interrupted"
    page = (out / "report.html").read_text()
    assert "Not finished: " in page and "bad/diverged (failed" in page and "bad/killed (interrupted" in page
    assert "its trainer is gone (pid " in page


def test_figures_and_notebook_are_written(report):
    out, _ = report
    for name in ("evolution", "step_time", "samples"):
        for suffix in (".png", ".svg"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000
    assert (out / "figures" / "quality_by_time.png").stat().st_size > 1000
    equal = pd.read_csv(out / "tables" / "equal_time.csv")
    assert set(equal.generator) == set(names())  # every generator, scored or not within the budget
    assert (equal.seconds.dropna() <= equal.time_budget_seconds.iloc[0]).all() and equal.ssim.notna().any()
    notebook = json.loads((out / "compare.ipynb").read_text())
    errors = [o for c in notebook["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert "hist_corr" in (out / "compare.html").read_text()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    unavailable("headless Chromium is not installed (Debian package 'chromium'; .ci/provision installs it)")


def test_report_renders_in_headless_chromium(report):
    out, _ = report
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert "<title>pix2pix comparison report</title>" in dom.stdout
    assert dom.stdout.count("<table") >= 4 and "data:image/png;base64" in dom.stdout
    shot = out / "screenshot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1400,2000", url],
                   capture_output=True, timeout=120)
    import cv2
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2000, 1400)
    assert image.std() > 10  # not a blank page: text, tables and figures were drawn
    assert np.mean(image < 128) > 0.01


def test_runs_of_different_metric_versions_are_flagged(tiny_runs, tmp_path):
    import json
    import shutil

    from analysis.tables import comparison_table
    from analysis.runs import find_runs
    for gen in ("unet", "hybrid"):
        shutil.copytree(tiny_runs / "cmp" / gen, tmp_path / "cmp" / gen)
    assert "warning" not in comparison_table(runs=find_runs(tmp_path))
    config = tmp_path / "cmp" / "unet" / "config.json"
    old = json.loads(config.read_text())
    del old["metrics"], old["environment"]["metrics_version"]  # a run from before either record: version 1
    config.write_text(json.dumps(old))
    table = comparison_table(runs=find_runs(tmp_path))
    assert table.startswith("warning: Runs were measured with different metric definitions")
    assert "version 1: cmp/unet" in table and "version 2: cmp/hybrid" in table


def test_intervals_sharing_a_host_are_left_out_of_the_execution_time(tiny_runs, tmp_path):
    """The study's seconds per 1,000 steps compares generators only where each had the host to itself."""
    from analysis.runs import find_runs
    from analysis.tables import study_table, test_table
    spans = {"unet": [(0, 10), (10, 20)], "hybrid": [(15, 25), (100, 110)]}  # unet's 2nd and hybrid's 1st overlap
    for gen, intervals in spans.items():
        shutil.copytree(tiny_runs / "cmp" / gen, tmp_path / "cmp" / gen)
        path = tmp_path / "cmp" / gen / "timings.csv"
        t = pd.read_csv(path)
        t["started"], t["ended"], t["host"] = [a for a, _ in intervals], [b for _, b in intervals], "node1"
        t.to_csv(path, index=False)
    table = test_table(find_runs(tmp_path)).set_index("generator")
    for gen, alone in (("unet", 0), ("hybrid", 1)):
        t = pd.read_csv(tmp_path / "cmp" / gen / "timings.csv")
        assert table.loc[gen, "seconds_per_1k_steps"] == pytest.approx(1000 * t.train_seconds[alone] / t.steps[alone])
        assert table.loc[gen, "intervals_shared"] == "1 of 2"
    assert study_table(find_runs(tmp_path)).set_index("generator").loc["unet", "s / 1k steps"].endswith("(1 of 2 shared)")
    path = tmp_path / "cmp" / "hybrid" / "timings.csv"  # on another host: nothing is shared
    pd.read_csv(path).assign(host="node2").to_csv(path, index=False)
    assert set(test_table(find_runs(tmp_path)).intervals_shared) == {"0 of 2"}
    path = tmp_path / "cmp" / "unet" / "timings.csv"  # every interval shared: out of the comparison, still shown
    pd.read_csv(path).assign(host="node2", started=15, ended=110).to_csv(path, index=False)
    cell = study_table(find_runs(tmp_path)).set_index("generator").loc["unet", "s / 1k steps"]
    t = pd.read_csv(path)
    assert cell == f"- (all 2 shared: {1000 * t.train_seconds.sum() / t.steps.sum():.1f})"


def test_verdict_names_the_best_and_marks_a_lead_that_is_not_significant():
    from analysis import stats as suite_stats
    from analysis.tables import marked_study_table
    rng = np.random.default_rng(0)
    images = np.arange(30)
    noise = rng.normal(0, 0.01, (3, 30))
    tests = pd.concat([pd.DataFrame({"generator": g, "image": images, "run": g, "seed": 0,
                                     "ssim": base + noise[i], "l1": 0.2 + noise[i] * (i == 2) + 0.001 * i})
                       for i, (g, base) in enumerate((("unet", 0.3), ("resnet", 0.5), ("hybrid", 0.49)))])
    paired = suite_stats.paired_tests(tests, ["ssim", "l1"])
    v = suite_stats.verdict(tests, paired, ["ssim", "l1"]).set_index("metric")
    assert v.loc["ssim", "best"] == "resnet" and bool(v.loc["ssim", "significant"])  # 0.5 vs 0.49: 30 pairs
    assert "hybrid" in v.loc["ssim", "beats (Holm p < 0.05)"] and "unet" in v.loc["ssim", "beats (Holm p < 0.05)"]
    assert v.loc["l1", "best"] == "unet"  # lower is better
    study = pd.DataFrame({"generator": ["hybrid", "resnet", "unet"], "ssim": ["0.490 (0.010)", "0.500 (0.010)",
                                                                              "0.300 (0.010)"]})
    marked = marked_study_table(study, v.reset_index()).set_index("generator")
    assert marked.loc["resnet", "ssim"] == "**0.500 (0.010)**" and marked.loc["hybrid", "ssim"] == "0.490 (0.010)"
    tied = v.reset_index().assign(significant=False)
    assert marked_study_table(study, tied).set_index("generator").loc["resnet", "ssim"].endswith("** †")


def test_runs_on_different_copies_of_a_dataset_are_flagged(tiny_runs, tmp_path):
    from analysis.runs import find_runs
    from analysis.tables import comparison_table, runs_table
    for gen in ("unet", "hybrid"):
        shutil.copytree(tiny_runs / "cmp" / gen, tmp_path / "cmp" / gen)
    runs = find_runs(tmp_path)
    assert len({r.data["fingerprint"] for r in runs}) == 1 and "warning" not in comparison_table(runs=runs)
    fingerprint = runs[0].data["fingerprint"][:12]
    assert set(runs_table(runs).data) == {f"{runs[0].data_label}"} and fingerprint in runs[0].data_label
    config = tmp_path / "cmp" / "unet" / "config.json"
    changed = json.loads(config.read_text())
    changed["data"]["fingerprint"] = "f" * 64  # another copy of the same dataset
    config.write_text(json.dumps(changed))
    table = comparison_table(runs=find_runs(tmp_path))
    assert "trained on different copies of it" in table and "ffffffffffff: cmp/unet" in table


def test_names_and_messages_from_runs_are_escaped(tiny_runs, tmp_path):
    """Anyone who can name a run must not be able to run script in a colleague's browser."""
    import html
    experiment, name, message = "<svg onload=alert(2)>", "<img src=x onerror=alert(1)>", "<script>alert(3)</script>"
    root = tmp_path / "runs"
    shutil.copytree(tiny_runs / "cmp" / "unet", root / "cmp" / "unet")
    run = root / experiment / name
    shutil.copytree(tiny_runs / "cmp" / "hybrid", run)
    config = json.loads((run / "config.json").read_text())
    config["config"].update(experiment=experiment, run_name=name)
    (run / "config.json").write_text(json.dumps(config))
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "failed", "message": message}))
    done = run_cli("report.py", str(root), "-o", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "report" / "report.html").read_text()
    assert html.escape(f"{experiment}/{name}") in page and html.escape(message) in page
    for page in (tmp_path / "report" / "report.html", tmp_path / "report" / "compare.html"):
        text = page.read_text()
        for raw in ("<svg onload", "<img src=x", "<script>alert"):
            assert raw not in text, (page.name, raw)


def test_a_field_added_after_a_run_was_written_is_not_a_swept_field(tiny_runs, tmp_path):
    """A run written before `eval.select` and `data.split_file` existed ran under their defaults: beside a
    new run it must not look like a sweep over them (the report's sweep figure once broke on the gap)."""
    from analysis.runs import find_runs, swept_fields
    for gen in ("unet", "hybrid"):
        shutil.copytree(tiny_runs / "cmp" / gen, tmp_path / "cmp" / gen)
    config = json.loads((tmp_path / "cmp" / "hybrid" / "config.json").read_text())
    del config["config"]["eval"]["select"], config["config"]["data"]["split_file"]
    (tmp_path / "cmp" / "hybrid" / "config.json").write_text(json.dumps(config))
    assert swept_fields(find_runs(tmp_path)) == []


def test_older_names_other_generators_settings_splits_and_judges_are_not_a_sweep(tiny_runs, tmp_path):
    """Runs of one configuration written at different commits and drawn on different splits: a config in
    the older flat names (`model.resnet_blocks`), a U-Net run carrying the ResNet's settings, another data
    split (a replicate, which the variance table separates) and another judge's path are not a sweep, and
    the report compares every run (it once chose none and stopped with a traceback)."""
    from analysis.report import build_report
    from analysis.runs import find_runs, swept_fields
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        shutil.copytree(tiny_runs / "cmp" / "resnet", tmp_path / "mix" / name)
        path = tmp_path / "mix" / name / "config.json"
        config = json.loads(path.read_text())
        config["config"]["train"]["seed"], config["config"]["run_name"] = seed, name
        if name == "a":  # written before the generators owned their settings
            blocks = config["config"]["model"].pop("resnet")["blocks"]
            config["config"]["model"]["resnet_blocks"] = blocks
            config["config"]["model"].pop("unet", None)
        if name == "b":
            config["config"]["data"]["split_seed"] = 7
            config["config"]["eval"]["segmenter"] = "/elsewhere/judge"
        if name == "c":  # another generator's section holds another value: not this run's setting
            config["config"]["model"].setdefault("unet", {})["dropout"] = 0.0
        path.write_text(json.dumps(config))
    runs = find_runs(tmp_path / "mix")
    assert len(runs) == 3 and swept_fields(runs) == []
    build_report([tmp_path / "mix"], tmp_path / "report", notebook=False)
    assert sorted(pd.read_csv(tmp_path / "report" / "tables" / "per_run.csv").run) == ["cmp/a", "cmp/b", "cmp/c"]
    # A real difference in the run's own setting is still a sweep.
    path = tmp_path / "mix" / "c" / "config.json"
    config = json.loads(path.read_text())
    config["config"]["model"]["resnet"]["blocks"] += 1
    path.write_text(json.dumps(config))
    assert swept_fields(find_runs(tmp_path / "mix")) == ["model.resnet.blocks"]


def test_a_sweep_is_ranked_by_the_metric_it_selected_on_including_the_fcn_score(tiny_runs, tmp_path):
    """An equal-budget search selects on val_fcn_iou: its report's sweep table and figure rank by that
    FCN-score (read from fcn_metrics.csv, at the step each trial reached), not by SSIM."""
    from analysis.report import build_report
    from gan import contract
    # unet-slow: a second U-Net configuration, worse on validation, whose test rows must not join the U-Net's.
    lr = {"unet": 1e-4, "unet-slow": 1e-6, "hybrid": 3e-4}
    iou = {"unet": [0.10, 0.20], "unet-slow": [0.01, 0.02], "hybrid": [0.30, 0.25]}
    for name in ("unet", "unet-slow", "hybrid"):
        run = tmp_path / "sweep" / name
        shutil.copytree(tiny_runs / "cmp" / name.split("-")[0], run)
        config = json.loads((run / "config.json").read_text())
        config["config"]["optim"]["lr_g"], config["config"]["run_name"] = lr[name], name
        (run / "config.json").write_text(json.dumps(config))
        rows = [{"step": step, "split": "val", "fcn_pixel_acc": 0.5, "fcn_class_acc": 0.2, "fcn_iou": value,
                 "images": 4} for step, value in zip((4, 8), iou[name])]
        pd.DataFrame(rows, columns=contract.FCN_COLUMNS).to_csv(run / contract.FCN_CSV, index=False)
    build_report([tmp_path / "sweep"], tmp_path / "report", notebook=False, metric="fcn_iou")
    best = pd.read_csv(tmp_path / "report" / "tables" / "sweep_best.csv").set_index("generator")
    assert best.loc["unet", "val_fcn_iou"] == 0.20 and best.loc["hybrid", "val_fcn_iou"] == 0.25  # the last row
    assert best.loc["hybrid", "optim.lr_g"] == 3e-4 and best.loc["unet", "step"] == 8
    assert (tmp_path / "report" / "figures" / "sweep.png").exists()
    # The comparison takes each generator's best configuration; the runs table still lists every trial.
    assert sorted(pd.read_csv(tmp_path / "report" / "tables" / "per_run.csv").run) == ["cmp/hybrid", "cmp/unet"]
    assert len(pd.read_csv(tmp_path / "report" / "tables" / "runs.csv")) == 3
    assert "best configuration by validation fcn_iou (cmp/hybrid, cmp/unet)" in \
        (tmp_path / "report" / "report.html").read_text()
    done = run_cli("report.py", str(tmp_path / "sweep"), "-o", str(tmp_path / "r2"), "--metric", "nosuch")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: --metric: 'nosuch' is not")
    for name in lr:  # runs trained without the FCN-score: a sweep ranked by it cannot choose, and says so
        (tmp_path / "sweep" / name / contract.FCN_CSV).unlink()
    done = run_cli("report.py", str(tmp_path / "sweep"), "-o", str(tmp_path / "r3"), "--metric", "fcn_iou")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(
        "error: --metric fcn_iou: no run of this sweep has it at validation"), done.stderr[-2000:]
