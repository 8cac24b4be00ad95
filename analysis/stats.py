"""Statistics beyond the study: run-level comparisons, paired image tests, bootstrap CIs, seed spread.

- Run level (the unit of evidence about architectures): with >= 2 training
  seeds per generator, for each metric and pair, the difference of the
  generators' mean scores with two 95 % intervals and a p-value:
  - the verdict's: Welch's t-test and t-interval on the run means (each
    run's mean over the shared test images), so its width grows as it should
    with 2 or 3 runs; Holm-corrected over the pairs of each metric;
  - beside it, the hierarchical bootstrap interval (seeds resampled with
    replacement within each generator, the shared test images resampled
    once per replicate for both), which adds the test photos' sampling but
    cannot reach beyond the runs it has: with 2 runs a side that do not
    overlap it excludes 0 whatever their spread, where an exact permutation
    test over runs cannot go below p = 1/3 (1/10 with 3 runs). So it is
    shown, not tested on;
  - the probability of improvement P(A > B) that a run of A beats a run of
    B on its mean score, with its bootstrap interval.
  Written here in numpy/scipy rather than with `rliable`: rliable's
  stratified bootstrap resamples runs of a runs x tasks score matrix, so it
  would first collapse each run to one number and lose the images shared
  between the generators' runs, which the two-level resampling keeps; and
  its intervals have the same few-runs blind spot.
- With one run per generator the comparison is of trained models, not
  architectures: `seeds_needed` says how many seeds per generator the gaps
  would take, from the between-run spread where some generator has several
  seeds, else from the spread of each run's validation scores over its last
  evaluations (a proxy, said so).
- Paired tests: for each metric and each pair of generators, a Wilcoxon
  signed-rank test on the per-image test metrics, paired by image id (every
  run draws the same test split from the seed). With several seeds per
  generator, each image's value is first averaged over the seeds. p-values
  are Holm-corrected within each metric (family = the generator pairs).
- Confidence intervals: 95 % bootstrap (BCa, 2,000 resamples, fixed seed) of
  each generator's mean test metric.
- Seeds: mean and std across seeds of each run's mean test metric.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import special, stats

from analysis.runs import lower_is_better, metric_names


def present_metrics(tests: pd.DataFrame) -> list[str]:
    """The image metrics these per-image rows have (a run from before a metric simply lacks it)."""
    return [m for m in metric_names(tests) if m in tests]


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); a p that could not be computed
    (NaN: too few runs) stays NaN and is not counted in the family."""
    finite = [i for i, p in enumerate(p_values) if np.isfinite(p)]
    order = sorted(finite, key=lambda i: p_values[i])
    m = len(finite)
    adjusted = np.full(len(p_values), np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def paired_tests(tests: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (metric, generator a, generator b): images, median difference a-b, W, p, Holm p."""
    metrics = metrics or present_metrics(tests)
    if tests.empty:
        return pd.DataFrame()
    per_image = tests.groupby(["generator", "image"])[metrics].mean()  # average over seeds
    gens = sorted(tests.generator.unique())
    rows = []
    for metric in metrics:
        family = []
        for a, b in itertools.combinations(gens, 2):
            pair = pd.concat([per_image.loc[a, metric], per_image.loc[b, metric]], axis=1, join="inner").dropna()
            diff = pair.iloc[:, 0] - pair.iloc[:, 1]
            if len(diff) < 2 or np.allclose(diff, 0):
                w, p = float("nan"), 1.0
            else:
                res = stats.wilcoxon(pair.iloc[:, 0], pair.iloc[:, 1])
                w, p = float(res.statistic), float(res.pvalue)
            family.append({"metric": metric, "a": a, "b": b, "images": len(diff),
                           "median_diff": float(diff.median()) if len(diff) else float("nan"),
                           "statistic": w, "p": p})
        for row, adjusted in zip(family, holm([r["p"] for r in family]) if family else []):
            row["p_holm"] = adjusted
            rows.append(row)
    return pd.DataFrame(rows)


def bootstrap_ci(tests: pd.DataFrame, metrics: list[str] | None = None, confidence: float = 0.95,
                 resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per generator and metric: mean and its bootstrap confidence interval over images."""
    metrics = metrics or present_metrics(tests)
    rows = []
    for gen, group in tests.groupby("generator"):
        for metric in metrics:
            values = group[metric].to_numpy(float)
            if len(values) < 2 or np.allclose(values, values[0]):
                low = high = float(values.mean()) if len(values) else float("nan")
            else:
                res = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=resamples,
                                      method="BCa", random_state=np.random.default_rng(seed))
                low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
            rows.append({"generator": gen, "metric": metric, "mean": float(values.mean()), "ci_low": low,
                         "ci_high": high, "images": len(values)})
    return pd.DataFrame(rows)


def seed_spread(tests: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Per generator: seeds, and mean / std across seeds of each run's mean test metric."""
    metrics = metrics or present_metrics(tests)
    per_run = tests.groupby(["generator", "run", "seed"])[metrics].mean().reset_index()
    rows = []
    for gen, group in per_run.groupby("generator"):
        row = {"generator": gen, "seeds": group.seed.nunique()}
        for m in metrics:
            row[f"{m}_mean"] = group[m].mean()
            row[f"{m}_seed_std"] = group[m].std(ddof=1) if len(group) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(tests: pd.DataFrame, paired: pd.DataFrame, metrics: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Per metric: the best generator by test mean (lowest where lower is better), whom it beats
    significantly (Holm-corrected p < alpha) and whom not; `significant` is True when it beats every
    other generator. `paired` is `run_level` (seeds as the unit) or `paired_tests` (images of one run
    each); `evidence` says which."""
    evidence = (f"runs: {seeds_per_generator(tests)}+ seeds per generator" if "runs_a" in paired
                else "images of one trained run per generator")
    rows = []
    for metric in metrics:
        if metric not in tests or tests[metric].isna().all():
            continue
        means = tests.groupby("generator")[metric].mean().dropna()
        if len(means) < 2:
            continue
        best = means.idxmin() if metric in lower_is_better(tests) else means.idxmax()
        beats, ties = [], []
        for other in sorted(set(means.index) - {best}):
            row = paired[(paired.metric == metric) & (((paired.a == best) & (paired.b == other))
                                                      | ((paired.a == other) & (paired.b == best)))]
            significant = len(row) and row.p_holm.iloc[0] < alpha
            (beats if significant else ties).append(
                f"{other} (p={row.p_holm.iloc[0]:.2g})" if len(row) else other)
        rows.append({"metric": metric, "best": best, "mean": float(means[best]),
                     "beats (Holm p < %.2g)" % alpha: ", ".join(beats) or "-",
                     "not significantly better than": ", ".join(ties) or "-", "significant": not ties,
                     "evidence": evidence})
    return pd.DataFrame(rows)


def seeds_table(tests: pd.DataFrame, metrics: list[str], val: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """Per metric: the gap between the best generator and the runner-up (test means), the between-run
    spread, and the seeds per generator a run-level comparison would need to resolve it; and where the
    spread comes from."""
    spread, source = between_run_spread(tests, metrics, val)
    rows = []
    for metric in metrics:
        means = tests.groupby("generator")[metric].mean().dropna().sort_values(ascending=metric in lower_is_better(tests))
        if len(means) < 2 or metric not in spread:
            continue
        gap = abs(float(means.iloc[0] - means.iloc[1]))
        rows.append({"metric": metric, "best": means.index[0], "runner_up": means.index[1], "gap": gap,
                     "run_spread": spread[metric], "seeds_needed": seeds_needed(gap, spread[metric])})
    return pd.DataFrame(rows), source


def _run_matrix(tests: pd.DataFrame, generator: str, metric: str, images: list) -> np.ndarray:
    """seeds x images of one generator's per-image scores (images in the given order)."""
    table = tests[tests.generator == generator].pivot_table(index="run", columns="image", values=metric)
    return table.reindex(columns=images).to_numpy(float)


CHUNK = 250  # bootstrap replicates per pass of run_level


def run_level(tests: pd.DataFrame, metrics: list[str] | None = None, resamples: int = 4000, confidence: float = 0.95,
              seed: int = 0, order: list[str] | None = None) -> pd.DataFrame:
    """One row per (metric, a, b): runs of each, the difference of means a - b with its Welch t-interval over
    the run means (diff_low, diff_high) and its hierarchical bootstrap interval (boot_low, boot_high), P(a > b)
    over runs with its bootstrap interval, Welch's two-sided p and its Holm correction. Pairs follow
    `order` (default: alphabetical)."""
    metrics = metrics or present_metrics(tests)
    if tests.empty:
        return pd.DataFrame()
    rng = np.random.default_rng(seed)
    gens = order or sorted(tests.generator.unique())
    images = sorted(set.intersection(*(set(tests[tests.generator == g].image) for g in gens)))
    tail = (1 - confidence) / 2
    rows = []
    for metric in metrics:
        if metric not in tests or tests[metric].isna().all():
            continue
        family = []
        for a, b in itertools.combinations(gens, 2):
            n_img = len(images)
            if n_img < 2:  # runs on different splits share no test photos: their own means, runs resampled
                A = np.array([[x] for x in _run_means(tests, a, metric)])
                B = np.array([[x] for x in _run_means(tests, b, metric)])
                n_img = 1
            else:
                A, B = _run_matrix(tests, a, metric, images), _run_matrix(tests, b, metric, images)
            if not (np.isfinite(A).any() and np.isfinite(B).any()):
                continue  # one of them has no value (a run from before the metric): nothing to compare
            picks = rng.integers(0, n_img, (resamples, n_img))  # shared images: the comparison stays paired
            runs_a = rng.integers(0, len(A), (resamples, len(A)))
            runs_b = rng.integers(0, len(B), (resamples, len(B)))
            diffs, wins = np.empty(resamples), np.empty(resamples)
            for start in range(0, resamples, CHUNK):  # replicates in chunks: memory stays flat at many runs
                part = slice(start, start + CHUNK)
                # Per replicate: each resampled run's mean over the resampled images.
                means_a = np.nanmean(np.take_along_axis(A[runs_a[part]], picks[part, None, :], axis=2), axis=2)
                means_b = np.nanmean(np.take_along_axis(B[runs_b[part]], picks[part, None, :], axis=2), axis=2)
                diffs[part] = means_a.mean(axis=1) - means_b.mean(axis=1)
                wins[part] = probability_of_improvement(means_a, means_b)
            run_a, run_b = np.nanmean(A, axis=1), np.nanmean(B, axis=1)
            low, high, p = welch(run_a, run_b, confidence)
            family.append({"metric": metric, "a": a, "b": b, "runs_a": len(A), "runs_b": len(B), "images": len(images),
                           "diff": float(run_a.mean() - run_b.mean()), "diff_low": low, "diff_high": high,
                           "boot_low": float(np.quantile(diffs, tail)), "boot_high": float(np.quantile(diffs, 1 - tail)),
                           "p_a_beats_b": probability_of_improvement(run_a, run_b),
                           "pi_low": float(np.quantile(wins, tail)), "pi_high": float(np.quantile(wins, 1 - tail)),
                           "p": p})
        for row, adjusted in zip(family, holm([r["p"] for r in family]) if family else []):
            rows.append({**row, "p_holm": adjusted})
    return pd.DataFrame(rows)


def _run_means(tests: pd.DataFrame, generator: str, metric: str) -> list[float]:
    """Each run's mean test score of one generator (over its own test photos)."""
    return tests[tests.generator == generator].groupby("run")[metric].mean().tolist()


def _share_interval(ms_between: float, ms_within: float, k: int, n: int, n0: float,
                    confidence: float) -> tuple[float, float]:
    """The split's share of the variance (the intraclass correlation) with its F-based interval (Searle's,
    with the effective runs per split n0 for an unbalanced design): with few splits it is wide, which the
    point estimate alone hides."""
    if not (ms_within > 0 and k > 1 and n > k):
        return float("nan"), float("nan")
    f = ms_between / ms_within
    tail = (1 - confidence) / 2
    f_low, f_high = f / stats.f.ppf(1 - tail, k - 1, n - k), f / stats.f.ppf(tail, k - 1, n - k)
    share = lambda x: float(min(1.0, max(0.0, (x - 1) / (x + n0 - 1))))  # noqa: E731
    return share(f_low), share(f_high)


def variance_by_source(tests: pd.DataFrame, metrics: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """Where the spread between runs comes from, per generator and metric, when both the training seed and
    the data split vary (each split trained on several seeds): a one-way random-effects analysis of the run
    means grouped by split (method of moments, balanced or not). `seed_sd`: the SD between seeds on one
    split; `split_sd`: the SD a new split adds (its test photos included); `total_sd`: of one run drawn with
    both varied; `split_share`: the split's share of that variance, with its `confidence` interval
    (`split_share_low`, `_high`). A negative split component (splits agreeing more than seeds do) is
    reported as 0: not detected, which the interval says how far it is from nothing."""
    if "split" not in tests:
        return pd.DataFrame()
    per_run = tests.groupby(["generator", "split", "run"])[metrics].mean().reset_index()
    rows = []
    for gen, group in per_run.groupby("generator"):
        sizes = group.groupby("split").size()
        if len(sizes) < 2 or not (sizes >= 2).any():
            continue
        k, n = len(sizes), len(group)
        n0 = (n - (sizes ** 2).sum() / n) / (k - 1)  # the effective runs per split (unbalanced designs)
        row = {"generator": gen, "splits": k, "runs": n}
        for m in metrics:
            means = group.groupby("split")[m].mean()
            grand = group[m].mean()
            ms_between = float((sizes * (means - grand) ** 2).sum() / (k - 1))
            within = sum(float(((g[m] - g[m].mean()) ** 2).sum()) for _, g in group.groupby("split"))
            ms_within = within / (n - k)
            split_var = max(0.0, (ms_between - ms_within) / n0)
            total = split_var + ms_within
            low, high = _share_interval(ms_between, ms_within, k, n, n0, confidence)
            row.update({f"{m}_seed_sd": float(np.sqrt(ms_within)), f"{m}_split_sd": float(np.sqrt(split_var)),
                        f"{m}_total_sd": float(np.sqrt(total)),
                        f"{m}_split_share": float(split_var / total) if total > 0 else float("nan"),
                        f"{m}_split_share_low": low, f"{m}_split_share_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def welch(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, df: str = "welch") -> tuple[float, float, float]:
    """Welch's t-interval of mean(a) - mean(b) and its two-sided p (unequal variances). `df`: "welch"
    (Welch-Satterthwaite, the report's) or "conservative" (min(n_a, n_b) - 1, Hsu / Banerjee: holds its level
    at any ratio of spreads, where Welch-Satterthwaite's overshoots at 3 + 3 runs; the settle rule's). Runs that agree exactly within each side (no spread to estimate) give p = 1 and an
    unbounded interval: nothing can be concluded from them, rather than everything. One run on a side has no
    spread at all: NaN interval and p (no run-level claim can be made)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if not va + vb > 0:
        return -np.inf, np.inf, 1.0
    if df == "conservative":
        dof = min(len(a), len(b)) - 1
    else:
        dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va and vb else \
            (len(a) - 1 if va else len(b) - 1)
    diff, se = a.mean() - b.mean(), np.sqrt(va + vb)
    # scipy.special's t functions: the same values as stats.t.ppf / sf at a tenth of the cost (the settle
    # rule's simulations call this hundreds of thousands of times).
    half = special.stdtrit(dof, 1 - (1 - confidence) / 2) * se
    return float(diff - half), float(diff + half), float(2 * special.stdtr(dof, -abs(diff) / se))


def probability_of_improvement(a: np.ndarray, b: np.ndarray):
    """P(a run of A beats a run of B), ties counting half: Mann-Whitney's U / (n_a n_b), from the ranks of
    the pooled runs (memory linear in the runs; every pair compared would be quadratic). Along the last
    axis: a float for two samples, an array for stacked replicates."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ranks = stats.rankdata(np.concatenate([a, b], axis=-1), axis=-1)
    n_a, n_b = a.shape[-1], b.shape[-1]
    pi = (ranks[..., :n_a].sum(axis=-1) - n_a * (n_a + 1) / 2) / (n_a * n_b)
    return float(pi) if np.ndim(pi) == 0 else pi


def seeds_per_generator(tests: pd.DataFrame) -> int:
    """The fewest trained runs any generator has (0 with no tests)."""
    return int(tests.groupby("generator").run.nunique().min()) if not tests.empty else 0


def seeds_needed(gap: float, spread: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Runs per generator for a two-sided two-sample t-test of run means to detect `gap` with the given power
    when run means spread by `spread` (SD): the smallest n whose noncentral-t power reaches `power` (the
    normal approximation 2 (z_{1-alpha/2} + z_power)^2 spread^2 / gap^2 is a lower bound, and too low
    exactly where seeds are few: 4 instead of 6 for a gap of two spreads)."""
    if not (gap and np.isfinite(gap) and np.isfinite(spread)):
        return 0
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, int(np.ceil(2 * z ** 2 * spread ** 2 / gap ** 2)))
    if n > 10_000:  # t and normal agree to far below one seed
        return n
    while t_test_power(n, abs(gap) / spread if spread else np.inf, alpha) < power:
        n += 1
    return n


def t_test_power(n: int, effect: float, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test with n per side for a standardised difference `effect`."""
    df, shift = 2 * n - 2, effect * np.sqrt(n / 2)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def between_run_spread(tests: pd.DataFrame, metrics: list[str], val: pd.DataFrame | None = None,
                       last: int = 4) -> tuple[dict[str, float], str]:
    """(SD of run means per metric, where it comes from). Pooled over generators with >= 2 runs; else the SD
    of each run's validation score over its `last` evaluations, pooled (a proxy for seed-to-seed spread)."""
    per_run = tests.groupby(["generator", "run"])[metrics].mean()
    several = per_run.groupby(level="generator").filter(lambda g: len(g) > 1)
    if not several.empty:
        pooled = several.groupby(level="generator").var(ddof=1).mean()
        return {m: float(np.sqrt(pooled[m])) for m in metrics}, "between-run spread of the generators with several seeds"
    if val is None or val.empty:
        return {}, ""
    recent = val[val.split == "val"].sort_values("step").groupby("run").tail(last)
    sd = recent.groupby("run")[[m for m in metrics if m in recent]].std(ddof=1).mean()
    return ({m: float(sd[m]) for m in sd.index},
            f"a proxy: the spread of each run's validation scores over its last {last} evaluations")


def arms_compared(tests_by_arm: dict[str, pd.DataFrame], metrics: list[str]) -> pd.DataFrame:
    """Per metric and generator, the first arm against the second (tuned against default, on the same seeds
    and test images): the run-level difference first - second with its intervals and P(first beats
    second) (`run_level`), and Welch's p with Holm over the generators of each metric."""
    arms = [arm for arm, t in tests_by_arm.items() if not t.empty][:2]
    if len(arms) < 2:
        return pd.DataFrame()
    tables = []
    for gen in sorted(set(tests_by_arm[arms[0]].generator) & set(tests_by_arm[arms[1]].generator)):
        pair = pd.concat([tests_by_arm[arm][tests_by_arm[arm].generator == gen].assign(generator=arm) for arm in arms],
                         ignore_index=True)
        table = run_level(pair, metrics, order=arms)
        if not table.empty:
            tables.append(table.assign(generator=gen))
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    table["p_holm"] = table.groupby("metric").p.transform(lambda p: pd.Series(holm(list(p)), index=p.index))
    return table[["metric", "generator", *(c for c in table if c not in ("metric", "generator"))]]
