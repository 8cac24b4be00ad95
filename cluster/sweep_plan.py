"""The sweep plan: what one launch trains, built once from the command's flags with every check in one place,
and the one list of trials that Ray Tune, submitit and the sbatch array all run.

    plan = SweepPlan.from_flags(args, extra, launcher="tune", settle=settling.settle_plan)
    plan.trials()   # [{"model.generator": "unet", "optim.lr_g": 0.00021, "train.seed": 0}, ...]

A trial is a set of dotted values; its run directory is `<out>/<experiment>/<run_name(values)>`
(cluster/plan.py). `trials()` is every generator x every grid value of the space (named sweeps, `--space`,
`--grid`, seeds, splits) x every configuration drawn from its random part, each given only its
generator's own knobs: cluster/sweep.py hands it to Tune as one grid, cluster/submitit_jobs.py submits it
as one array, `python -m cluster.plan task K` gives the sbatch array's task K. The settle rule trains in
rounds instead (its `settle` plan, frozen; cluster/sweep.py `settle_loop`).

The plan is stored with its experiment (`to_dict` -> `_tune_args.json`) before the first trial; `--resume`
reruns exactly it, and a different plan for the same experiment is refused (`refuse_a_different`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cluster import spaces
from cluster.spaces import check_count
from gan import contract
from gan.cli import generator_list, overrides_from_flags, refuse_other_generators_settings
from gan.config import Config, for_generator, legacy_names, make_config
from gan.errors import UserError
from gan.files import read_json

LAUNCHERS = ("tune", "submitit")
COMMANDS = {"tune": "jobs/tune.py", "submitit": "jobs/submit.py"}


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """What to train, spelled the same in every launcher (each adds how and where it runs)."""
    g = parser.add_argument_group("what the sweep trains (cluster/sweep_plan.py)")
    g.add_argument("--sweep", default="", help="named spaces to add: hparams, aug (comma list)")
    g.add_argument("--space", default=None, help="JSON file of extra dotted-name samplers")
    g.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="also sweep this dotted field over these values (repeatable)")
    g.add_argument("--samples", type=int, default=1, help="configurations drawn from the random part of the space; "
                   "every generator trains on each")
    g.add_argument("--seeds", type=int, default=1, help="training seeds per configuration (train.seed 0..N-1, the "
                   "split fixed by data.split_seed); run names end in -seed<k>")
    g.add_argument("--splits", type=int, default=1, help="data splits per configuration, crossed with --seeds "
                   "(data.split_seed 0..N-1: run k of a split draws its own 400/50/50 from the archive); the report "
                   "then splits the between-run variance into seed and split; run names hold -split<k>")
    g.add_argument("--resume", action="store_true", help="continue the --experiment's sweep as it was stored")
    g.add_argument("--report", default=None, metavar="DIR",
                   help="at the end, write the comparison report (tables, figures, HTML) here")
    g.add_argument("--disk-limit", type=float, default=None, metavar="GB",
                   help="refuse a sweep whose checkpoints could pass this many GB (default: the free space where "
                   "the runs go); the estimate is printed before every sweep")
    add_settle_flags(parser)


def add_settle_flags(parser: argparse.ArgumentParser) -> None:
    """The settle rule's flags (its plan: jobs/settling.py; its rule: analysis/settle.py)."""
    g = parser.add_argument_group("settle: seeds in rounds until each comparison is decided (analysis/settle.py)")
    g.add_argument("--settle", action="store_true",
                   help="train seeds in rounds; after each, every pair of generators on every --settle-metrics is "
                   "better, equivalent within its margin, or open (open pairs get another seed, up to --max-seeds)")
    g.add_argument("--settle-metrics", default=None, metavar="M,M",
                   help="test metrics to settle (default: fcn_pixel_acc with --eval.segmenter, else the study's four)")
    g.add_argument("--margin", action="append", default=[], metavar="METRIC=DELTA",
                   help="equivalence margin of a metric (repeatable; default: a tenth of the control-to-real span)")
    g.add_argument("--max-seeds", type=int, default=8, help="most seeds per generator (default 8)")
    g.add_argument("--first-look", type=int, default=3, help="seeds per generator at the first look (default 3)")
    g.add_argument("--first-seed", type=int, default=0,
                   help="the looks use training seeds S, S+1, ... (default 0); e.g. a track begun later on the "
                   "seeds whose checkpoints a new judge can still score")
    g.add_argument("--alpha", type=float, default=0.05,
                   help="error rate per metric over all looks and pairs (default 0.05; Bonferroni)")
    g.add_argument("--vary-split", action="store_true",
                   help="with --settle: seed k also draws split k (data.split_seed k), so the seeds vary both "
                   "the initialisation and the data")


