"""Run-level statistics (analysis/stats.py) against hand-computed cases, without training anything."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import stats


def frame(scores: dict[str, list[list[float]]], metric: str = "ssim") -> pd.DataFrame:
    """{generator: [[image scores of seed 0], [of seed 1], ...]} -> the tidy test frame the report builds."""
    rows = []
    for gen, seeds in scores.items():
        for seed, values in enumerate(seeds):
            rows += [{"generator": gen, "run": f"{gen}-seed{seed}", "seed": seed, "image": i, metric: v}
                     for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_difference_and_probability_of_improvement_by_hand():
    # Run means: a 0.6 and 0.4, b 0.5 and 0.3. Difference of means 0.5 - 0.4 = 0.1. P(a > b) over the four
    # run pairs: 0.6>0.5, 0.6>0.3, 0.4<0.5, 0.4>0.3 -> 3/4.
    tests = frame({"a": [[0.5, 0.7], [0.3, 0.5]], "b": [[0.4, 0.6], [0.2, 0.4]]})
    row = stats.run_level(tests, ["ssim"]).iloc[0]
    assert (row.a, row.b, row.runs_a, row.runs_b, row.images) == ("a", "b", 2, 2, 2)
    assert row["diff"] == pytest.approx(0.1)
    assert row.p_a_beats_b == pytest.approx(0.75)
    assert stats.probability_of_improvement([1, 2], [2, 0]) == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    # Welch on the run means: var 0.02 / 2 runs on each side, se = sqrt(0.02), df = 0.02^2 / (2 * 0.01^2) = 2,
    # t = 0.1 / sqrt(0.02) = 1/sqrt(2); with 2 df, P(T > t) = 1/2 - t / (2 sqrt(t^2 + 2)).
    t = 1 / np.sqrt(2)
    assert row.p == pytest.approx(2 * (0.5 - t / (2 * np.sqrt(t ** 2 + 2))))
    half = scipy_stats.t.ppf(0.975, 2) * np.sqrt(0.02)
    assert (row.diff_low, row.diff_high) == pytest.approx((0.1 - half, 0.1 + half))
    assert row.boot_low <= row["diff"] <= row.boot_high and 0 <= row.pi_low <= row.pi_high <= 1


def test_two_close_seeds_a_side_are_not_a_verdict():
    """Run means a 0.52 and 0.50, b 0.49 and 0.47: every bootstrap resample of the runs has a ahead, so the
    bootstrap interval excludes 0, yet an exact permutation test over 2 + 2 runs cannot go below p = 1/3.
    The verdict's Welch test: diff 0.03, se 0.01 sqrt(2), df 2 -> p = 0.17, interval across 0."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.6, 50)
    tests = frame({"a": [base + 0.02, base], "b": [base - 0.01, base - 0.03]})
    row = stats.run_level(tests, ["ssim"]).iloc[0]
    assert row.boot_low > 0  # the bootstrap's few-runs blind spot, shown beside the verdict's interval
    t = 0.03 / (0.01 * np.sqrt(2))
    assert row.p == pytest.approx(2 * (0.5 - t / (2 * np.sqrt(t ** 2 + 2))), rel=1e-6)
    assert row.diff_low < 0 < row.diff_high and row.p_holm > 0.05
    assert not stats.verdict(tests, stats.run_level(tests, ["ssim"]), ["ssim"]).iloc[0].significant
    # Runs that agree exactly on each side leave no spread to estimate: nothing is concluded.
    assert stats.welch([0.5, 0.5], [0.4, 0.4]) == (-np.inf, np.inf, 1.0)


def test_image_level_significant_but_run_level_not():
    """Two seeds of a land far apart (+0.10 and -0.06 around b's scores), so averaged per image a leads b by
    0.02 on every image: the image-level Wilcoxon test is highly significant. Over runs, one seed of a is
    worse than b: the run-level interval covers 0 and P(a > b) is 1/2."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.6, 50)
    noise = lambda: rng.normal(0, 0.002, 50)  # noqa: E731
    tests = frame({"a": [base + 0.10 + noise(), base - 0.06 + noise()], "b": [base + noise(), base + noise()]})
    image_level = stats.paired_tests(tests, ["ssim"]).iloc[0]
    assert image_level.p_holm < 1e-6
    run = stats.run_level(tests, ["ssim"]).iloc[0]
    assert run["diff"] == pytest.approx(0.02, abs=0.002)
    assert run.diff_low < 0 < run.diff_high and run.p_holm > 0.05
    assert run.p_a_beats_b == pytest.approx(0.5)


def test_a_clear_run_level_lead_is_significant_and_holm_corrected():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.6, 40)
    tests = frame({g: [base + shift + rng.normal(0, 0.01, 40) + rng.normal(0, 0.005) for _ in range(4)]
                   for g, shift in (("a", 0.1), ("b", 0.0), ("c", 0.0))})
    table = stats.run_level(tests, ["ssim"], resamples=2000)
    ab = table[(table.a == "a") & (table.b == "b")].iloc[0]
    assert ab.diff_low > 0.05 and ab.p_a_beats_b == 1.0 and ab.p_holm < 0.05
    assert np.allclose(sorted(table.p_holm), sorted(stats.holm(list(table.p))))
    verdict = stats.verdict(tests, table, ["ssim"])
    assert verdict.iloc[0].best == "a" and verdict.iloc[0].significant
    assert verdict.iloc[0].evidence.startswith("runs: 4+ seeds")


def test_tuned_against_default_is_tuned_minus_default_with_holm_over_the_generators():
    """The equal-budget table: per generator, the tuned arm against the default on the same seeds and images
    (first arm minus second, whatever the names' order), Holm over the generators of each metric."""
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.6, 30)
    tuned = frame({"unet": [base + 0.05, base + 0.04], "resnet": [base - 0.02, base - 0.01]})
    default = frame({"unet": [base, base + 0.01], "resnet": [base, base + 0.005]})
    table = stats.arms_compared({"tuned": tuned, "default": default}, ["ssim"])
    assert list(table.generator) == ["resnet", "unet"] and set(table.a) == {"tuned"} and set(table.b) == {"default"}
    unet, resnet = table.set_index("generator").loc["unet"], table.set_index("generator").loc["resnet"]
    assert unet["diff"] == pytest.approx(0.04) and resnet["diff"] == pytest.approx(-0.0175)
    assert unet.p_a_beats_b == 1.0 and resnet.p_a_beats_b == 0.0
    for gen, arms in (("unet", (tuned, default)), ("resnet", (tuned, default))):
        alone = stats.run_level(pd.concat([arm[arm.generator == gen].assign(generator=name)
                                           for arm, name in zip(arms, ("tuned", "default"))]), ["ssim"],
                                order=["tuned", "default"]).iloc[0]
        assert table.set_index("generator").loc[gen].p == pytest.approx(alone.p)
    assert np.allclose(table.p_holm, stats.holm(list(table.p)))  # a family of the two generators, not of all arms


