"""The sweep protocols behind `jobs/tune.py`, each resumable where it stopped:

- a **search**: every trial of the sweep's space on Ray Tune, then (with `then_seeds`) the **retraining**
  of each generator's best configuration and its default on fresh seeds (`<experiment>-tuned/`,
  `<experiment>-default/`); the phase is stored in the sweep file, so a driver killed between them
  resumes the retraining;
- the **settle rule's rounds**: train the seeds the rule asks for, look, repeat, until every comparison
  is decided or at its maximum.

Ray and Tune mechanics live here: connecting (a private instance unless an address is given), refusing
a trial no node can hold, fitting with Ctrl-C / TERM turned into a clean stop, marking the runs of
unfinished trials. What the analysis says of the results - the tables, the reports, the rule's look at
the runs - is the command's, handed in as a `Readout` (cluster/ imports gan/ only; jobs/ joins them).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable, Protocol

from cluster.plan import say_round, settle_round
from cluster.sweep_plan import SweepPlan
from gan.config import make_config
from gan.contract import TUNE_ARGS, TUNE_STATE
from gan.errors import EXIT_PREEMPTED, UserError
from gan.fastpath import fast_path_vars
from gan.files import write_json


class Readout(Protocol):
    """What the command makes of a sweep's results (analysis/sweeps.py's SweepReadout); `plan` is the
    sweep's SweepPlan."""

    def search_done(self, trials: int, errored: int, best: dict, root: Path, metric: str, mode: str,
                    report: str | None) -> int: ...

    def retraining_done(self, trials: int, errored: int, plan: SweepPlan, out: Path, experiment: str,
                        report: str | None) -> int: ...

    def settle_start(self, plan: SweepPlan) -> None: ...

    def settle_look(self, root: Path, plan: SweepPlan) -> tuple[list[dict], dict[str, list[int]], dict[str, set[int]]]:
        """(the rule's rows, {generator: the training seeds its next look needs}, {generator: seeds finished})."""

    def settle_done(self, rows: list[dict], plan: SweepPlan, root: Path, report: str | None) -> int: ...


# Set per trial by the trainable, or the re-exec's own mark: never carried from the driver.
NOT_CARRIED = ("PIX2PIX_CPUS", "PIX2PIX_ALLOCATOR_REEXEC")


def trial_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """What every trial's worker gets from the driver: the fast path's allocator, and the suite's own
    variables as the user set them for the sweep (PIX2PIX_ALLOW_CPU, PIX2PIX_GENERATORS, PIX2PIX_DATA, ...;
    a Ray cluster started elsewhere would otherwise give its workers the raylet's environment)."""
    env = os.environ if env is None else env
    carried = {k: v for k, v in env.items() if k.startswith("PIX2PIX_") and k not in NOT_CARRIED}
    return {**carried, **fast_path_vars(env)}


def disk_check(plan: SweepPlan, out: str, limit_gb: float | None, log=print) -> None:
    """What the sweep will write, said before it starts: its trials x the checkpoints each run keeps (its own
    `train.checkpoints_to_keep`, one more while a new one is written, and the best one with eval.select
    best_val_*) at the largest checkpoint of any trial's net (Tune's checkpoints are pointers: no second
    copy). Refused in one line past `limit_gb` (default: the free space where the runs go)."""
    import shutil as sh

    from cluster.costs import CheckpointSizes
    from gan.datasets.synthetic import default_cache_dir
    if limit_gb is not None and not (math.isfinite(limit_gb) and limit_gb > 0):
        raise UserError(f"--disk-limit: a number of GB > 0, got {limit_gb} (leave it out for the free space)")
    largest, kept = 0, 0
    cache = make_config(plan.preset, plan.overrides).data.cache_dir or default_cache_dir()
    sizes = CheckpointSizes(Path(cache) / "checkpoint-bytes.json")  # each distinct net is built once, ever
    for values in plan.trials() or [{"model.generator": gen} for gen in plan.gens]:
        cfg = make_config(plan.preset, {**plan.overrides, **values})
        largest = max(largest, sizes.bytes(cfg.model, cfg.data.image_size))
        kept = max(kept, cfg.train.checkpoints_to_keep + 1 + (cfg.eval.select != "last"))
    sizes.save(log)
    trials = plan.count()
    total = trials * kept * largest
    where = Path(out).resolve()
    while not where.exists():
        where = where.parent
    free = sh.disk_usage(where).free
    limit = free if limit_gb is None else limit_gb * 1e9
    gb = lambda n: f"{n / 1e9:.3g} GB"  # noqa: E731
    said = (f"up to {gb(total)} of checkpoints ({trials} trials x up to {kept} checkpoints of <= {gb(largest)}) "
            f"into {where} ({gb(free)} free)")
    if total > limit:
        raise UserError(f"--disk-limit: this sweep writes {said}, past the limit of {gb(limit)}; free space, keep "
                        "fewer checkpoints (--train.checkpoints_to_keep 1), or raise the limit with --disk-limit GB")
    log(f"disk: {said}")


