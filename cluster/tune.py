"""Ray Tune: the trainable that runs `gan.train.train`, and the tuner factory.

Each trial is one run directory `<out>/<experiment>/<run_name>`, exactly as
`jobs/train.py` writes it; `run_name` is derived from the trial's sampled
values, so a retried or restored trial finds its own run again. After each
evaluation the trial reports its metrics (`val_ssim`, `train_hist_corr`, ...,
`step`) and a Tune checkpoint holding the TensorFlow checkpoint; a retried
trial first restores that checkpoint (`tune.get_checkpoint()`) into its run
directory, so it resumes at the exact step on any node.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cluster.plan import run_name
from gan import contract
from gan.checkpoints import keep_newest_only
from gan.config import Config, for_generator
from gan.files import read_csv
from gan.fastpath import CPUS_ENV
from gan.quiet import quiet_tensorflow
from gan.train import run_path, train


def _flat_scores(step: int, scores: dict[str, dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {"step": step}
    for split, values in scores.items():
        out.update({f"{split}_{k}": v for k, v in values.items()})
    return out


def mode_of(metric: str) -> str:
    """Tune's mode for a reported metric ('val_ssim', 'train_l1', 'val_fcn_iou'): its registered direction
    (gan/evaluators/metrics.py); the FCN-score is higher-is-better."""
    from gan.evaluators.metrics import METRICS
    name = metric.split("_", 1)[1]
    return "min" if name in METRICS and not METRICS[name].higher_is_better else "max"


def _restore_tune_checkpoint(run: Path) -> None:
    """Copy the TF checkpoint of Tune's latest checkpoint into the run, if the run lacks it (Tune checkpoints
    of sweeps started before they became pointers held the weights; a pointer has none to copy)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        meta = json.loads((Path(folder) / contract.STEP_RECORD).read_text())
        target = run / contract.CHECKPOINTS
        have = {p.name for p in target.glob(f"{contract.CHECKPOINT_PREFIX}-*.index")} if target.exists() else set()
        if f"{contract.checkpoint_file(meta['step'])}.index" in have:
            return  # shared filesystem: the run directory already has it
        target.mkdir(parents=True, exist_ok=True)
        for f in Path(folder).iterdir():
            if f.name.startswith(f"{contract.CHECKPOINT_PREFIX}-") or f.name == contract.CHECKPOINT_STATE:
                shutil.copy2(f, target / f.name)




TRIAL = "trial"  # a whole set of dotted values as one grid entry: Tune's grid is the plan's list of trials


def trial_values(space: dict[str, Any]) -> dict[str, Any]:
    """A trial's dotted values from its resolved Tune config: the whole set under `trial` (a grid of trials, as
    every sweep builds them), or as keys of their own (sweeps of older versions)."""
    sampled = {k: v for k, v in space.items() if k != TRIAL}
    sampled.update(space.get(TRIAL) or {})
    return sampled


def trial_config(space: dict[str, Any], base: dict[str, Any], out: str) -> tuple[Config, str]:
    """(the trial's Config, the output root) from its resolved `space` (the trial's sampled dotted values,
    under `trial` as one dict or as keys of their own), the whole validated base Config in dict form and
    the output root. The base travels beside the space (`tune.with_parameters`), so Tune's tables show
    only what the trials vary."""
    sampled = trial_values(space)
    base = Config.from_dict(base)
    # Only the knobs this trial's generator has: a sweep draws every generator's own settings at once.
    sampled = for_generator(sampled, sampled.get("model.generator", base.model.generator))
    named = {k: v for k, v in sampled.items() if k != "experiment"}
    return base.update({**sampled, "run_name": run_name(named)}).validate(), out


