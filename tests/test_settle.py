"""The settle rule keeps its promises (simulated studies), and replays the same from the runs it reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import settle

# The spread between seeds the three-seed study observed on the FCN pixel accuracy (docs/results.md).
SD = 0.03
GENS = ["hybrid", "resnet", "unet"]


def plan(**kw) -> settle.Plan:
    return settle.Plan(generators=GENS, metrics=["fcn_pixel_acc"], margins={"fcn_pixel_acc": 0.02}, **kw).check()


def test_no_false_better_under_no_difference_across_all_looks():
    result = settle.simulate(plan(), dict.fromkeys(GENS, 0.75), SD, studies=3000, seed=1)
    false_better = sum(r["better"] for r in result["rates"].values())  # any pair of the metric: family-wise
    assert false_better <= 0.05, result
    assert all(r["equivalent"] + r["open"] + r["better"] == pytest.approx(1) for r in result["rates"].values())


def test_no_false_equivalent_at_a_true_difference_of_the_margin():
    # One pair exactly one margin apart (not equivalent by the plan's own definition); the rule may say
    # "equivalent" for it at most alpha of the time over all its looks. Its spread small enough that
    # equivalence is within reach for the pairs that are equal.
    margin = 0.02
    result = settle.simulate(plan(), {"hybrid": 0.75, "resnet": 0.75, "unet": 0.75 + margin}, sd=0.004,
                             studies=3000, seed=2)
    false_equivalent = result["rates"]["hybrid-unet"]["equivalent"] + result["rates"]["resnet-unet"]["equivalent"]
    assert false_equivalent <= 0.05, result
    assert result["rates"]["hybrid-resnet"]["equivalent"] > 0.5  # the equal pair does get settled


def test_a_clear_gap_is_settled_as_better_in_the_right_direction_with_fewer_seeds_than_fixed():
    result = settle.simulate(plan(), {"hybrid": 0.745, "resnet": 0.709, "unet": 0.797}, SD, studies=500, seed=3)
    assert result["rates"]["resnet-unet"]["better"] > 0.6 and result["wrong_way"]["resnet-unet"] == 0
    assert result["seeds_mean"] < result["seeds_fixed"]


def test_replay_waits_for_the_seeds_it_needs_then_decides_once():
    rng = np.random.default_rng(0)
    p = plan()
    scores = {g: {s: {"fcn_pixel_acc": float(v)} for s, v in enumerate(rng.normal(mu, 0.001, 3))}
              for g, mu in (("hybrid", 0.70), ("resnet", 0.70), ("unet", 0.80))}
    rows, wanted = settle.replay(scores, p)
    by_pair = {(r["a"], r["b"]): r for r in rows}
    assert by_pair[("hybrid", "unet")]["verdict"] == "unet better"
    assert by_pair[("hybrid", "resnet")]["outcome"] == "equivalent" and wanted == {}
    # An extra seed trained for another purpose never changes a decided look.
    scores["unet"][3] = {"fcn_pixel_acc": 0.1}
    assert settle.replay(scores, p)[0] == rows
    # Not enough seeds yet: the first look is pending and the generators it waits for are named.
    rows, wanted = settle.replay({g: {0: {"fcn_pixel_acc": 0.5}} for g in GENS}, p)
    assert wanted == dict.fromkeys(GENS, 3) and all(r["verdict"] == "open (first look pending)" for r in rows)
    # The runs it waits for are named by seed, leaving out the seeds a generator already has (here seed 0,
    # and hybrid's seed 4 that the look at 3 seeds does not use).
    have = {g: {0: {}} for g in GENS} | {"hybrid": {0: {}, 2: {}, 4: {}}}
    assert settle.next_runs(wanted, have, p) == "the look at 3 seeds needs hybrid seed 1; resnet seeds 1, 2; unet seeds 1, 2"
    assert settle.next_runs({}, have, p) == "nothing: every comparison is decided"


def test_a_plan_that_begins_at_a_later_seed_looks_at_those_seeds_only():
    """first_seed 5: look n reads seeds 5..4+n, whatever the runs of seeds 0-4 say, and names the seeds
    it waits for from 5 on."""
    rng = np.random.default_rng(0)
    p = plan(first_seed=5)
    late = {g: {s: {"fcn_pixel_acc": float(v)} for s, v in zip(range(5, 8), rng.normal(mu, 0.001, 3))}
            for g, mu in (("hybrid", 0.70), ("resnet", 0.70), ("unet", 0.80))}
    rows, wanted = settle.replay(late, p)
    # Seeds 0-2 that say the opposite (hybrid far ahead) change nothing.
    early = {g: {s: {"fcn_pixel_acc": 0.99 if g == "hybrid" else 0.1} for s in range(3)} for g in GENS}
    assert settle.replay({g: {**early[g], **late[g]} for g in GENS}, p)[0] == rows
    by_pair = {(r["a"], r["b"]): r for r in rows}
    assert by_pair[("hybrid", "unet")]["verdict"] == "unet better" and by_pair[("hybrid", "unet")]["seeds"] == 3
    # The same early seeds alone: the first look waits for seeds 5-7.
    rows, wanted = settle.replay(early, p)
    assert wanted == dict.fromkeys(GENS, 3)
    assert settle.next_runs(wanted, early, p) == "the look at 3 seeds needs hybrid seeds 5, 6, 7; resnet seeds 5, 6, 7; unet seeds 5, 6, 7"
    assert settle.Plan.from_dict(p.to_dict()).first_seed == 5
    for bad in (-1, 1.5, True, "5"):
        with pytest.raises(ValueError, match="first_seed must be a whole number"):
            plan(first_seed=bad)


def test_open_at_the_maximum_says_what_it_would_take():
    rng = np.random.default_rng(4)
    p = plan(max_seeds=4)
    scores = {g: {s: {"fcn_pixel_acc": float(v)} for s, v in enumerate(rng.normal(mu, SD, 4))}
              for g, mu in (("hybrid", 0.74), ("resnet", 0.75), ("unet", 0.76))}
    rows, wanted = settle.replay(scores, p)
    assert wanted == {}
    opened = [r for r in rows if r["outcome"] == "open"]
    assert opened and all(r["final"] and "seeds per generator would settle it" in r["verdict"] for r in opened)


@pytest.mark.parametrize("kw,message", [({"alpha": 0.7}, "alpha"), ({"first": 1}, "first look"),
                                        ({"max_seeds": 2}, "first look")])
def test_a_plan_that_cannot_be_is_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        plan(**kw)
    with pytest.raises(ValueError, match="no margin for ssim"):
        settle.Plan(generators=GENS, metrics=["ssim"], margins={}).check()


def test_variance_by_source_splits_the_spread_into_seed_and_split():
    import pandas as pd

    from analysis.stats import run_level, variance_by_source
    # Three splits x two seeds of one generator; run means 0.70/0.72 (split a), 0.80/0.82 (b), 0.60/0.62 (c):
    # within a split the seeds differ by 0.02 (variance 0.0002), the splits' means by 0.1.
    means = {("a", 0): 0.70, ("a", 1): 0.72, ("b", 0): 0.80, ("b", 1): 0.82, ("c", 0): 0.60, ("c", 1): 0.62}
    rows = [{"generator": "unet", "split": sp, "seed": sd, "run": f"unet-{sp}{sd}", "image": f"{sp}{i}",
             "ssim": mu + (0.01 if i else -0.01)} for (sp, sd), mu in means.items() for i in range(2)]
    table = variance_by_source(pd.DataFrame(rows), ["ssim"]).iloc[0]
    assert table.splits == 3 and table.runs == 6
    assert table.ssim_seed_sd == pytest.approx(np.sqrt(0.0002))
    # MS between = 2 * sum((0.71-0.71)^2 + (0.81-0.71)^2 + (0.61-0.71)^2) / 2 = 0.02; split var = (0.02 - 0.0002) / 2.
    assert table.ssim_split_sd == pytest.approx(np.sqrt((0.02 - 0.0002) / 2))
    assert table.ssim_split_share == pytest.approx(0.0099 / (0.0099 + 0.0002))
    # Runs on different splits share no test photos: the run-level comparison still stands (on run means).
    other = [{**r, "generator": "hybrid", "run": r["run"].replace("unet", "hybrid"), "image": "h" + r["image"],
              "ssim": r["ssim"] - 0.05} for r in rows]
    level = run_level(pd.DataFrame(rows + other), ["ssim"]).iloc[0]
    assert level["diff"] == pytest.approx(-0.05) and level["images"] == 0 and np.isfinite(level.boot_low)


def test_the_pages_latest_look_is_what_the_committed_runs_give(tmp_path):
    """The newest docs/results/settle/look<N>.csv is the rule replayed over the committed runs' tables (seeds
    0-2 of the three-seed study and the later seeds), by the command the page gives."""
    import pandas as pd

    from analysis import settle
    from conftest import ROOT
    results = ROOT / "docs" / "results"
    latest = max((results / "settle").glob("look*.csv"), key=lambda p: int(p.stem[4:]))
    code = settle.main(["--plan", str(results / "settle" / "plan.json"), "--metrics",
                        "hist_corr,template_match,feature_match,ssim", str(results / "seeds"),
                        str(results / "settle" / "seeds"), "--out", str(tmp_path / "look")])
    assert code == 0
    # Up to float noise: a run re-scored by another judge (jobs/evaluate.py --rejudge) redraws its photos.
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "look.csv"), pd.read_csv(latest), rtol=1e-4, atol=1e-6)


def test_the_pages_latest_fcn_look_is_what_the_kept_judges_runs_give(tmp_path):
    """The newest docs/results/settle/fcn2-look<N>.csv is the FCN track's plan (seeds from 5, the kept
    judge's margin) replayed over the runs that judge scored, out of folders that also hold the lost
    judge's runs."""
    import pandas as pd

    from analysis import settle
    from conftest import ROOT
    results = ROOT / "docs" / "results" / "settle"
    latest = max(results.glob("fcn2-look*.csv"), key=lambda p: int(p.stem[len("fcn2-look"):]))
    code = settle.main(["--plan", str(results / "plan-fcn-judge2.json"), "--judge", "7295acfc13743386",
                        str(results / "seeds"), str(results / "fcn-seeds"), "--out", str(tmp_path / "look")])
    assert code == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "look.csv"), pd.read_csv(latest), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("plan,message", [('{"generators": ["unet"]}', "not a settle plan"), ("[1, 2", "not a settle plan"),
                                          (None, "not in the plan")], ids=["one-generator", "truncated", "metric"])