def connect(address: str | None, cpus: float, gpus: float) -> None:
    """Ray: `address` (or $RAY_ADDRESS), else a private instance on this machine, never one another job
    started; trials get `trial_env()`. Then refuse a per-trial request no node meets."""
    import ray
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    check_reachable(address)
    env_vars = trial_env()
    ray.init(address=address, runtime_env={"env_vars": env_vars} if env_vars else None,
             **({"include_dashboard": False} if address == "local" else {}))
    refuse_what_no_node_meets(cpus, gpus)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """An address of a Ray cluster (host:port, or ray://host:port) where nothing answers is one line, in
    seconds: `ray.init` would retry for minutes, deaf to TERM."""
    import socket
    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: not host:port (or ray://host:port, auto, local)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"--address {address}: nothing answers at {host}:{port} ({e.strerror or e}); start the "
                        "cluster's head (ray start --head) or give the address it printed") from None


FORWARDING_DELAY_S = 2.0  # Ray forwards a worker's lines to the driver within about a second of their write


def disconnect() -> None:
    """Leave Ray before the sweep's summary: the trials' log lines, which Ray forwards to the driver with a
    delay, then end before the table and the report line instead of trailing after them. The last ones get
    the forwarding delay to arrive first (a shutdown drops lines still in flight)."""
    import time

    import ray
    time.sleep(FORWARDING_DELAY_S)
    ray.shutdown()


def run(plan: SweepPlan, *, out: str, experiment: str, resume: str, resuming: bool, readout: Readout) -> int:
    """The sweep `plan` describes: the settle rule's rounds, or the search and then, with `then_seeds`, the
    retraining; either resumed where it stopped. The plan is stored in the experiment before its first trial.
    Ctrl-C or TERM, wherever it lands, ends the same way (`Interruption`): Tune saves its state, the runs
    of unfinished trials are marked preempted, one line names `resume`, exit 75."""
    try:
        with INTERRUPTION:
            return _run(plan, out=out, experiment=experiment, resume=resume, resuming=resuming, readout=readout)
    except KeyboardInterrupt:
        where = ("a second Ctrl-C: stopped at once, without Tune's last save" if INTERRUPTION.presses > 1
                 else "between the sweep's phases")
        print(f"interrupted: {where}; continue with: {resume}")
        return EXIT_PREEMPTED


def _run(plan: SweepPlan, *, out: str, experiment: str, resume: str, resuming: bool, readout: Readout) -> int:
    from cluster import tune as tuning
    root = Path(out) / experiment
    args_file = root / TUNE_ARGS
    if not resuming:
        root.mkdir(parents=True, exist_ok=True)
        write_json(args_file, plan.to_dict())  # pre-registered: stored before the first trial or round
    if plan.settle:
        return settle_rounds(plan, out=out, experiment=experiment, resume=resume, readout=readout)
    mode = tuning.mode_of(plan.metric)
    if plan.phase == "search":
        if resuming:
            tuner = tuning.restore_tuner(out, experiment, plan.base(), plan.cpus, plan.gpus)
        else:
            tuner = search_tuner(plan, out, experiment)
        results = run_phase(tuner, resume)
        if results is None:
            return EXIT_PREEMPTED
        if not plan.then_seeds:
            disconnect()
        best = tuning.best_trials(results, plan.metric, mode)
        report = f"{plan.report}/search" if plan.report and plan.then_seeds else plan.report
        code = readout.search_done(len(results), errored(results), best, root, plan.metric, mode, report)
        if not plan.then_seeds:
            return code
        if not best:
            raise UserError(f"--then-seeds: no trial reported {plan.metric}; nothing to retrain")
        plan.phase, plan.best = "retrain", {gen: values for gen, (values, _) in best.items()}
        plan.retrain = tuning.retraining_trials(plan.best, list(range(1, plan.then_seeds + 1)), experiment)
        write_json(args_file, plan.to_dict())  # a driver killed from here on resumes the retraining
    results = run_phase(retrain_tuner(plan, out, experiment), resume)
    if results is None:
        return EXIT_PREEMPTED
    disconnect()
    return readout.retraining_done(len(results), errored(results), plan, Path(out), experiment, plan.report)