SETTLE_FLAGS = ("settle_metrics", "margin", "max_seeds", "first_look", "first_seed", "alpha", "vary_split")
WHAT_FLAGS = ("sweep", "space", "grid", "samples", "seeds", "splits")


def refuse_plan_flags_on_resume(args: argparse.Namespace) -> None:
    """--resume continues the stored plan, which is frozen: a flag that would change what it trains is refused
    in one line rather than ignored."""
    parser = argparse.ArgumentParser()
    add_plan_flags(parser)
    from_file = getattr(args, "from_config", {})  # --config FILE --resume: the file that started it
    given = [f"--{name.replace('_', '-')}" for name in (*WHAT_FLAGS, *SETTLE_FLAGS)
             if hasattr(args, name) and getattr(args, name) != from_file.get(name, parser.get_default(name))]
    if given:
        raise UserError(f"--resume: continues the stored plan, frozen when it was written; {', '.join(given)} cannot "
                        "change it (a new plan is a new --experiment)")


def typed(key: str, value: Any) -> Any:
    """A value from a command line as the config field's type (so '1e-4' and 0.0001 name the same run)."""
    cfg = Config()
    cfg.set(key, value)
    return cfg.flat()[legacy_names().get(key, [key])[0]]


def grid_flags(items: list[str]) -> dict[str, Any]:
    """--grid KEY=V1,V2 (repeatable) -> {KEY: {"grid": [typed values]}}: a grid of the space like any other."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise UserError(f"--grid {item}: expected KEY=V1,V2")
        try:
            grid[key] = {"grid": [typed(key, v) for v in values.split(",")]}
        except UserError as e:
            raise UserError(f"--grid {item}: {e}") from None
    return grid


# Where and how the sweep reports and where it stands: stored with it, never part of what it trains.
NOT_TRAINED = ("report", "phase", "best", "trials", "launcher")


@dataclass
class SweepPlan:
    """One launch: the generators, the space and its drawn configurations, seeds and splits, or the settle
    rule's frozen plan; the Tune-only knobs (scheduler, metric, the retraining's seeds, resources) ride along.
    Its dict form is the experiment's sweep file."""
    gens: list[str]
    preset: str
    overrides: dict[str, Any]
    launcher: str = "tune"
    sweeps: list[str] = field(default_factory=list)
    space: dict[str, Any] = field(default_factory=dict)
    configurations: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 1
    seeds: int = 1
    settle: dict | None = None
    then_seeds: int = 0
    scheduler: str = "fifo"
    metric: str = "val_ssim"
    max_failures: int = 2
    cpus: float | None = None
    gpus: float | None = None
    max_evaluations: int = 0
    report: str | None = None
    # The search's state once it is over (with then_seeds): the retraining phase and what it trains.
    phase: str = "search"
    best: dict[str, dict[str, Any]] | None = None
    retrain: list[dict[str, Any]] | None = None

    # -- building and checking --------------------------------------------------------------------------

    @classmethod
    def from_flags(cls, args: argparse.Namespace, extra: list[str], *, launcher: str,
                   settle: Callable[..., dict | None]) -> "SweepPlan":
        """The plan the command's flags ask for, every value checked before anything runs; `settle` makes the
        settle rule's frozen plan (jobs/settling.py `settle_plan`, which measures the control)."""
        overrides = overrides_from_flags(args, extra)
        flag = lambda name, default: getattr(args, name, default)  # noqa: E731 - the launcher may not have it
        samples, seeds, splits = flag("samples", 1), flag("seeds", 1), flag("splits", 1)
        then_seeds, scheduler = flag("then_seeds", None), flag("scheduler", "fifo")
        check_count("--samples", samples)
        check_count("--seeds", seeds)
        check_count("--splits", splits)
        gens = generator_list(args.gens)
        refuse_other_generators_settings(overrides, gens)
        sweeps = [s for s in flag("sweep", "").split(",") if s]
        grid = grid_flags(flag("grid", []))
        base = make_config(args.preset, overrides)
        if seeds > 1 and ("train.seed" in overrides or "train.seed" in grid):
            raise UserError("--seeds: sets train.seed 0..N-1 itself; drop --train.seed")
        if splits > 1 and ("data.split_seed" in overrides or base.data.split_file):
            raise UserError("--splits: draws each run's split itself; drop --data.split_seed and --data.split_file")
        if then_seeds is not None and (then_seeds < 2 or seeds > 1):
            raise UserError(f"--then-seeds: at least 2 fresh seeds (tuned against default is a run-level comparison: "
                            f"one seed per arm gives no interval), and the search itself on one seed (no --seeds); "
                            f"got {then_seeds}")
        space = spaces.build_space(gens, sweeps, flag("space", None), seeds=seeds, splits=splits, grid=grid)
        spaces.check_space(space, base, where="--grid" if grid and not flag("space", None) else "--space")
        configurations = spaces.sample_configurations(space, samples, seed=base.train.seed)
        if samples > 1 and not configurations:
            raise UserError(f"--samples {samples}: the space has nothing random to draw (only fixed values and "
                            "grids), so every sample would be the same trial; for replicates use --seeds N")
        distinct = [json.loads(c) for c in dict.fromkeys(json.dumps(c, sort_keys=True) for c in configurations)]
        if len(distinct) < len(configurations):
            print(f"note: {len(configurations) - len(distinct)} of the {len(configurations)} draws repeated an "
                  f"earlier one; {len(distinct)} distinct configurations (the space's random part is small)")
        metric = flag("metric", "val_ssim")
        if metric not in spaces.metric_names(base):
            raise UserError(f"--metric: {metric!r} is not reported by the trials (choose from "
                            f"{', '.join(spaces.metric_names(base))})")
        if args.settle and (sweeps or grid or flag("space", None) or distinct or seeds > 1 or splits > 1
                            or then_seeds or scheduler != "fifo"):
            raise UserError("--settle: compares the generators' own configurations on seeds it chooses; drop --sweep, "
                            "--space, --grid, --samples, --seeds, --splits, --then-seeds and --scheduler")
        resources = {}
        if launcher == "tune":
            if args.max_failures < 0:
                raise UserError(f"--max-failures: must be >= 0, got {args.max_failures}")
            if not args.cpus_per_trial > 0:
                raise UserError(f"--cpus-per-trial: must be > 0 (a trial needs a CPU to run on), got "
                                f"{args.cpus_per_trial}")
            if args.gpus_per_trial < 0:
                raise UserError(f"--gpus-per-trial: must be >= 0, got {args.gpus_per_trial}")
            resources = {"max_failures": args.max_failures, "cpus": args.cpus_per_trial, "gpus": args.gpus_per_trial}
        return cls(gens=gens, preset=args.preset, overrides=overrides, launcher=launcher, sweeps=sweeps, space=space,
                   configurations=distinct, samples=samples, seeds=seeds, settle=settle(args, gens, base, overrides),
                   then_seeds=then_seeds or 0, scheduler=scheduler, metric=metric, **resources,
                   max_evaluations=math.ceil(base.train.steps / base.train.eval_every),
                   report=str(Path(args.report).resolve()) if args.report else None)

    @classmethod
    def for_array(cls, seeds: int = 1) -> "SweepPlan":
        """The plain sbatch array's plan (slurm/train_all.sh): every registered generator x `seeds` seeds, the
        paper preset (the script's own flags reach each task's command line, not its name)."""
        from gan import models
        check_count("--seeds", seeds)
        gens = list(models.names())
        return cls(gens=gens, preset="paper", overrides={}, launcher="sbatch",
                   space=spaces.build_space(gens, [], seeds=seeds))

    def base(self) -> Config:
        """The configuration every trial starts from (the preset and the command's overrides)."""
        return make_config(self.preset, self.overrides)

    # -- the trials ---------------------------------------------------------------------------------------

    def trials(self) -> list[dict[str, Any]]:
        """Every trial as dotted values, generators outermost, in the order every launcher runs them."""
        fixed = {k: v for k, v in self.space.items() if not isinstance(v, dict)}
        axes = [[(key, value) for value in spec["grid"]] for key, spec in self.space.items()
                if isinstance(spec, dict) and "grid" in spec]
        trials = []
        for combo in itertools.product(*axes):
            for drawn in self.configurations or [{}]:
                values = {**fixed, **dict(combo), **drawn}
                trials.append(for_generator(values, values["model.generator"]))
        return [json.loads(t) for t in dict.fromkeys(json.dumps(t, sort_keys=True) for t in trials)]

    def count(self) -> int:
        """The most trials the sweep can run: its grid, plus the retraining's arms; the settle rule's maximum."""
        if self.settle:
            return len(self.gens) * self.settle["max_seeds"]
        return len(self.trials()) + len(self.gens) * 2 * self.then_seeds

    # -- stored with the experiment -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["trials"] = out.pop("retrain")  # the sweep file's older name for the retraining's trials
        return out

    @classmethod
    def load(cls, path: Path, check_settle: Callable[[dict, Path], None], expect: str) -> "SweepPlan":
        """The plan an experiment holds (what --resume reruns) for the `expect` launcher; one line when the file
        is not one this version reads or another launcher drives it, and its settle plan checked by
        `check_settle` (jobs/settling.py: frozen, intact)."""
        raw = read_json(path)
        launcher = raw.get("launcher", "tune") if isinstance(raw, dict) else None
        if expect == "tune" and launcher == "submitit":  # its rounds wait on submitit's jobs, which Tune cannot
            raise UserError(f"{path}: a settle sweep that {COMMANDS[launcher]} drives; continue it with: python "
                            f"{COMMANDS[launcher]} --out {path.parent.parent} --experiment {path.parent.name} --resume")
        if expect == "submitit" and not (isinstance(raw, dict) and isinstance(raw.get("settle"), dict)):
            raise UserError(f"{path}: holds no settle sweep (a search of jobs/tune.py, an older version, or edited); "
                            "choose another --experiment")
        settle = isinstance(raw, dict) and isinstance(raw.get("settle"), dict)
        if not isinstance(raw, dict) or not isinstance(raw.get("gens", []), list) \
                or not isinstance(raw.get("overrides", {}), dict) \
                or not (settle or isinstance(raw.get("space"), dict) and raw["space"]
                        and isinstance(raw.get("configurations"), list)
                        and all(isinstance(c, dict) for c in raw["configurations"])):
            raise UserError(f"{path}: not a sweep this version of {COMMANDS[expect]} wrote (an older version, or "
                            "edited); start a new --experiment")
        names = {f.name for f in dataclasses.fields(cls)}
        # A settle sweep Tune started is continued by submitit as well (the same plan; its runs are runs).
        defaults = {"gens": [], "preset": "paper", "overrides": {}, "retrain": raw.get("trials"), "launcher": expect}
        plan = cls(**{k: v for k, v in {**defaults, **raw}.items() if k in names})
        if plan.settle is not None:
            check_settle(raw, path)
        return plan

    def differs(self, stored: "SweepPlan") -> list[str]:
        """What of `stored` (the experiment's plan) this plan would train differently; a settle plan compared
        without its freeze record (the same command again freezes the same plan at another time)."""
        mine, theirs = self.to_dict(), stored.to_dict()
        for d in (mine, theirs):
            if isinstance(d.get("settle"), dict):
                d["settle"] = {k: v for k, v in d["settle"].items() if k != contract.SETTLE_FROZEN}
        return [k for k in mine if k not in NOT_TRAINED
                and json.dumps(mine[k], sort_keys=True) != json.dumps(theirs.get(k), sort_keys=True)]

    def refuse_a_different(self, root: Path, resume: str, check_settle: Callable[[dict, Path], None]) -> None:
        """A new plan for an experiment that holds another would mix their runs: refused. The same command
        again is allowed (finished trials end at once)."""
        if not (root / contract.TUNE_ARGS).exists():
            return
        differ = self.differs(SweepPlan.load(root / contract.TUNE_ARGS, check_settle, expect=self.launcher))
        if differ:
            raise UserError(f"--experiment {root}: holds a different sweep ({', '.join(differ)} differ); continue it "
                            f"with: {resume}, or choose another --experiment")
