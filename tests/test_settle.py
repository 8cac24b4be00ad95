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
    # Its interval (F-based, 3 splits: 2 degrees of freedom): around the share, and wide.
    assert table.ssim_split_share_low <= table.ssim_split_share <= table.ssim_split_share_high
    assert table.ssim_split_share_low < 0.9 and table.ssim_split_share_high > 0.99
    # Runs on different splits share no test photos: the run-level comparison still stands (on run means).
    other = [{**r, "generator": "hybrid", "run": r["run"].replace("unet", "hybrid"), "image": "h" + r["image"],
              "ssim": r["ssim"] - 0.05} for r in rows]
    level = run_level(pd.DataFrame(rows + other), ["ssim"]).iloc[0]
    assert level["diff"] == pytest.approx(-0.05) and level["images"] == 0 and np.isfinite(level.boot_low)


@pytest.mark.parametrize("plan_file,roots,table", [
    ("plan-control.json", ["../seeds", "seeds"], "control-look.csv"),
    ("plan-fcn-control.json", ["seeds", "fcn-seeds"], "fcn-control-look.csv"),
], ids=["four-metrics", "fcn"])
def test_the_pages_verdict_is_what_the_committed_runs_give(tmp_path, plan_file, roots, table):
    """docs/results/settle/{control-look,fcn-control-look}.csv are the rule, its controls and frozen plans
    replayed over the committed runs' tables by the command the page gives."""
    import pandas as pd

    from conftest import ROOT
    results = ROOT / "docs" / "results" / "settle"
    code = settle.main(["--plan", str(results / plan_file), *(str(results / r) for r in roots),
                        "--out", str(tmp_path / "look")])
    assert code == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "look.csv"), pd.read_csv(results / table), rtol=1e-4, atol=1e-6)


def test_on_the_committed_runs_a_metric_at_the_gray_image_level_reads_uninformative_never_equivalent(capsys):
    """SSIM: every generator's test mean sits at the constant gray image's (0.350); feature matching: within
    a margin of another photo's. Under the plan with its control both read uninformative for every pair,
    where the plan without a control (the same runs, the same margins) said equivalent."""
    import pandas as pd

    from conftest import ROOT
    results = ROOT / "docs" / "results" / "settle"
    table = pd.read_csv(results / "control-look.csv")
    pairs = table[table.b != settle.CONTROL]
    for metric in ("ssim", "feature_match"):
        assert set(pairs[pairs.metric == metric].outcome) == {"uninformative"}, pairs
    assert set(pairs[pairs.metric == "template_match"].outcome) == {"equivalent"}  # a generator beats the control
    assert "better" in set(table[(table.b == settle.CONTROL) & (table.metric == "template_match")].outcome)
    code = settle.main(["--plan", str(results / "plan.json"), "--metrics", "ssim,feature_match",
                        str(ROOT / "docs" / "results" / "seeds"), str(results / "seeds")])
    out = capsys.readouterr()
    assert code == 0 and "equivalent within" in out.out and "the plan has no control" in out.err


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

    import pandas as pd

    from analysis.sweeps import settle_scores
    from gan.config import make_config
    from gan.errors import UserError
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
    scores = settle_scores(exp, base, rule)
    expected = pd.read_csv(exp / "hybrid" / "test_metrics.csv")["ssim"].mean()
    assert set(scores) == {"hybrid", "unet"} and scores["hybrid"][0]["ssim"] == pytest.approx(expected)
    edit("unet", "train", steps=base.train.steps + 1)
    with pytest.raises(UserError, match=r"unet is another configuration \(train\.steps: "):
        settle_scores(exp, base, rule)