def errored(results) -> int:
    return sum(1 for r in results if r.error)


def settle_loop(plan: SweepPlan, root: Path, readout: Readout, train: Callable[[list[dict]], int | None],
                before_verdict: Callable[[], None] = lambda: None) -> int:
    """The settle rule's rounds, whatever trains them: look at the finished runs, have `train` train the runs
    the next look needs (it returns None when they all finished, else the exit code to stop with), repeat;
    then the verdict. Finished runs are never trained again (those already in the experiment count); the
    decisions are a function of the plan and the runs' scores, so a driver started again takes up exactly
    where the last stopped."""
    readout.settle_start(plan)
    while True:
        rows, wanted, have = readout.settle_look(root, plan)
        todo = settle_round(wanted, have, varied=plan.settle.get("design") == "varied")
        if not todo:
            break
        print(f"\n{say_round(wanted, todo)}", flush=True)
        code = train(todo)
        if code is not None:
            return code
    before_verdict()
    return readout.settle_done(rows, plan, root, plan.report)


def settle_rounds(plan: SweepPlan, *, out: str, experiment: str, resume: str, readout: Readout) -> int:
    """The settle rule's rounds on Ray Tune: one grid of trials per round (`settle_loop`)."""
    from ray import tune

    from cluster import tune as tuning
    root = Path(out) / experiment
    base = plan.base()

    def train(todo: list[dict]) -> int | None:
        shutil.rmtree(root / TUNE_STATE, ignore_errors=True)  # the last round's Tune state; runs resume from their own
        tuner = tuning.make_tuner({tuning.TRIAL: tune.grid_search(todo)}, base=base, out=out, experiment=experiment,
                                  metric=plan.metric, mode=tuning.mode_of(plan.metric),
                                  max_failures=plan.max_failures, cpus_per_trial=plan.cpus, gpus_per_trial=plan.gpus)
        results = run_phase(tuner, resume)
        if results is None:
            return EXIT_PREEMPTED
        errors = [r for r in results if r.error]
        if errors:
            print(f"settle: {len(errors)} run(s) did not finish ({errors[0].error}); fix the cause and continue with: "
                  f"{resume}")
            return 1
        return None

    return settle_loop(plan, root, readout, train, before_verdict=disconnect)


def refuse_what_no_node_meets(cpus: float, gpus: float) -> None:
    """A trial no node of the cluster can hold would wait forever behind Ray's 'insufficient resources'
    warning: refused in one line, naming the largest node. (An autoscaling cluster that grows such nodes on
    demand: set PIX2PIX_AUTOSCALING=1.)"""
    import ray
    if os.environ.get("PIX2PIX_AUTOSCALING") == "1":
        return
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
    raise UserError(f"--cpus-per-trial {cpus:g} --gpus-per-trial {gpus:g}: no node of the cluster has that much "
                    f"({len(nodes)} node(s); the largest: {largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} "
                    "GPUs); ask for less, or add such a node")


def search_space(plan: SweepPlan) -> dict:
    """Tune's space of the search: one grid over the plan's trials (the list submitit and sbatch run too)."""
    from ray import tune

    from cluster import tune as tuning
    return {tuning.TRIAL: tune.grid_search(plan.trials())}


def search_tuner(plan: SweepPlan, out: str, experiment: str):
    """The search's tuner over `search_space`."""
    from cluster import tune as tuning
    return tuning.make_tuner(
        search_space(plan), base=plan.base(), out=out, experiment=experiment,
        scheduler=plan.scheduler, metric=plan.metric, mode=tuning.mode_of(plan.metric), max_failures=plan.max_failures,
        cpus_per_trial=plan.cpus, gpus_per_trial=plan.gpus, max_evaluations=plan.max_evaluations)