def trainable(space: dict[str, Any], base: dict[str, Any], out: str) -> None:
    """The Tune function trainable: one `gan.train.train` run in the trial's run directory."""
    quiet_tensorflow()
    cfg, out = trial_config(space, base, out)
    run = run_path(cfg, out)
    # TensorFlow's thread pools get the CPUs Tune assigned to this trial, not the whole node.
    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if assigned:
        os.environ[CPUS_ENV] = str(max(1, int(assigned)))
    _restore_tune_checkpoint(run)

    reported, last = [], []

    def report(step: int, scores: dict, checkpoint_path: str) -> None:
        reported.append(step)
        if step >= cfg.train.steps:
            # The last evaluation is reported once the test split is scored: a scheduler stopping the trial
            # at a rung that falls on it would otherwise end the trainer before its test (seen with ASHA).
            last.append((step, scores, checkpoint_path))
            return
        send(step, scores, checkpoint_path)

    def send(step: int, scores: dict, checkpoint_path: str) -> None:
        # Tune's checkpoint is a pointer (the step and the run), not a copy of the weights: Tune's storage is
        # <out>/<experiment>, which every node must see (Ray requires shared storage across nodes), as it sees
        # the run directory, whose own checkpoints a restarted trial resumes from. A copy there would double
        # a sweep's disk use for nothing.
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / contract.STEP_RECORD).write_text(json.dumps({"step": step, "run": str(run)}))
            tune.report({**_flat_scores(step, scores), "run": str(run)},
                        checkpoint=tune.Checkpoint.from_directory(tmp))

    code = train(cfg, out, report=report)
    if code:
        raise RuntimeError(f"{run}: training ended with exit code {code} (see {run / contract.STATUS})")
    for step, scores, checkpoint_path in last:
        send(step, scores, checkpoint_path)
    if not reported:  # the run had finished before (the same sweep again): Tune still needs its metrics
        step, scores = _last_evaluation(run)
        tune.report({**_flat_scores(step, scores), "run": str(run)})


def _last_evaluation(run: Path) -> tuple[int, dict[str, dict[str, float]]]:
    """(step, {split: {metric: value}}) of a run's last evaluation, from its tables."""
    step, scores = 0, {}
    for name in (contract.METRICS_CSV, contract.FCN_CSV):
        rows = read_csv(run / name) if (run / name).exists() else []
        last = max((int(r["step"]) for r in rows), default=0)
        step = max(step, last)
        for r in rows:
            if int(r["step"]) == last and r["split"] in ("train", "val"):
                scores.setdefault(r["split"], {}).update(
                    {k: float(v) for k, v in r.items() if k not in (*contract.METRICS_KEYS, *contract.METRICS_TAIL) and v})
    return step, scores


def best_trials(results, metric: str, mode: str) -> dict[str, tuple[dict[str, Any], Any]]:
    """{generator: (the sampled dotted values of its best trial by `metric`, that trial's result row)}."""
    frame = results.get_dataframe()
    # Sampled values are config/trial/<dotted> (a grid of whole trials) or, in sweeps of older versions,
    # config/<dotted>.
    by = next((c for c in (f"config/{TRIAL}/model.generator", "config/model.generator") if c in frame), None)
    if metric not in frame or by is None or frame[metric].isna().all():
        return {}
    best = {}
    for gen, group in frame.dropna(subset=[metric]).groupby(by):
        row = group.loc[group[metric].idxmax() if mode == "max" else group[metric].idxmin()]
        values = {k.split("/", 2)[-1]: _plain(row[k]) for k in group if k.startswith("config/")
                  and k != f"config/{TRIAL}"}
        best[gen] = (for_generator(values, gen), row)
    return best


def best_configurations(results, metric: str, mode: str) -> dict[str, dict[str, Any]]:
    """{generator: the sampled dotted values of its best trial by `metric`} from a finished search."""
    return {gen: values for gen, (values, _) in best_trials(results, metric, mode).items()}


def _plain(value):
    """numpy scalars -> Python numbers (the values are written to JSON and hashed into run names)."""
    return value.item() if hasattr(value, "item") else value