def test_seeds_needed_by_hand():
    # The two-sample t-test's textbook sample sizes (alpha 0.05 two-sided, power 0.8): 17 per group for a
    # difference of one SD, 64 for half an SD, 6 for two (the normal approximation says 16, 63 and 4).
    assert stats.seeds_needed(0.05, 0.05) == 17
    assert stats.seeds_needed(0.025, 0.05) == 64
    assert stats.seeds_needed(0.1, 0.05) == 6
    assert stats.t_test_power(6, 2.0) >= 0.8 > stats.t_test_power(5, 2.0)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert stats.seeds_needed(1.0, 1e4) == int(np.ceil(2 * z ** 2 * 1e8))  # far past where t and z differ
    assert stats.seeds_needed(0.0, 0.03) == 0  # no gap to resolve


def test_one_seed_verdict_says_what_it_compares():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.6, 30)
    tests = frame({"a": [base + 0.02], "b": [base]})
    val = pd.DataFrame({"run": ["a-seed0"] * 4 + ["b-seed0"] * 4, "split": "val", "step": [1, 2, 3, 4] * 2,
                        "ssim": [0.40, 0.44, 0.38, 0.42, 0.30, 0.31, 0.29, 0.30]})
    assert stats.seeds_per_generator(tests) == 1
    verdict = stats.verdict(tests, stats.paired_tests(tests, ["ssim"]), ["ssim"])
    assert verdict.iloc[0].evidence == "images of one trained run per generator"
    needed, source = stats.seeds_table(tests, ["ssim"], val)
    spread = np.mean([np.std([0.40, 0.44, 0.38, 0.42], ddof=1), np.std([0.30, 0.31, 0.29, 0.30], ddof=1)])
    assert needed.iloc[0].run_spread == pytest.approx(spread)
    assert needed.iloc[0].seeds_needed == stats.seeds_needed(needed.iloc[0].gap, spread)
    assert "proxy" in source


def test_equal_time_table_compares_at_the_budget_every_generator_reached(tmp_path):
    """Fast generator f: 10 s per 100 steps; slow s: 40 s. The budget every generator reached is s's total
    (80 s, two intervals); f is read at its last evaluation within 80 s (step 800), not at its last step."""
    from analysis import plots, tables
    metrics, timings = [], []
    for gen, seconds in (("f", 10.0), ("s", 40.0)):
        steps = range(100, 1100 if gen == "f" else 300, 100)
        for step in steps:
            metrics.append({"run": gen, "generator": gen, "split": "val", "step": step, "ssim": step / 10000})
            timings.append({"run": gen, "generator": gen, "step": step, "steps": 100, "train_seconds": seconds,
                            "shared": gen == "s" and step == 200})
    metrics, timings = pd.DataFrame(metrics), pd.DataFrame(timings)
    table = tables.equal_time_table(metrics, timings).set_index("generator")
    assert table.time_budget_seconds.iloc[0] == 80.0
    assert table.loc["f", "step"] == 800 and table.loc["f", "ssim"] == pytest.approx(0.08)
    assert table.loc["s", "step"] == 200 and table.loc["s", "shared"] and not table.loc["f", "shared"]
    assert plots.quality_by_time(metrics, timings, tmp_path / "q")[0].stat().st_size > 1000
    # Several seeds per generator: one mean line and a band per generator, not a line per run.
    seeds = pd.concat([metrics.assign(run=metrics.run + "-seed0"), metrics.assign(run=metrics.run + "-seed1",
                                                                                  ssim=metrics.ssim + 0.01)])
    paths = plots.evolution(seeds.assign(psnr=1.0), tmp_path / "evolution")
    assert paths[0].stat().st_size > 1000 and "mean of 2 runs" in paths[1].read_text()