def test_a_bad_plan_or_metric_is_one_line(tmp_path, capsys, plan, message):
    from analysis import settle
    from conftest import ROOT
    path = ROOT / "docs" / "results" / "settle" / "plan.json"
    if plan is not None:
        path = tmp_path / "plan.json"
        path.write_text(plan)
    code = settle.main(["--plan", str(path), "--metrics", "nosuch", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_a_judge_no_run_was_scored_by_is_one_line_naming_the_judges_there(capsys):
    from analysis import settle
    from conftest import ROOT
    results = ROOT / "docs" / "results"
    code = settle.main(["--plan", str(results / "settle" / "plan-fcn.json"), "--judge", "<b>nosuch</b>",
                        str(results / "settle" / "fcn-seeds")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --judge <b>nosuch</b>: no run there was scored by it (judges there: 9a444e7fa3c964dd")


def test_the_rule_counts_a_run_measured_otherwise_and_refuses_one_trained_otherwise(tiny_runs, tmp_path):
    """`jobs/tune.py --settle` reads the experiment's finished runs as seeds: one that differs from the
    plan only in how it was measured (a judge at every evaluation, fewer sample images, eval workers)
    counts, as the report's grouping has it; one trained for another number of steps is refused in one
    line naming the field."""
    import json
    import shutil
    import sys

    import pandas as pd

    from conftest import ROOT
    from gan.config import make_config
    from gan.errors import UserError
    sys.path.insert(0, str(ROOT / "jobs"))
    import settling
    exp = tmp_path / "settle"
    for gen in ("unet", "hybrid"):
        shutil.copytree(tiny_runs / "cmp" / gen, exp / gen)

    def edit(gen: str, section: str, **values) -> None:
        path = exp / gen / "config.json"
        saved = json.loads(path.read_text())
        saved["config"][section].update(values)
        path.write_text(json.dumps(saved))

    edit("hybrid", "eval", fcn_every_eval=True, samples=1, workers=2)
    rule = settle.Plan(generators=["hybrid", "unet"], metrics=["ssim"], margins={"ssim": 0.1}).check()
    base = make_config("tiny", {"experiment": "settle"})
    scores = settling.settle_scores(exp, base, rule)
    expected = pd.read_csv(exp / "hybrid" / "test_metrics.csv")["ssim"].mean()
    assert set(scores) == {"hybrid", "unet"} and scores["hybrid"][0]["ssim"] == pytest.approx(expected)
    edit("unet", "train", steps=base.train.steps + 1)
    with pytest.raises(UserError, match=r"unet is another configuration \(train\.steps: "):
        settling.settle_scores(exp, base, rule)


@pytest.mark.parametrize("stored,args,message", [
    ("{trunc", ["--resume"], "_tune_args.json: not valid JSON"),
    ('{"space": {}, "configurations": []}', ["--resume"], "_tune_args.json: holds no settle sweep (a search of jobs/tune.py"),
    ('{"settle": {"generators": "x"}, "gens": [], "overrides": {}}', ["--resume"], "its settle plan is damaged"),
    (None, ["--settle", "--grid", "optim.lr_g=1e-4,2e-4"], "--settle: compares the generators' own configurations"),
    (None, ["--settle", "--vary-split", "--data.split_seed", "3"], "--vary-split: draws each run's split itself"),
    (None, ["--settle", "--disk-limit", "0.001"], "--disk-limit: this sweep writes up to"),
])
def test_submit_settle_refuses_in_one_line_before_it_submits(tmp_path, stored, args, message):
    """`jobs/submit.py --settle` / `--resume`: a damaged or foreign sweep file and a plan it cannot keep end in
    one line, before any job is submitted (no logs folder)."""
    from conftest import run_cli
    if stored is not None:
        (tmp_path / "runs" / "e").mkdir(parents=True)
        (tmp_path / "runs" / "e" / "_tune_args.json").write_text(stored)
    done = run_cli("submit.py", "--experiment", "e", "--cluster", "local", "--preset", "tiny", *args,
                   "--out", str(tmp_path / "runs"), "--logs", str(tmp_path / "logs"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stdout + done.stderr
    assert not (tmp_path / "logs").exists()


def test_a_settle_sweep_of_one_launcher_is_not_taken_up_by_the_other_by_mistake(tmp_path):
    """A settle sweep that jobs/submit.py drives, given to jobs/tune.py --resume: one line that names the
    command that continues it."""
    from conftest import run_cli
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "_tune_args.json").write_text(json.dumps({"launcher": "submitit", "gens": ["unet"],
                                                                "overrides": {}, "preset": "tiny", "settle": {}}))
    done = run_cli("tune.py", "--out", str(tmp_path), "--experiment", "e", "--resume")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].endswith(f"continue it with: python jobs/submit.py --out {tmp_path} --experiment e --resume")