@pytest.mark.parametrize("stored,args,message", [
    ("{trunc", ["--resume"], "_tune_args.json: not valid JSON"),
    ('{"space": {}, "configurations": []}', ["--resume"], "_tune_args.json: holds no settle sweep (a search of jobs/tune.py"),
    ('{"settle": {"generators": "x"}, "gens": [], "overrides": {}}', ["--resume"], "its settle plan is refused"),
    ("EDITED", ["--resume"], "its settle plan is refused (changed after it was frozen at"),
    (None, ["--resume", "--margin", "l1=0.1"], "--resume: continues the stored plan, frozen when it was written; --margin"),
    (None, ["--settle", "--settle-metrics", "l1", "--margin", "ssim=0.01"], "--margin ssim=0.01: ssim is not settled by this plan"),
    (None, ["--settle", "--settle-metrics", "l1", "--margin", "l1=0.9"], "is not smaller than the span between the control"),
    (None, ["--settle", "--grid", "optim.lr_g=1e-4,2e-4"], "--settle: compares the generators' own configurations"),
    (None, ["--settle", "--vary-split", "--data.split_seed", "3"], "--vary-split: draws each run's split itself"),
    (None, ["--settle", "--disk-limit", "0.001"], "--disk-limit: this sweep writes up to"),
])
def test_submit_settle_refuses_in_one_line_before_it_submits(tmp_path, stored, args, message):
    """`jobs/submit.py --settle` / `--resume`: a damaged or foreign sweep file and a plan it cannot keep end in
    one line, before any job is submitted (no logs folder)."""
    from conftest import run_cli
    if stored == "EDITED":  # a frozen plan whose margin was widened after a look
        plan = settle.freeze(control_plan().to_dict())
        plan["margins"]["ssim"] = 0.5
        stored = json.dumps({"launcher": "submitit", "gens": GENS, "preset": "tiny", "overrides": {}, "settle": plan})
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


def control_plan(**kw) -> settle.Plan:
    defaults = dict(generators=GENS, metrics=["ssim"], margins={"ssim": 0.02}, control={"ssim": 0.35},
                    control_name={"ssim": "constant gray image"}, ceiling={"ssim": 1.0})
    return settle.Plan(**{**defaults, **kw}).check()


def test_generators_that_score_like_the_control_are_uninformative_never_equivalent():
    """Three generators all at the gray image's level: at any spread small enough for "equivalent", the
    rule says uninformative for every pair, keeps training to the maximum, and never says equivalent."""
    rng = np.random.default_rng(5)
    p = control_plan()
    scores = {g: {s: {"ssim": float(v)} for s, v in enumerate(rng.normal(0.35, 0.002, 8))} for g in GENS}
    rows, wanted = settle.replay(scores, p)
    pairs = [r for r in rows if r["b"] != settle.CONTROL]
    assert wanted == {} and all(r["outcome"] == "uninformative" and r["final"] for r in pairs), pairs
    assert all("no generator beats the control (constant gray image)" in r["verdict"] for r in pairs)
    controls = [r for r in rows if r["b"] == settle.CONTROL]
    assert {r["outcome"] for r in controls} <= {"equivalent", "open", "worse"} and len(controls) == 3
    # Without the control the same scores were "equivalent": the trap the control closes.
    blind = settle.Plan(generators=GENS, metrics=["ssim"], margins={"ssim": 0.02}).check()
    assert {r["outcome"] for r in settle.replay(scores, blind)[0]} == {"equivalent"}
    # One generator clearly above the control: the metric counts, and the pairs' verdicts stand.
    for s in range(8):
        scores["unet"][s]["ssim"] += 0.2
    rows, _ = settle.replay(scores, p)
    by = {(r["a"], r["b"]): r for r in rows}
    assert by[("hybrid", "resnet")]["outcome"] == "equivalent" and by[("hybrid", "unet")]["verdict"] == "unet better"
    assert by[("unet", settle.CONTROL)]["verdict"] == "unet better than constant gray image"
    assert by[("hybrid", "unet")]["seeds"] == 3  # decided at the first look: no seed spent waiting


def test_uninformative_is_decided_in_the_rules_output_table_and_simulation():
    result = settle.simulate(control_plan(), dict.fromkeys(GENS, 0.35), 0.002, studies=200, seed=6)
    assert all(r["uninformative"] == 1 and r["equivalent"] == 0 for r in result["rates"].values()), result


