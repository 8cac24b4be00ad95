"""The settle rule: train seeds in rounds until each comparison is better, equivalent within a margin,
open at a stated cost, or uninformative because no generator can be told from a trivial output.

A comparison is a pair of generators on one metric, with the runs (each run's mean over the test
photos) as the samples. Beside the pairs, every generator is compared with the **control**: the better of
two trivial outputs (a constant gray image, another real test photo) scored on the same test photos
with no training (gan/evaluators/controls.py), stored with the plan. After each round - a look at n
seeds per generator - every comparison still undecided gets an outcome, and keeps it:

- **equivalent within delta**: the (1 - 2 alpha') interval of the difference lies inside +/- delta (two
  one-sided tests at alpha'): whatever the difference is, it is smaller than a margin that matters;
- **better**: otherwise, the two-sided test rejects at alpha';
- **open**: otherwise. Both generators of an open pair train another seed, up to `max_seeds`, where the
  pair ends open with the seeds it would still take (80 % power, as a range over the difference's 95 %
  interval: the observed difference is not the true one).

A verdict between generators counts only on a metric where some generator is settled better than the
control by the same rule (so not "equivalent to the control within the margin", which the rule checks
first); until then the metric's generators keep training, and a metric where every generator ends
equivalent to the control, worse, or open at `max_seeds` reads **uninformative at this budget** for every
pair: "equivalent" there would say only that the generators are all as good as a gray image.

The test is Welch's t with conservative degrees of freedom (min(n_a, n_b) - 1, Hsu / Banerjee): at 3 + 3
runs with one spread several times the other, Welch-Satterthwaite's degrees of freedom overshoot and the
test rejects more often than its level (1.7x at a 5:1 SD ratio); the conservative ones hold it at any
ratio (tests/test_settle.py simulates both). alpha' = alpha / (looks x (pairs + generators)): Bonferroni
over the looks the rule may take and the comparisons of a metric (the pairs, and with a control each
generator against it), so that for each metric the chance of any false "better" or false "equivalent"
over the whole sequence stays at or below alpha, for any dependence between looks.

The plan is frozen when it is written (`freeze`: a hash of each field and a time); a plan whose content
no longer matches its hash is refused in one line naming the fields, on `--resume` and on replay. The
decision depends only on the plan and on the runs' scores, so it is replayed from the runs at every look
and on `--resume`: nothing is decided twice. Standard library, numpy and scipy: no TensorFlow.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as sps

from gan import contract

OUTCOMES = ("better", "equivalent", "open", "uninformative")
CONTROL = "control"  # the b of a generator-against-control row

# Margins: 10 % of the span between a trivial output and the real photos on the study's test photos,
# measured by jobs/margins.py (docs/results.md, "Margins"): the trivial end is the better of a constant gray
# image and another real test photo, the real end a photo scored against itself (for the FCN-score: the real
# photos' own segmentation, by the study's segmenter). Fixed before any run was compared; the FCN spans are
# those of the reproducible judge (`python jobs/train_segmenter.py --data <cityscapes-pix2pix>`: 0.842
# pixel accuracy on the 400 validation photos), which every FCN-score of the study comes from. The default
# is a convention, not a smallest effect that matters: a user who knows the difference that would change
# their choice gives it with --margin (docs/guide.md, "Choosing a margin").
MARGIN_FRACTION = 0.1
REFERENCE_SPAN = {  # metric: (trivial output, real photos): 128 px, the 50 test photos of docs/results/split.json
    "hist_corr": (0.6026, 1.0), "template_match": (0.1075, 1.0), "feature_match": (0.0247, 1.0),
    "ssim": (0.3503, 1.0), "fcn_pixel_acc": (0.5454, 0.8574), "fcn_class_acc": (0.1873, 0.3788),
    "fcn_iou": (0.1147, 0.2987),
}
DEFAULT_MARGINS = {m: round(MARGIN_FRACTION * (real - trivial), 4) for m, (trivial, real) in REFERENCE_SPAN.items()}


@dataclass
class Plan:
    """What the rule is fixed to before its first round (pre-registered, frozen, stored with the sweep)."""

    generators: list[str]
    metrics: list[str]
    margins: dict[str, float]
    lower_is_better: list[str] = field(default_factory=list)
    alpha: float = 0.05
    first: int = 3  # seeds per generator at the first look
    max_seeds: int = 8
    design: str = "fixed"  # the data split: fixed for every run, or "varied" (seed k draws split k)
    first_seed: int = 0  # look n uses seeds first_seed .. first_seed + n - 1 of every generator
    # The control: per metric the better trivial output's mean score on the test photos ({} in a plan from
    # before controls: the rule then cannot tell "equivalent" from "uninformative", and says so); with a
    # varied design per training seed (its split's test photos), as {"<seed>": {metric: score}}.
    control: dict[str, float] = field(default_factory=dict)
    control_by_seed: dict[str, dict[str, float]] = field(default_factory=dict)
    control_name: dict[str, str] = field(default_factory=dict)  # which trivial output it is, per metric
    ceiling: dict[str, float] = field(default_factory=dict)  # the real photos' own score, per metric
    configs: dict[str, str] = field(default_factory=dict)  # generator -> the identity of the runs it counts
    judge: str = ""  # the segmenter whose FCN-scores it counts ("" without FCN metrics)

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
    def has_control(self) -> bool:
        return bool(self.control or self.control_by_seed)

    @property
    def comparisons(self) -> int:
        """Tests per metric and look: the pairs, and with a control each generator against it."""
        return max(1, len(self.pairs)) + (len(self.generators) if self.has_control else 0)

    @property
    def alpha_per_test(self) -> float:
        return self.alpha / (self.looks * self.comparisons)

    def control_at(self, seed: int, metric: str) -> float:
        return float(self.control_by_seed[str(seed)][metric] if self.control_by_seed else self.control[metric])

    def check(self) -> "Plan":
        """ValueError naming the first thing that cannot be a plan."""
        for name in ("first", "max_seeds", "first_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ValueError(f"alpha must be a number, got {self.alpha!r}")
        if self.design not in ("fixed", "varied"):
            raise ValueError(f"design must be fixed or varied, got {self.design!r}")
        if not isinstance(self.generators, list) or len(self.generators) < 2:
            raise ValueError("needs at least two generators to compare")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if self.first_seed < 0:
            raise ValueError(f"first_seed must be a whole number >= 0, got {self.first_seed!r}")
        if not 2 <= self.first <= self.max_seeds:
            raise ValueError(f"the first look needs 2 to max-seeds ({self.max_seeds}) seeds, got {self.first}")
        if not isinstance(self.metrics, list) or not self.metrics:
            raise ValueError("names no metric to settle")
        missing = [m for m in self.metrics if m not in self.margins]
        if missing:
            raise ValueError(f"no margin for {missing[0]} (give --margin {missing[0]}=DELTA)")
        extra = [m for m in self.margins if m not in self.metrics]
        if extra:
            raise ValueError(f"a margin for {extra[0]}, which the plan does not settle (settle it with "
                             f"--settle-metrics, or drop its --margin)")
        bad = [m for m in self.metrics if not (_number(self.margins[m]) and self.margins[m] > 0)]
        if bad:
            raise ValueError(f"the margin of {bad[0]} must be a number > 0, got {self.margins[bad[0]]}")
        if self.has_control:
            table = self.control_by_seed.get(str(self.first_seed), {}) if self.control_by_seed else self.control
            lacking = [m for m in self.metrics if not _number(table.get(m)) or not _number(self.ceiling.get(m))]
            if lacking:
                raise ValueError(f"no control or real-photo score for {lacking[0]}")
            if self.control_by_seed:
                absent = [s for s in self.seeds(self.max_seeds) if str(s) not in self.control_by_seed]
                if absent:
                    raise ValueError(f"no control score for the split of seed {absent[0]}")
            for m in self.metrics:
                span = abs(self.ceiling[m] - table[m])
                if self.margins[m] >= span:
                    raise ValueError(f"the margin of {m} ({self.margins[m]:g}) is not smaller than the span between "
                                     f"the control ({table[m]:.4g}) and the real photos ({self.ceiling[m]:.4g}): every "
                                     "generator would be equivalent to a trivial output; choose the smallest difference "
                                     "that matters to you (docs/guide.md, 'Choosing a margin')")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d}).check()


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))


# -- the frozen plan ---------------------------------------------------------------------------------------

FROZEN = contract.SETTLE_FROZEN  # the plan's own key holding its hash, each field's hash and the time it was written


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def content(plan: dict) -> dict:
    """The plan without its freeze record: what two plans are compared on."""
    return {k: v for k, v in plan.items() if k != FROZEN}


def freeze(plan: dict, at: datetime.datetime | None = None) -> dict:
    """The plan with its freeze record: written once, before the first look; any later edit shows."""
    body = content(plan)
    at = (at or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds")
    return {**body, FROZEN: {"at": at, "sha256": _digest(body), "fields": {k: _digest(v) for k, v in body.items()}}}


def check_frozen(plan: dict) -> str | None:
    """None for an intact frozen plan; a note for a plan from before freezing; ValueError naming the fields
    of a plan changed after it was frozen."""
    record = plan.get(FROZEN)
    if record is None:
        return "the plan carries no freeze record (written before plans were frozen): its content cannot be checked"
    if not isinstance(record, dict) or not isinstance(record.get("fields"), dict):
        raise ValueError("its freeze record is damaged")
    body = content(plan)
    changed = sorted(k for k in set(body) | set(record["fields"]) if _digest(body.get(k)) != record["fields"].get(k))
    if changed or _digest(body) != record.get("sha256"):
        raise ValueError(f"changed after it was frozen at {record.get('at')} ({', '.join(changed) or 'its hash'} "
                         "differ from what was registered); a new plan is a new file or a new --experiment, "
                         "never an edit")
    return None


def load(raw) -> tuple[Plan, str | None]:
    """(the plan, a note or None) from a plan file's JSON or a sweep file's; ValueError when it cannot be one."""
    body = raw.get("settle", raw) if isinstance(raw, dict) else raw
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    note = check_frozen(body)
    return Plan.from_dict(body), note


# -- which runs a plan counts ------------------------------------------------------------------------------

# What does not make another configuration: where a run is and what it is called, its replicate fields, how
# it is measured, and what a resumed run may change without training otherwise (how long it trained does).
def identity_ignores(design: str) -> set[str]:
    from analysis.runs import MEASUREMENT_FIELDS, PLACE_FIELDS
    from gan.contract import RESUMABLE_FIELDS
    ignored = PLACE_FIELDS | MEASUREMENT_FIELDS | (RESUMABLE_FIELDS - {"train.steps"}) | {"train.seed", "model.generator"}
    return ignored | ({"data.split_seed"} if design == "varied" else set())


def config_identity(flat: dict, design: str = "fixed") -> str:
    """A short hash of a run's configuration as the rule counts it (one generator's fields, dotted names)."""
    ignored = identity_ignores(design)
    return _digest({k: v for k, v in flat.items()
                    if k not in ignored and not (k in contract.ADDED_FIELDS and v == contract.ADDED_FIELDS[k])})[:16]


# -- one look ----------------------------------------------------------------------------------------------

def decide(a: np.ndarray, b: np.ndarray, margin: float, alpha: float) -> dict:
    """One look at one comparison: its outcome and the figures behind it (differences are a - b). `low`,
    `high`: the interval of the test the outcome reports (1 - 2 alpha' for equivalence, 1 - alpha' for the
    two-sided test), `level` its confidence."""
    from analysis.stats import welch  # the run-level test, at the rule's levels and conservative df
    eq_low, eq_high, _ = welch(a, b, 1 - 2 * alpha, df="conservative")
    low, high, p = welch(a, b, 1 - alpha, df="conservative")
    if -margin < eq_low and eq_high < margin:
        outcome, low, high, level = "equivalent", eq_low, eq_high, 1 - 2 * alpha
    else:
        outcome, level = ("better" if p < alpha else "open"), 1 - alpha
    return {"outcome": outcome, "diff": float(np.mean(a) - np.mean(b)), "low": low, "high": high, "level": level,
            "p": p}


def against_control(x: np.ndarray, control: np.ndarray, margin: float, lower: bool, alpha: float) -> dict:
    """A generator's runs against the control's scores on the same test photos (a constant: no seeds; with a
    varied split, each seed's own), by the same rule as a pair, on the runs' differences from it: equivalent
    to the control within the margin, better, worse (the control better), or open."""
    diff = np.asarray(x, float) - np.asarray(control, float)
    result = decide(diff, np.zeros_like(diff), margin, alpha)
    if result["outcome"] == "better" and (result["diff"] < 0) != lower:
        result["outcome"] = "worse"
    return result


def probability_of_improvement(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """P(a run of A beats a run of B) (ties half) and an interval that does not collapse at a few runs: the
    Clopper-Pearson interval of that many wins in min(n_a, n_b) head-to-head pairs (the independent pairs
    the runs hold; the n_a x n_b pairs they form share runs). A bootstrap over 3 against 3 separated runs
    gives [1, 1], which reads as certainty."""
    from analysis.stats import probability_of_improvement as pi_of  # Mann-Whitney from ranks, as the report's
    a, b = np.asarray(a, float), np.asarray(b, float)
    pi = float(pi_of(a, b))
    n = min(len(a), len(b))
    wins, tail = pi * n, (1 - confidence) / 2
    low = float(sps.beta.ppf(tail, wins, n - wins + 1)) if wins > 0 else 0.0
    high = float(sps.beta.ppf(1 - tail, wins + 1, n - wins)) if wins < n else 1.0
    return pi, low, high


def seeds_to_settle(diff: float, sd: float, margin: float, alpha: float, power: float = 0.8, now: int = 0) -> int:
    """Seeds per generator at which a comparison with this difference and run spread would most likely (at
    `power`) be decided: as better (two-sided t-test at alpha, noncentral t) or as equivalent (TOST at
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


def seeds_to_settle_range(a: np.ndarray, b: np.ndarray, margin: float, alpha: float, now: int = 0,
                          points: int = 41) -> tuple[int, int, int]:
    """(seeds at the observed difference, fewest and most over the difference's 95 % interval): the
    observed difference is one draw, and the seeds a gap takes grow with the inverse square of the gap
    (0 where it could not be settled at any count)."""
    from analysis.stats import welch
    sd = float(np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2))
    diff = float(np.mean(a) - np.mean(b))
    low, high, _ = welch(a, b, 0.95, df="conservative")
    at = seeds_to_settle(diff, sd, margin, alpha, now=now)
    if not (np.isfinite(low) and np.isfinite(high)):
        return at, at, at
    counts = [seeds_to_settle(d, sd, margin, alpha, now=now) for d in np.linspace(low, high, points)]
    counts = [c for c in counts if c > 0]
    return at, min(counts, default=0), max(counts, default=0)


def replay(scores: dict[str, dict[int, dict[str, float]]], plan: Plan,
           improvement: bool = True) -> tuple[list[dict], dict[str, int]]:
    """The rule replayed from the runs: (one row per pair and metric, then with a control one row per
    generator and metric against it; {generator: seeds it needs next}).

    `scores[generator][seed][metric]`: a finished run's test mean. Look n uses seeds `plan.seeds(n)` of the
    generators it compares (exactly n each, so a run trained for another purpose never changes a look). A
    look waits until every generator of an undecided comparison has its n seeds. `next` is empty when every
    comparison is decided or at the maximum. `improvement`: also P(a beats b) with its interval and the
    seeds an open pair would take (the simulation leaves both out)."""
    alpha = plan.alpha_per_test
    decided: dict[tuple, dict] = {}
    last_look: dict[tuple, int] = {}
    wanted: dict[str, int] = {}
    informative: dict[str, int] = {}  # metric -> the look at which some generator beat the control

    def runs(g, m, n):
        return np.array([scores[g][s][m] for s in plan.seeds(n)], float)

    def control(m, n):
        return np.array([plan.control_at(s, m) for s in plan.seeds(n)], float)

    for n in range(plan.first, plan.max_seeds + 1):
        open_now = [(a, b, m) for a, b in plan.pairs for m in plan.metrics if (a, b, m) not in decided]
        if plan.has_control:
            open_now += [(g, CONTROL, m) for g in plan.generators for m in plan.metrics
                         if m not in informative and (g, CONTROL, m) not in decided]
        if not open_now:
            break
        gens = sorted({g for a, b, _ in open_now for g in (a, b) if g != CONTROL})
        missing = {g: n for g in gens if any(s not in scores.get(g, {}) for s in plan.seeds(n))}
        if missing:
            wanted = missing
            break
        for a, b, m in open_now:
            if b == CONTROL:
                result = against_control(runs(a, m, n), control(m, n), plan.margins[m], m in plan.lower_is_better, alpha)
                if result["outcome"] == "better":
                    informative.setdefault(m, n)
            else:
                result = decide(runs(a, m, n), runs(b, m, n), plan.margins[m], alpha)
            last_look[(a, b, m)] = n
            if result["outcome"] != "open" or n == plan.max_seeds:
                decided[(a, b, m)] = {**result, "seeds": n}
    # A metric is settled as uninformative once its control comparisons have all reached the maximum.
    hopeless = {m for m in plan.metrics if plan.has_control and m not in informative
                and all((g, CONTROL, m) in decided for g in plan.generators)}
    rows = []
    comparisons = [(a, b) for a, b in plan.pairs] + ([(g, CONTROL) for g in plan.generators] if plan.has_control else [])
    for a, b in comparisons:
        for m in plan.metrics:
            n = decided.get((a, b, m), {}).get("seeds") or last_look.get((a, b, m))
            if n is None:  # not looked at yet: the first round is still training
                verdict = "open (first look pending)" if (b != CONTROL or m not in informative) else "not needed"
                rows.append({"metric": m, "a": a, "b": b, "outcome": "open", "verdict": verdict, "seeds": 0,
                             "margin": plan.margins[m], "final": b == CONTROL and m in informative})
                continue
            xa = runs(a, m, n)
            xb = control(m, n) if b == CONTROL else runs(b, m, n)
            result = decided.get((a, b, m))
            if result is None:
                result = {**(against_control(xa, xb, plan.margins[m], m in plan.lower_is_better, alpha) if b == CONTROL
                             else decide(xa, xb, plan.margins[m], alpha)), "seeds": n}
            outcome, final = result["outcome"], (a, b, m) in decided
            if b == CONTROL:
                words = _control_words(result, a, plan, m, final)
                if not final and m in informative:
                    final, words = True, "not needed: another generator beats the control"
                pi, pi_low, pi_high = (np.nan,) * 3
            else:
                lower = m in plan.lower_is_better
                needed = (seeds_to_settle_range(xa, xb, plan.margins[m], alpha, now=n)
                          if outcome == "open" and final and improvement else (1, 1, 1))
                words = _words(result, a, b, lower, plan.margins[m], final, needed)
                if plan.has_control and m not in informative:  # no generator told from a trivial output (yet)
                    if m in hopeless:
                        outcome, final = "uninformative", True
                        words = (f"uninformative at this budget: no generator beats the control "
                                 f"({plan.control_name.get(m, 'a trivial output')}) by more than the margin")
                    else:
                        outcome, final = "open", False
                        words = "open (no generator beats the control yet)"
                pi, pi_low, pi_high = probability_of_improvement(xa, xb) if improvement else (np.nan,) * 3
            rows.append({"metric": m, "a": a, "b": b, "outcome": outcome, "verdict": words,
                         "diff": result["diff"], "low": result["low"], "high": result["high"],
                         "level": result["level"], "p": result["p"], "p_a_beats_b": pi, "pi_low": pi_low,
                         "pi_high": pi_high, "pairs": len(xa) * len(xb) if b != CONTROL else 0, "seeds": n,
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


def _words(result: dict, a: str, b: str, lower: bool, margin: float, final: bool, needed: tuple[int, int, int]) -> str:
    if result["outcome"] == "equivalent":
        return f"equivalent within {margin:g}"
    if result["outcome"] == "better":
        first_wins = (result["diff"] > 0) != lower
        return f"{a if first_wins else b} better"
    if not final:
        return "open (more seeds)"
    at, fewest, most = needed
    if not at:
        return "open: no spread to plan from"
    spread = f" ({fewest}-{most} over the difference's 95 % interval)" if (fewest, most) != (at, at) else ""
    return f"open: ~{at} seeds per generator would settle it{spread}"


def _control_words(result: dict, g: str, plan: Plan, m: str, final: bool) -> str:
    name = plan.control_name.get(m, "the control")
    if result["outcome"] == "better":
        return f"{g} better than {name}"
    if result["outcome"] == "worse":
        return f"{name} better than {g}"
    if result["outcome"] == "equivalent":
        return f"equivalent to {name} within {plan.margins[m]:g}"
    if not final:
        return "open (more seeds)"
    return f"not told from {name} at {result['seeds']} seeds"


def simulate(plan: Plan, means: dict[str, float], sd: float, studies: int = 2000, seed: int = 0) -> dict:
    """Run the rule on `studies` simulated studies whose run means are Normal(means[generator], sd) (`sd` a
    number, or {generator: sd} for unequal spreads):
    per pair the share of studies ending better / equivalent / open, and the seeds spent per generator
    (mean), against `plan.max_seeds` for a fixed design."""
    rng = np.random.default_rng(seed)
    counts = {pair: dict.fromkeys(OUTCOMES, 0) for pair in plan.pairs}
    better_wrong_way = {pair: 0 for pair in plan.pairs}
    spent = []
    metric = plan.metrics[0]
    for _ in range(studies):
        draws = {g: rng.normal(means[g], sd[g] if isinstance(sd, dict) else sd, plan.max_seeds) for g in plan.generators}
        scores = {g: {s: {metric: float(v)} for s, v in zip(plan.seeds(plan.max_seeds), draws[g])} for g in plan.generators}
        rows, _ = replay(scores, plan, improvement=False)
        used = {g: plan.first for g in plan.generators}
        for row in rows:
            pair = (row["a"], row["b"])
            for g in pair:
                used[g] = max(used.get(g, 0), row["seeds"])
            if row["b"] == CONTROL:
                continue
            counts[pair][row["outcome"]] += 1
            if row["outcome"] == "better" and (row["diff"] > 0) != (means[row["a"]] > means[row["b"]]):
                better_wrong_way[pair] += 1
        spent.append(np.mean([used[g] for g in plan.generators]))
    return {"rates": {f"{a}-{b}": {k: v / studies for k, v in c.items()} for (a, b), c in counts.items()},
            "wrong_way": {f"{a}-{b}": v / studies for (a, b), v in better_wrong_way.items()},
            "seeds_mean": float(np.mean(spent)), "seeds_fixed": plan.max_seeds}


def counted(runs, plan: Plan, judge: str | None = None) -> tuple[list, list[tuple[str, str]]]:
    """(the runs the plan counts, [(run, why it was left out)]): finished runs of the plan's generators, of
    its configuration (when the plan records it), of its seeds, scored by its judge. Two counted runs of one
    generator and seed are refused (ValueError): which one is the seed is not the replay's to choose."""
    judge = judge if judge is not None else plan.judge
    fcn = any(m.startswith("fcn_") for m in plan.metrics)
    seeds = set(plan.seeds(plan.max_seeds))
    kept, left, by_seed = [], [], {}
    for run in runs:
        if run.generator not in plan.generators:
            left.append((str(run.path), f"{run.generator} is not one of the plan's generators"))
        elif run.state != "finished" or run.test_metrics.empty:
            left.append((str(run.path), f"{run.state}, no test scores"))
        elif run.seed not in seeds:
            left.append((str(run.path), f"seed {run.seed} is outside the plan's seeds "
                                        f"{plan.first_seed}-{plan.first_seed + plan.max_seeds - 1}"))
        elif plan.configs and config_identity(run.flat_config(), plan.design) != plan.configs.get(run.generator):
            differ = _config_difference(run, runs, plan)
            left.append((str(run.path), f"another configuration than the plan's ({differ})"))
        elif fcn and judge and run.judge != judge:
            left.append((str(run.path), f"scored by another judge ({run.judge or 'none'})"))
        elif plan.design == "varied" and run.flat_config().get("data.split_seed") != run.seed:
            left.append((str(run.path), "its split is not its seed's (the plan varies the split with the seed)"))
        else:
            twin = by_seed.setdefault((run.generator, run.seed), run)
            if twin is not run:
                raise ValueError(f"two runs of {run.generator} seed {run.seed}: {twin.path} and {run.path}; the "
                                 "replay does not choose between them: move one out of the folders it reads")
            kept.append(run)
    return kept, left


def _config_difference(run, runs, plan: Plan) -> str:
    """The first field in which a run differs from a counted run of its generator, else the identities."""
    ignored = identity_ignores(plan.design)
    mine = run.flat_config()
    for other in runs:
        if other.generator == run.generator and config_identity(other.flat_config(), plan.design) == plan.configs.get(run.generator):
            theirs = other.flat_config()
            for k in sorted(set(mine) | set(theirs)):
                if k not in ignored and json.dumps(mine.get(k)) != json.dumps(theirs.get(k)):
                    return f"{k}: {mine.get(k)!r} there, {theirs.get(k)!r} in the plan's runs"
    return f"identity {config_identity(mine, plan.design)}, the plan's {plan.configs.get(run.generator)}"


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
    import sys
    from pathlib import Path

    import pandas as pd

    from analysis.runs import find_runs
    from analysis.tables import to_markdown
    parser = argparse.ArgumentParser(description="Replay a stored settle plan (a sweep's _tune_args.json 'settle', "
                                     "or the plan alone) over the finished runs under ROOT...: per pair and "
                                     "metric better / equivalent / open / uninformative, at the look the runs allow. "
                                     "Only runs of the plan's configuration, seeds and judge count; the others are "
                                     "listed with the reason.")
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--plan", required=True, help="the plan as JSON (plan.json, or a sweep's _tune_args.json)")
    parser.add_argument("--metrics", default=None, help="only these of the plan's metrics (comma list; the looks, "
                        "alpha and comparisons per look stay the plan's)")
    parser.add_argument("--judge", default=None, metavar="SEGMENTER_ID",
                        help="only the runs whose test this segmenter scored (its id, as jobs/evaluate.py --rejudge "
                        "prints it; default: the plan's judge, if it names one)")
    parser.add_argument("--out", default=None, help="also write <out>.csv and <out>.md")
    args = parser.parse_args(argv)
    try:
        raw = json.loads(Path(args.plan).read_text())
        plan, note = load(raw)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        print(f"error: --plan {args.plan}: not a settle plan ({e})", file=sys.stderr)
        return 2
    if args.metrics:
        chosen = [m for m in args.metrics.split(",") if m]
        unknown = [m for m in chosen if m not in plan.metrics]
        if unknown:
            print(f"error: --metrics: {', '.join(unknown)} not in the plan ({', '.join(plan.metrics)})", file=sys.stderr)
            return 2
        # The Bonferroni family is per metric, so a subset keeps the plan's alpha'.
        plan = Plan.from_dict({**plan.to_dict(), "metrics": chosen, "margins": {m: plan.margins[m] for m in chosen}})
    try:
        runs = find_runs(*args.roots)
        notes = runs.notes()
        if args.judge is not None and any(m.startswith("fcn_") for m in plan.metrics):
            judges = sorted({r.judge for r in runs if r.judge}) or ["none"]
            if args.judge not in judges:
                raise ValueError(f"--judge {args.judge}: no run there was scored by it (judges there: {', '.join(judges)})")
        kept, left = counted(list(runs), plan, args.judge)
        scores = scores_of(kept, plan.metrics)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if note:
        print(f"note: {note}", file=sys.stderr)
    if not plan.has_control:
        print("note: the plan has no control: an 'equivalent' here cannot be told from 'every generator scores like "
              "a trivial output'", file=sys.stderr)
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    for path, why in left:
        print(f"left out: {path}: {why}", file=sys.stderr)
    for path, why in getattr(runs, "skipped", []) or []:
        print(f"unreadable: {path}: {why}", file=sys.stderr)
    if not kept:
        print(f"note: no run under {', '.join(args.roots)} counts for this plan", file=sys.stderr)
    rows, wanted = replay(scores, plan)
    table = pd.DataFrame(rows).drop(columns="final", errors="ignore")
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