def retraining_trials(best: dict[str, dict[str, Any]], seeds: list[int], experiment: str) -> list[dict[str, Any]]:
    """The retraining phase: each generator's best configuration (-> <experiment>-tuned) and its default
    (-> <experiment>-default), each on every seed."""
    trials = []
    for gen, values in sorted(best.items()):
        for arm, chosen in (("tuned", values), ("default", {"model.generator": gen})):
            trials += [{**chosen, "train.seed": seed, "experiment": f"{experiment}-{arm}"} for seed in seeds]
    return trials


class PerGeneratorASHA(tune.schedulers.FIFOScheduler):
    """ASHA within each generator: a trial is measured only against trials of its own generator.

    One ASHA over all trials compares generators at every rung, so the generator that starts slower (the
    ResNet's FCN-score at 250 steps is ~0.1 below the U-Net's) loses its trials at the first rung and
    is tuned on a fraction of the others' budget. Here each generator has its own ASHA (Ray's, unchanged),
    so every generator gets the same early-stopping rule over the same sampled configurations.
    """

    def __init__(self, **asha_args: Any):
        super().__init__()
        self._asha_args, self._by_generator = asha_args, {}
        self._metric = self._mode = None

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def _asha(self, trial) -> tune.schedulers.ASHAScheduler:
        gen = trial_values(trial.config).get("model.generator", "")
        if gen not in self._by_generator:
            self._by_generator[gen] = tune.schedulers.ASHAScheduler(metric=self._metric, mode=self._mode,
                                                                    **self._asha_args)
        return self._by_generator[gen]

    def on_trial_add(self, tune_controller, trial) -> None:
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._asha(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._asha(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{gen}: {asha.debug_string()}" for gen, asha in sorted(self._by_generator.items()))


def make_tuner(param_space: dict[str, Any], *, base: Config, out: str, experiment: str,
               scheduler: str = "fifo", metric: str = "val_ssim", mode: str = "max", num_samples: int = 1,
               max_failures: int = 2, keep_checkpoints: int = 10, cpus_per_trial: float = 1,
               gpus_per_trial: float = 0, max_evaluations: int | None = None) -> tune.Tuner:
    """A Tuner over `param_space`; Tune's own state goes to `<out>/<experiment>/_tune`."""
    if scheduler == "asha":
        # max_t one past the last evaluation: ASHA stops a trial that reaches max_t at once, which at the
        # last evaluation would kill the trainer before it scores the test split.
        sched = PerGeneratorASHA(time_attr="training_iteration", max_t=(max_evaluations or 100) + 1,
                                 grace_period=1, reduction_factor=2)
    elif scheduler == "fifo":
        sched = tune.schedulers.FIFOScheduler()
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}")
    base, out = travelling(base, out, experiment)
    return tune.Tuner(
        _trainable(base, out, cpus_per_trial, gpus_per_trial),
        param_space=param_space,
        # A fresh actor per trial (Ray's default), on purpose: with reuse_actors, an interrupted sweep's trainer
        # was seen to go on training for evaluations after the driver's Ctrl-C, and finish unrecorded.
        tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=sched, num_samples=num_samples,
                                    trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
        run_config=tune.RunConfig(
            name=contract.TUNE_STATE, storage_path=str((Path(out) / experiment).resolve()),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints),
            callbacks=[CompletedTrials(base, out)], verbose=1),
    )


def travelling(base: Config, out: str, experiment: str) -> tuple[dict[str, Any], str]:
    """The base config and output root as every trial gets them: absolute paths (a trial runs in its own
    trial folder, not in the driver's working directory), the experiment set, validated."""
    return (base.with_absolute_paths().update({"experiment": experiment}).validate().to_dict(),
            str(Path(out).resolve()))


def _trainable(base: dict[str, Any], out: str, cpus: float, gpus: float):
    return tune.with_resources(tune.with_parameters(trainable, base=base, out=out), {"cpu": cpus, "gpu": gpus})


