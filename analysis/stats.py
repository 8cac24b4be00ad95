"""Statistics beyond the study: paired tests between generators, bootstrap CIs, seed spread.

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
from scipy import stats

from analysis.runs import METRICS


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def paired_tests(tests: pd.DataFrame, metrics: list[str] = METRICS) -> pd.DataFrame:
    """One row per (metric, generator a, generator b): images, median difference a-b, W, p, Holm p."""
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


def bootstrap_ci(tests: pd.DataFrame, metrics: list[str] = METRICS, confidence: float = 0.95,
                 resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per generator and metric: mean and its bootstrap confidence interval over images."""
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


def seed_spread(tests: pd.DataFrame, metrics: list[str] = METRICS) -> pd.DataFrame:
    """Per generator: seeds, and mean / std across seeds of each run's mean test metric."""
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
    """Per metric: the best generator by test mean (lowest for LOWER_IS_BETTER), whom it beats
    significantly (paired Wilcoxon, Holm-corrected p < alpha) and whom not; `significant` is True when
    it beats every other generator."""
    from analysis.runs import LOWER_IS_BETTER
    rows = []
    for metric in metrics:
        if metric not in tests or tests[metric].isna().all():
            continue
        means = tests.groupby("generator")[metric].mean().dropna()
        if len(means) < 2:
            continue
        best = means.idxmin() if metric in LOWER_IS_BETTER else means.idxmax()
        beats, ties = [], []
        for other in sorted(set(means.index) - {best}):
            row = paired[(paired.metric == metric) & (((paired.a == best) & (paired.b == other))
                                                      | ((paired.a == other) & (paired.b == best)))]
            significant = len(row) and row.p_holm.iloc[0] < alpha
            (beats if significant else ties).append(
                f"{other} (p={row.p_holm.iloc[0]:.2g})" if len(row) else other)
        rows.append({"metric": metric, "best": best, "mean": float(means[best]),
                     "beats (Holm p < %.2g)" % alpha: ", ".join(beats) or "-",
                     "not significantly better than": ", ".join(ties) or "-", "significant": not ties})
    return pd.DataFrame(rows)