@pytest.mark.parametrize("kw,message", [
    ({"margins": {"ssim": 0.7}}, "is not smaller than the span between the control"),
    ({"margins": {"ssim": 0.0}}, "must be a number > 0"),
    ({"margins": {"ssim": -0.1}}, "must be a number > 0"),
    ({"margins": {"ssim": 0.02, "l1": 0.1}}, "a margin for l1, which the plan does not settle"),
    ({"max_seeds": 3.5}, "max_seeds must be a whole number"),
    ({"first": "3"}, "first must be a whole number"),
    ({"control": {}, "control_by_seed": {"0": {"ssim": 0.3}}}, "no control score for the split of seed 1"),
], ids=["wider-than-span", "zero", "negative", "unsettled-metric", "max-seeds-3.5", "first-string", "varied-missing"])
def test_a_margin_or_plan_that_cannot_mean_anything_is_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        control_plan(**kw)


def test_a_frozen_plan_edited_afterwards_is_refused_naming_the_fields(tmp_path, capsys):
    """The plan's freeze record names what changed: a margin widened after the results turns "better"
    into "equivalent" no more. The replay refuses it in one line; an intact copy replays."""
    from conftest import ROOT
    source = ROOT / "docs" / "results" / "settle" / "plan-control.json"
    plan = json.loads(source.read_text())
    assert settle.check_frozen(plan) is None and plan["frozen"]["sha256"]
    plan["margins"]["hist_corr"] = 0.3
    plan["alpha"] = 0.1
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code = settle.main(["--plan", str(tmp_path / "plan.json"), str(ROOT / "docs" / "results" / "seeds")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "changed after it was frozen" in err[0] and "(alpha, margins differ" in err[0]
    # An addendum is a new file: freezing the edited plan anew is allowed, and says when.
    (tmp_path / "addendum.json").write_text(json.dumps(settle.freeze(settle.content(plan))))
    assert settle.main(["--plan", str(tmp_path / "addendum.json"), str(ROOT / "docs" / "results" / "seeds")]) == 0


def test_the_replay_counts_only_the_plans_runs_and_says_which_it_left_out(tmp_path, capsys):
    """Another configuration (eval.select) and a seed outside the plan are left out with the reason; two
    runs of one seed (one measured otherwise, so not a copy) are refused in one line."""
    import shutil

    from conftest import ROOT
    seeds = ROOT / "docs" / "results" / "seeds"
    plan = ROOT / "docs" / "results" / "settle" / "plan-control.json"
    for run in ("unet-seed0", "resnet-seed0", "hybrid-seed0"):
        shutil.copytree(seeds / run, tmp_path / "a" / run)
    other = tmp_path / "b" / "unet-best"
    shutil.copytree(seeds / "unet-seed1", other)
    config = json.loads((other / "config.json").read_text())
    config["config"]["eval"]["select"] = "best_val_ssim"
    (other / "config.json").write_text(json.dumps(config))
    code = settle.main(["--plan", str(plan), str(tmp_path / "a"), str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 0 and f"left out: {other}: another configuration than the plan's (eval.select: 'best_val_ssim' there" in err, err
    twin = tmp_path / "a" / "unet-seed0-again"
    shutil.copytree(seeds / "unet-seed0", twin)
    config = json.loads((twin / "config.json").read_text())
    config["config"]["eval"]["samples"] = 1  # measured otherwise: the same configuration, not a copy
    (twin / "config.json").write_text(json.dumps(config))
    code = settle.main(["--plan", str(plan), str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: two runs of unet seed 0: "), err


@pytest.mark.parametrize("ratio", [1, 2, 3, 5])
def test_the_test_holds_its_level_at_three_seeds_with_unequal_spreads(ratio):
    """3 + 3 runs, no true difference, one generator's spread `ratio` times the other's, at the rule's own
    level (alpha' = 0.0028 of a plan of three generators and six looks): the rule's test (Welch with
    conservative degrees of freedom) rejects at most that often; Welch-Satterthwaite's degrees of freedom
    overshoot it at 5:1 (what the rule used before: 1.7 times the level), so the check can fail."""
    from scipy import special
    rng = np.random.default_rng(ratio)
    alpha, n = 0.05 / 18, 400_000
    a, b = rng.normal(0, 1, (n, 3)), rng.normal(0, ratio, (n, 3))
    va, vb = a.var(axis=1, ddof=1) / 3, b.var(axis=1, ddof=1) / 3
    t = np.abs(a.mean(axis=1) - b.mean(axis=1)) / np.sqrt(va + vb)
    satterthwaite_df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    bound = alpha + 3 * np.sqrt(alpha / n)  # 3 standard errors of a binomial at n draws
    conservative = np.mean(2 * special.stdtr(2, -t) < alpha)
    assert conservative <= bound, conservative
    if ratio == 5:
        satterthwaite = np.mean(2 * special.stdtr(satterthwaite_df, -t) < alpha)
        assert satterthwaite > 1.3 * alpha, satterthwaite
    # The rule's own function gives the same p as this vectorised form.
    from analysis.stats import welch
    assert welch(a[0], b[0], df="conservative")[2] == pytest.approx(2 * special.stdtr(2, -t[0]))


def test_the_whole_rule_keeps_its_error_rate_with_unequal_spreads():
    """The sequence of looks from three seeds, spreads 1:5:1 between the generators, no true difference:
    the chance of any false "better" for the metric stays at or below alpha."""
    result = settle.simulate(plan(), dict.fromkeys(GENS, 0.75), {"hybrid": 0.006, "resnet": 0.03, "unet": 0.006},
                             studies=1500, seed=7)
    assert sum(r["better"] for r in result["rates"].values()) <= 0.05, result


def test_intervals_are_at_the_level_of_the_test_they_report():
    rng = np.random.default_rng(8)
    p = plan()
    scores = {g: {s: {"fcn_pixel_acc": float(v)} for s, v in enumerate(rng.normal(mu, 0.001, 3))}
              for g, mu in (("hybrid", 0.70), ("resnet", 0.70), ("unet", 0.80))}
    by = {(r["a"], r["b"]): r for r in settle.replay(scores, p)[0]}
    alpha = p.alpha_per_test
    assert by[("hybrid", "unet")]["level"] == pytest.approx(1 - alpha)  # "better": the two-sided test at alpha'
    assert by[("hybrid", "resnet")]["level"] == pytest.approx(1 - 2 * alpha)  # "equivalent": TOST at alpha'
    # A "better" row's interval excludes zero exactly when its p is below alpha'.
    row = by[("hybrid", "unet")]
    assert (row["high"] < 0) == (row["p"] < alpha)


def test_p_a_beats_b_does_not_collapse_at_three_runs_and_seeds_to_settle_is_a_range():
    pi, low, high = settle.probability_of_improvement(np.array([3.0, 4, 5]), np.array([0.0, 1, 2]))
    assert pi == 1 and high == 1 and 0.2 < low < 0.5  # 3 head-to-head wins: not certainty
    at, fewest, most = settle.seeds_to_settle_range(np.array([0.70, 0.74, 0.72]), np.array([0.69, 0.70, 0.74]),
                                                    margin=0.01, alpha=0.0028, now=3)
    assert 3 < fewest <= at <= most and most > 2 * fewest


@pytest.mark.parametrize("args,message", [
    (["--resume"], "its settle plan is refused (changed after it was frozen at"),
    (["--resume", "--max-seeds", "20"], "--resume: continues the stored plan, frozen when it was written; --max-seeds"),
    (["--settle", "--gens", "unet,hybrid", "--preset", "tiny", "--train.seed", "7"], "--settle: chooses each run's training seed itself"),
], ids=["edited", "resume-flag", "train-seed"])
def test_tune_refuses_an_edited_plan_and_plan_flags_on_resume_in_one_line(tmp_path, args, message):
    """`jobs/tune.py`: the stored plan with a margin edited after it was frozen, --resume with a plan flag that
    it would ignore, and --settle with a seed it would ignore: one line each, before Ray starts."""
    from conftest import run_cli
    plan = settle.freeze(control_plan().to_dict())
    plan["margins"]["ssim"] = 0.5
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "_tune_args.json").write_text(json.dumps(
        {"gens": GENS, "sweeps": [], "space": {}, "configurations": [], "overrides": {}, "preset": "tiny",
         "settle": plan, "cpus": 1, "gpus": 0}))
    done = run_cli("tune.py", "--out", str(tmp_path), "--experiment", "e" if "--resume" in args else "f", *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stdout + done.stderr
    assert "margins differ" in lines[0] or args[0] != "--resume" or len(args) > 1
