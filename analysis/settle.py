"""The settle rule: train seeds in rounds until each comparison is better, equivalent within a margin, or
open at a stated cost.

A comparison is a pair of generators on one metric, with the runs (each run's mean over the test
photos) as the samples. After each round - a look at n seeds per generator - every comparison still
undecided gets one of three outcomes, and keeps it:

- **equivalent within delta**: the (1 - 2 alpha') Welch interval of the difference lies inside
  +/- delta (two one-sided tests at alpha'): whatever the difference is, it is smaller than a margin
  that matters;
- **better**: otherwise, Welch's two-sided test rejects at alpha';
- **open**: otherwise. Both generators of an open pair train another seed, up to `max_seeds`, where
  the pair ends open with the seeds it would still take (80 % power, from the spread seen).

alpha' = alpha / (looks x pairs): Bonferroni over the looks the rule may take and over the pairs of a
metric, so that for each metric the chance of any false "better" or false "equivalent" over the whole
sequence stays at or below alpha. Bonferroni rather than a group-sequential boundary (Pocock,
O'Brien-Fleming) because it holds for any dependence between looks and for t statistics on 3 to 8
runs, where boundaries derived for a normal statistic with known variance are approximate; its cost is
a few more seeds for a gap close to the threshold (tests/test_settle.py measures both).

The decision depends only on the plan (stored with the sweep before its first round) and on the runs'
scores, so it is replayed from the runs at every look and on `--resume`: nothing is decided twice.
Standard library, numpy and scipy: no TensorFlow.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as sps

OUTCOMES = ("better", "equivalent", "open")

# Margins: 10 % of the span between a trivial output and the real photos on the study's test photos,
# measured by jobs/margins.py (docs/results.md, "Margins"): the trivial end is the better of a constant gray
# image and another real test photo, the real end a photo scored against itself (for the FCN-score: the real
# photos' own segmentation, by the study's segmenter). Fixed before any run was compared; the FCN spans are
# those of the reproducible judge (`python jobs/train_segmenter.py --data <cityscapes-pix2pix>`: 0.842
# pixel accuracy on the 400 validation photos), which every FCN-score of the study comes from.
MARGIN_FRACTION = 0.1
REFERENCE_SPAN = {  # metric: (trivial output, real photos): 128 px, the 50 test photos of docs/results/split.json
    "hist_corr": (0.6026, 1.0), "template_match": (0.1075, 1.0), "feature_match": (0.0247, 1.0),
    "ssim": (0.3503, 1.0), "fcn_pixel_acc": (0.5454, 0.8574), "fcn_class_acc": (0.1873, 0.3788),
    "fcn_iou": (0.1147, 0.2987),
}
DEFAULT_MARGINS = {m: round(MARGIN_FRACTION * (real - trivial), 4) for m, (trivial, real) in REFERENCE_SPAN.items()}


@dataclass
class Plan:
    """What the rule is fixed to before its first round (pre-registered, stored with the sweep)."""

    generators: list[str]
    metrics: list[str]
    margins: dict[str, float]
    lower_is_better: list[str] = field(default_factory=list)
    alpha: float = 0.05
    first: int = 3  # seeds per generator at the first look
    max_seeds: int = 8
    design: str = "fixed"  # the data split: fixed for every run, or "varied" (seed k draws split k)
    first_seed: int = 0  # look n uses seeds first_seed .. first_seed + n - 1 of every generator

    def seeds(self, n: int) -> range:
        """The training seeds of look n (n per generator): fixed before any run, so no score picks them."""
        return range(self.first_seed, self.first_seed + n)

    @property
    def looks(self) -> int:
        return self.max_seeds - self.first + 1

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(itertools.combinations(self.generators, 2))

    @property
    def alpha_per_test(self) -> float:
        return self.alpha / (self.looks * max(1, len(self.pairs)))

    def check(self) -> "Plan":
        """ValueError naming the first thing that cannot be a plan."""
        if self.design not in ("fixed", "varied"):
            raise ValueError(f"design must be fixed or varied, got {self.design!r}")
        if len(self.generators) < 2:
            raise ValueError("needs at least two generators to compare")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if isinstance(self.first_seed, bool) or not isinstance(self.first_seed, int) or self.first_seed < 0:
            raise ValueError(f"first_seed must be a whole number >= 0, got {self.first_seed!r}")
        if not 2 <= self.first <= self.max_seeds:
            raise ValueError(f"the first look needs 2 to max-seeds ({self.max_seeds}) seeds, got {self.first}")
        missing = [m for m in self.metrics if m not in self.margins]
        if missing:
            raise ValueError(f"no margin for {missing[0]} (give --margin {missing[0]}=DELTA)")
        bad = [m for m in self.metrics if not (np.isfinite(self.margins[m]) and self.margins[m] > 0)]
        if bad:
            raise ValueError(f"the margin of {bad[0]} must be a number > 0, got {self.margins[bad[0]]}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d}).check()


def decide(a: np.ndarray, b: np.ndarray, margin: float, alpha: float) -> dict:
    """One look at one comparison: its outcome and the figures behind it (differences are a - b)."""
    from analysis.stats import welch  # the run-level test the report uses, at the rule's levels
    low, high, p = welch(a, b, 1 - 2 * alpha)
    if -margin < low and high < margin:
        outcome = "equivalent"
    elif p < alpha:
        outcome = "better"
    else:
        outcome = "open"
    return {"outcome": outcome, "diff": float(np.mean(a) - np.mean(b)), "low": low, "high": high, "p": p}


def probability_of_improvement(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """P(a run of A beats a run of B) (ties half) and its 95 % bootstrap interval over runs."""
    from analysis.stats import probability_of_improvement as pi_of  # Mann-Whitney from ranks, as the report's
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    boot = pi_of(a[rng.integers(0, len(a), (resamples, len(a)))], b[rng.integers(0, len(b), (resamples, len(b)))])
    return float(pi_of(a, b)), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def seeds_to_settle(diff: float, sd: float, margin: float, alpha: float, power: float = 0.8, now: int = 0) -> int:
    """Seeds per generator at which a comparison with this difference and run spread would most likely (at
    `power`) be decided: as better (two-sided Welch/t-test at alpha, noncentral t) or as equivalent (TOST at
    alpha, normal approximation), whichever comes first; at least one more than `now`. 0 when neither can
    happen (no spread, or a difference of exactly the margin)."""
    from analysis.stats import seeds_needed
    if not (np.isfinite(sd) and sd > 0):
        return 0
    candidates = []
    if abs(diff) > 0:
        candidates.append(seeds_needed(abs(diff), sd, alpha=alpha, power=power))
    if abs(diff) < margin:
        z = sps.norm.ppf(1 - alpha) + sps.norm.ppf(power)
        candidates.append(int(np.ceil(2 * z ** 2 * sd ** 2 / (margin - abs(diff)) ** 2)))
    return max(now + 1, 2, min(candidates)) if candidates else 0


def replay(scores: dict[str, dict[int, dict[str, float]]], plan: Plan,
           improvement: bool = True) -> tuple[list[dict], dict[str, int]]:
    """The rule replayed from the runs: (one row per pair and metric, {generator: seeds it needs next}).

    `scores[generator][seed][metric]`: a finished run's test mean. Look n uses seeds `plan.seeds(n)` of both
    generators of a pair (exactly n each, so a run trained for another purpose never changes a look).
    A look waits until every generator of an undecided pair has its n seeds. `next` is empty when
    every comparison is decided or at the maximum. `improvement`: also P(a beats b) with its bootstrap
    interval (the simulation leaves it out)."""
    alpha = plan.alpha_per_test
    decided: dict[tuple, dict] = {}
    last_look: dict[tuple, int] = {}
    wanted: dict[str, int] = {}
    for n in range(plan.first, plan.max_seeds + 1):
        open_now = [(a, b, m) for a, b in plan.pairs for m in plan.metrics if (a, b, m) not in decided]
        if not open_now:
            break
        gens = sorted({g for a, b, _ in open_now for g in (a, b)})
        missing = {g: n for g in gens if any(s not in scores.get(g, {}) for s in plan.seeds(n))}
        if missing:
            wanted = missing
            break
        for a, b, m in open_now:
            xa = np.array([scores[a][s][m] for s in plan.seeds(n)], float)
            xb = np.array([scores[b][s][m] for s in plan.seeds(n)], float)
            result = decide(xa, xb, plan.margins[m], alpha)
            last_look[(a, b, m)] = n
            if result["outcome"] != "open" or n == plan.max_seeds:
                decided[(a, b, m)] = {**result, "seeds": n}
    rows = []
    for a, b in plan.pairs:
        for m in plan.metrics:
            n = decided.get((a, b, m), {}).get("seeds") or last_look.get((a, b, m))
            if n is None:  # not looked at yet: the first round is still training
                rows.append({"metric": m, "a": a, "b": b, "outcome": "open", "verdict": "open (first look pending)",
                             "seeds": 0, "margin": plan.margins[m]})
                continue
            xa = np.array([scores[a][s][m] for s in plan.seeds(n)], float)
            xb = np.array([scores[b][s][m] for s in plan.seeds(n)], float)
            result = decided.get((a, b, m)) or {**decide(xa, xb, plan.margins[m], alpha), "seeds": n}
            pi, pi_low, pi_high = probability_of_improvement(xa, xb) if improvement else (np.nan,) * 3
            final = (a, b, m) in decided
            sd = float(np.sqrt((xa.var(ddof=1) + xb.var(ddof=1)) / 2))
            rows.append({"metric": m, "a": a, "b": b, "outcome": result["outcome"],
                         "verdict": _words(result, a, b, m in plan.lower_is_better, plan.margins[m], final,
                                           seeds_to_settle(result["diff"], sd, plan.margins[m], alpha, now=n)),
                         "diff": result["diff"], "low": result["low"], "high": result["high"], "p": result["p"],
                         "p_a_beats_b": pi, "pi_low": pi_low, "pi_high": pi_high, "seeds": n,
                         "margin": plan.margins[m], "final": final})
    return rows, wanted if not all(r.get("final") for r in rows) else {}


def next_runs(wanted: dict[str, int], scores: dict[str, dict[int, dict]], plan: Plan) -> str:
    """The runs the next look waits for, by generator and seed (the seeds it already has are not named)."""
    if not wanted:
        return "nothing: every comparison is decided"
    n = max(wanted.values())
    todo = {g: [k for k in plan.seeds(m) if k not in scores.get(g, {})] for g, m in sorted(wanted.items())}
    return (f"the look at {n} seeds needs " +
            "; ".join(f"{g} seed{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))}" for g, ks in todo.items() if ks))


def _words(result: dict, a: str, b: str, lower: bool, margin: float, final: bool, needed: int) -> str:
    if result["outcome"] == "equivalent":
        return f"equivalent within {margin:g}"
    if result["outcome"] == "better":
        first_wins = (result["diff"] > 0) != lower
        return f"{a if first_wins else b} better"
    if not final:
        return "open (more seeds)"
    return f"open: ~{needed} seeds per generator would settle it" if needed else "open: no spread to plan from"


def simulate(plan: Plan, means: dict[str, float], sd: float, studies: int = 2000, seed: int = 0) -> dict:
    """Run the rule on `studies` simulated studies whose run means are Normal(means[generator], sd):
    per pair the share of studies ending better / equivalent / open, and the seeds spent per generator
    (mean), against `plan.max_seeds` for a fixed design."""
    rng = np.random.default_rng(seed)
    counts = {pair: dict.fromkeys(OUTCOMES, 0) for pair in plan.pairs}
    better_wrong_way = {pair: 0 for pair in plan.pairs}
    spent = []
    metric = plan.metrics[0]
    for _ in range(studies):
        draws = {g: rng.normal(means[g], sd, plan.max_seeds) for g in plan.generators}
        scores = {g: {s: {metric: float(v)} for s, v in zip(plan.seeds(plan.max_seeds), draws[g])} for g in plan.generators}
        rows, _ = replay(scores, plan, improvement=False)
        used = {g: plan.first for g in plan.generators}
        for row in rows:
            pair = (row["a"], row["b"])
            counts[pair][row["outcome"]] += 1
            if row["outcome"] == "better" and (row["diff"] > 0) != (means[row["a"]] > means[row["b"]]):
                better_wrong_way[pair] += 1
            for g in pair:
                used[g] = max(used[g], row["seeds"])
        spent.append(np.mean(list(used.values())))
    return {"rates": {f"{a}-{b}": {k: v / studies for k, v in c.items()} for (a, b), c in counts.items()},
            "wrong_way": {f"{a}-{b}": v / studies for (a, b), v in better_wrong_way.items()},
            "seeds_mean": float(np.mean(spent)), "seeds_fixed": plan.max_seeds}


def scores_of(runs, metrics: list[str]) -> dict[str, dict[int, dict[str, float]]]:
    """{generator: {training seed: {metric: the run's test mean}}} of finished runs (analysis.runs)."""
    from analysis.runs import test_frame
    tests = test_frame(runs)
    if tests.empty:
        return {}
    missing = [m for m in metrics if m not in tests]
    if missing:
        raise ValueError(f"the runs have no {', '.join(missing)} column")
    judges = {r.judge for r in runs if not r.test_metrics.empty and r.judge}
    if any(m.startswith("fcn_") for m in metrics) and len(judges) > 1:
        raise ValueError(f"the runs' FCN-scores come from {len(judges)} different segmenters ({', '.join(sorted(judges))}); "
                         "the rule compares one judge's scores: re-score the others (jobs/evaluate.py RUN --rejudge "
                         "SEGMENTER) or replay one judge's runs (--judge ID)")
    per_run = tests.groupby(["generator", "run", "seed"])[metrics].mean().reset_index()
    return {g: {int(r.seed): {m: float(r[m]) for m in metrics} for _, r in group.iterrows()}
            for g, group in per_run.groupby("generator")}


def main(argv: list[str] | None = None) -> int:
    """python -m analysis.settle --plan PLAN.json ROOT...: the rule replayed over finished runs, as a table."""
    import argparse
    import json
    import sys
    from pathlib import Path

    import pandas as pd

    from analysis.runs import find_runs
    from analysis.tables import to_markdown
    parser = argparse.ArgumentParser(description="Replay a stored settle plan (a sweep's _tune_args.json 'settle', "
                                     "or the plan alone) over the finished runs under ROOT...: per pair and "
                                     "metric better / equivalent / open, at the look the runs allow.")
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--plan", required=True, help="the plan as JSON (plan.json, or a sweep's _tune_args.json)")
    parser.add_argument("--metrics", default=None, help="only these of the plan's metrics (comma list; the looks "
                        "and alpha stay the plan's)")
    parser.add_argument("--judge", default=None, metavar="SEGMENTER_ID",
                        help="only the runs whose test this segmenter scored (its id, as jobs/evaluate.py --rejudge "
                        "prints it): one judge's runs out of folders that hold several")
    parser.add_argument("--out", default=None, help="also write <out>.csv and <out>.md")
    args = parser.parse_args(argv)
    try:
        raw = json.loads(Path(args.plan).read_text())
        plan = Plan.from_dict(raw.get("settle", raw) if isinstance(raw, dict) else raw)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        print(f"error: --plan {args.plan}: not a settle plan ({e})", file=sys.stderr)
        return 2
    if args.metrics:
        chosen = [m for m in args.metrics.split(",") if m]
        unknown = [m for m in chosen if m not in plan.metrics]
        if unknown:
            print(f"error: --metrics: {', '.join(unknown)} not in the plan ({', '.join(plan.metrics)})", file=sys.stderr)
            return 2
        plan = Plan.from_dict({**plan.to_dict(), "metrics": chosen,
                               "margins": {m: plan.margins[m] for m in chosen}})
    try:
        runs = find_runs(*args.roots)
        notes = runs.notes()
        if args.judge is not None:
            judged = [r for r in runs if r.judge == args.judge]
            if not judged:
                judges = sorted({r.judge for r in runs if r.judge}) or ["none"]
                raise ValueError(f"--judge {args.judge}: no run there was scored by it (judges there: {', '.join(judges)})")
            runs = judged
        scores = scores_of(runs, plan.metrics)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    rows, wanted = replay(scores, plan)
    table = pd.DataFrame(rows)
    level = f"{100 * (1 - 2 * plan.alpha_per_test):.1f} %"
    table = table.rename(columns={"low": f"low ({level})", "high": f"high ({level})"}).drop(columns="final", errors="ignore")
    text = to_markdown(table)
    print(text)
    print(f"\nnext: {next_runs(wanted, scores, plan)}")
    if args.out:
        table.to_csv(f"{args.out}.csv", index=False)
        Path(f"{args.out}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