def restore_tuner(out: str, experiment: str, base: Config, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
                  param_space: dict[str, Any] | None = None) -> tune.Tuner:
    """The interrupted experiment (with its callbacks); finished trials stay finished, errored ones are
    retried. The trainable is given the same base config and output root again (Tune keeps the
    space, not `with_parameters`' objects); `param_space` re-specifies the space as `make_tuner` built it
    when Tune's pickled copy cannot be trusted (a grid of whole configurations)."""
    path = (Path(out) / experiment / contract.TUNE_STATE).resolve()
    base_dict, root = travelling(base, out, experiment)
    return tune.Tuner.restore(str(path), resume_errored=True, param_space=param_space,
                              trainable=_trainable(base_dict, root, cpus_per_trial, gpus_per_trial))


class CompletedTrials(tune.Callback):
    """What the trials did while this driver ran: which started (with their configs), which Tune
    completed (finished, or stopped early by the scheduler) as opposed to those an interruption ended
    (Tune marks both TERMINATED once `fit` returns), and which errored. Kept through Tune's public
    callback hooks; its trial list is not in the public ResultGrid."""

    # One record per driver process, shared by every instance: `Tuner.restore` unpickles its own copy.
    ids: set[str] = set()
    started: dict[str, tuple[dict, dict, str]] = {}  # trial id -> (its space, base config, output root)
    errored: set[str] = set()

    def __init__(self, base: dict[str, Any], out: str):
        super().__init__()
        self.base, self.out = base, out

    def on_trial_start(self, iteration, trials, trial, **info):
        CompletedTrials.started[trial.trial_id] = (trial.config, self.base, self.out)

    def on_trial_complete(self, iteration, trials, trial, **info):
        CompletedTrials.ids.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        CompletedTrials.errored.add(trial.trial_id)

    def on_trial_recover(self, iteration, trials, trial, **info):  # retried after an error (max_failures)
        CompletedTrials.errored.discard(trial.trial_id)


def never_started(results) -> int:
    """Trials of this fit still pending when an interruption came: not started by this driver, and neither
    finished before it (a resumed sweep's), nor errored. They have no run to mark; `settle_runs` counts the
    started ones, from their runs (a trainer that finished as Tune stopped it is done, though Tune never
    received its last report)."""
    return sum(1 for r in results if r.error is None and not (r.metrics or {}).get("done")
               and _trial_id(r) not in CompletedTrials.started)


def _trial_id(result) -> str:
    """A result's trial id: from its metrics once it reported, else from its folder (`trial_<id>`, as
    `make_tuner` names them)."""
    return (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")


def settle_runs(interrupted: bool, resume: str, wait: float = 20.0) -> int:
    """After `Tuner.fit`: the runs of trials whose trainer Tune ended say so, not 'running'.

    A completed trial's run still 'running' was stopped early by the scheduler (ASHA): 'stopped'. When
    the sweep was interrupted (Ctrl-C, TERM), every other trial that did not error is unfinished: its
    run is marked 'preempted', with how to resume. Waits up to `wait` s for a trainer to be gone (its
    lease) before writing its status. Returns the number of unfinished trials.
    """
    from gan.lease import holder_alive, read_holder
    from gan.rundir import RunDir
    unfinished = 0
    for trial_id, (config, base, root) in list(CompletedTrials.started.items()):
        done = trial_id in CompletedTrials.ids
        if trial_id in CompletedTrials.errored and not done or not (done or interrupted):
            continue
        cfg, out = trial_config(config, base, root)
        run = RunDir(run_path(cfg, out))
        deadline = time.time() + wait
        while holder_alive(read_holder(run.lease))[0] and time.time() < deadline:
            time.sleep(0.5)
        status = run.read_status() if run.status.exists() else {}
        # A trainer that finished its run as the interruption reached Tune is done, whatever Tune recorded.
        unfinished += not done and status.get("state") != "finished"
        if status.get("state") not in ("running", None) or holder_alive(read_holder(run.lease))[0]:
            continue
        step = status.get("step", 0)
        if done:
            run.set_status("stopped", step, f"stopped early by the scheduler at step {step}")
            keep_newest_only(run.checkpoints)  # it will not train on: its newest checkpoint is all it needs
        elif run.config.exists():
            run.set_status("preempted", step, f"sweep interrupted at step {step}; continue with: {resume}")
    return unfinished