def retrain_tuner(plan: SweepPlan, out: str, experiment: str):
    """The retraining phase's tuner (`<experiment>-retrain/_tune`): restored if it was started before."""
    from ray import tune

    from cluster import tune as tuning
    name = f"{experiment}-retrain"
    space, base = {tuning.TRIAL: tune.grid_search(plan.retrain)}, plan.base()
    if tune.Tuner.can_restore(str((Path(out) / name / TUNE_STATE).resolve())):
        return tuning.restore_tuner(out, name, base, plan.cpus, plan.gpus, param_space=space)
    return tuning.make_tuner(
        space, base=base, out=out, experiment=name, metric=plan.metric, mode=tuning.mode_of(plan.metric),
        max_failures=plan.max_failures, cpus_per_trial=plan.cpus, gpus_per_trial=plan.gpus)


def run_phase(tuner, resume: str):
    """Fit; the results, or None (after saying how to go on) when the sweep was interrupted."""
    from cluster import tune as tuning
    results, interrupted = fit(tuner)
    unfinished = tuning.settle_runs(interrupted, resume=resume)
    if interrupted:  # trials that never started (pending when it came) are unfinished too
        unfinished += tuning.never_started(results)
    if unfinished:
        print(f"interrupted: {unfinished} of {len(results)} trials unfinished, their runs marked preempted; "
              f"continue with: {resume}")
        return None
    return results


def fit(tuner):
    """(results, interrupted): `tuner.fit()`, stopped cleanly by a Ctrl-C or TERM (see `Interruption`)."""
    return INTERRUPTION.fit(tuner)


class Interruption:
    """Ctrl-C (SIGINT) or TERM (scancel, a job's time limit) anywhere in a sweep, ending it the one way that
    keeps every trial resumable: Tune checkpoints its state and `fit` returns.

    Tune listens for SIGINT only once `fit` has set up; a press that landed earlier (while a tuner was
    built or restored) raised KeyboardInterrupt inside Ray's code, which could swallow it and let a whole
    phase run on. So the sweep keeps the press itself, for its whole length: Tune's SIGINT handler is
    switched off, and a press during `fit` is handed on as the SIGUSR1 Tune always listens to, as soon as
    Tune's handler for it is in place (a small thread watches for it, since the press may come first). A
    press outside `fit` stops before the next one. A second press stops at once (KeyboardInterrupt, as
    Python's default would), skipping Tune's last save."""

    def __init__(self):
        self.pressed = threading.Event()
        self.presses = 0
        self._previous: dict = {}

    def __enter__(self) -> "Interruption":
        self.pressed.clear()
        self.presses = 0
        self._previous = {"env": os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")}
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for sig, handler in ((signal.SIGINT, self._press), (signal.SIGTERM, self._press),
                             (signal.SIGUSR1, self._not_tune_yet)):
            self._previous[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._previous[sig])
        if self._previous["env"] is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._previous["env"]

    def _press(self, signum, frame) -> None:
        self.presses += 1
        if self.pressed.is_set():
            raise KeyboardInterrupt
        self.pressed.set()

    @staticmethod
    def _not_tune_yet(signum, frame) -> None:
        """SIGUSR1 before Tune's handler is in place (or after a fit): nothing to stop yet."""

    def fit(self, tuner):
        if self.pressed.is_set():
            raise KeyboardInterrupt  # pressed between phases: start no new one
        signal.signal(signal.SIGUSR1, self._not_tune_yet)  # the last fit's Tune handler is stale
        fitted = threading.Event()
        courier = threading.Thread(target=self._hand_to_tune, args=(fitted,), daemon=True)
        courier.start()
        try:
            results = tuner.fit()
        finally:
            fitted.set()
            courier.join()
        return results, self.pressed.is_set()

    def _hand_to_tune(self, fitted: threading.Event) -> None:
        while not fitted.wait(0.1):
            if self.pressed.is_set() and signal.getsignal(signal.SIGUSR1) is not self._not_tune_yet:
                os.kill(os.getpid(), signal.SIGUSR1)
                return


INTERRUPTION = Interruption()
