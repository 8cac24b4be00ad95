"""The run's lifecycle: one pix2pix run from its directory to its test, resumable at the exact step.

Reads top to bottom: run directory and lease, data, devices (gan/devices.py), the nets, optimizers and
train step (gan/step.py), checkpoint restore, then the loop with evaluation, checkpoints on a clock and
stop signals inline, and the timings and progress (gan/progress.py). `train(cfg, out)` is what
`jobs/train.py`, the Ray Tune trainable and the submitit job all call.
"""

from __future__ import annotations

import math
import signal
import socket
import sys
import time
from pathlib import Path

from gan import contract
from gan.checkpoints import restore_newest_intact
from gan.config import Config
from gan.datasets.loader import load_dataset, train_pipeline
from gan.devices import device_name, gpus_assigned, make_strategy, prepare_gpus
from gan.errors import EXIT_DIVERGED, EXIT_PREEMPTED, DiskFull, UserError, is_disk_full
from gan.fastpath import cpus_given, size_thread_pools
from gan.files import append_csv, atomic_write, read_csv, read_json
from gan.evaluators.metrics import METRICS, MetricPool, metric_specs
from gan.lease import Lease
from gan.progress import Interval, Progress
from gan.rundir import RunDir
from gan.step import build_models, make_train_step, random_state_checkpoint



def run_path(cfg: Config, out: str | Path) -> Path:
    return contract.run_path(out, cfg.experiment, cfg.name)


class _StopFlag:
    """SIGTERM / SIGUSR1 (SLURM's warning before the limit) / SIGUSR2 (submitit's) / SIGINT: finish the step,
    checkpoint, exit. Under submitit the job then requeues itself (cluster/submitit_jobs.py); submitit's own
    USR2 handler would exit from inside whatever the trainer was doing, a checkpoint write included.

    Installed before TensorFlow starts, so a signal at any moment ends the same way. Later signals (a
    second Ctrl-C, scancel's TERM after USR1) only say that the checkpoint is being finished: breaking
    it off would leave the run at the previous checkpoint for no gain (kill -9 still can)."""

    def __init__(self, log=print):
        self.signal: str | None = None
        self.log = log
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a Ray actor thread): no handler
                pass

    def _handle(self, signum, frame):
        if self.signal is None:
            self.signal = signal.Signals(signum).name
        else:
            self.log(f"{signal.Signals(signum).name}: already stopping; finishing the checkpoint first "
                     "(kill -9 abandons it; the previous checkpoint stays)")

    def restore(self):
        """The handlers from before (submitit's own USR2 handler requeues the job once the trainer returned)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(cfg: Config, out: str | Path, overwrite: bool = False, report=None, log=print) -> int:
    """Train (or resume) one run; returns the exit code (0, EXIT_DIVERGED or EXIT_PREEMPTED).

    Raises UserError for bad input and DiskFull (naming where) when the disk fills up; the run then
    keeps its newest intact checkpoint and resumes from it once space is freed.
    `report(step, metrics_by_split, checkpoint_dir)` is called after each
    evaluation and checkpoint (the Ray Tune hook); `log` receives plain lines.
    """
    cfg.validate(metrics=METRICS)
    data = load_dataset(cfg)  # bad data fails here, before anything is written or TF starts
    if gpus_assigned():  # GPUs given but invisible fail here, before the run directory is touched (TensorFlow
        prepare_gpus()  # starts only then: its start-up lines would otherwise precede a bad --out's one line)
    run = RunDir(run_path(cfg, out))
    lease = Lease(run.lease, log=log).acquire()  # one trainer per run directory
    stop = _StopFlag(log)
    try:
        return _train(cfg, data, run, lease, stop, overwrite, report, log)
    except BaseException as e:
        if is_disk_full(e):
            raise DiskFull(f"no space left on device writing {_full_where(e, run)}; "
                           f"{run.path} keeps its newest intact checkpoint: free space and rerun the same "
                           "command to resume") from None
        raise
    finally:
        stop.restore()
        lease.release()


def _train(cfg: Config, data, run: RunDir, lease: Lease, stop: _StopFlag, overwrite: bool, report,
           log) -> int:
    """The loop: build (or restore) the training, step, evaluate and checkpoint every eval_every steps,
    stop cleanly on a signal or a non-finite loss, then score the test split."""
    if _already_finished(cfg, data, run, overwrite, log):
        return 0
    t = _Training(cfg, data, run, log)
    step = t.start
    try:
        if stop.signal and step < cfg.train.steps:  # arrived while TensorFlow started: nothing new to save
            return t.preempted(step, stop.signal, checkpoint=False)
        while step < cfg.train.steps:
            n = t.steps_in_call(step)
            losses = t.interval.timed(lambda: {k: float(v) for k, v in t.run_steps(n).items()})
            lease.check()
            step += n
            t.step_var.assign(step)
            if not all(math.isfinite(v) for v in losses.values()):
                return t.diverged(step, losses)
            t.log_losses(step, n, losses)
            if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
                t.evaluate(step, report)
            if stop.signal and step < cfg.train.steps:
                return t.preempted(step, stop.signal, checkpoint=True)
            if (step == cfg.train.steps or t.checkpoint_due(step)) and t.saved_step != step:
                t.checkpoint(step, report)
        t.progress.close()
        return t.test(step)
    except BaseException as e:
        if not t.finished:  # a Ctrl-C or a closed pipe at its last line: a finished run stays finished
            _record_failure(run, step, e)
        raise
    finally:
        _close_all(log, t.progress.close, t.evaluator.close, t.writer.close)


def _already_finished(cfg: Config, data, run: RunDir, overwrite: bool, log) -> bool:
    """Check the run directory (a damaged status.json or table stops here, before anything is written),
    create or resume it; True when it already holds this run, finished."""
    if not overwrite:
        run.check_kind()
    status = run.read_status()
    run.check_tables()
    resuming = run.prepare(cfg.to_dict(), cfg.flat(), overwrite=overwrite, metrics=metric_specs(),
                           data={"source": data.source, "format": data.format, "fingerprint": data.fingerprint})
    if resuming and status.get("state") == "finished" and status.get("step", -1) >= cfg.train.steps:
        try:
            contract.check_summary(read_json(run.summary), run.summary)
            if not run.summary.exists():
                raise UserError(f"{run.summary}: missing")
        except UserError as e:  # the test's record is damaged: score the test split again from the checkpoint
            log(f"warning: {str(e).split(';')[0]}; scoring the test split again")
            return False
        log(f"{run.path}: already finished at step {status['step']}; nothing to do")
        return True
    for note in data.notes:
        log(f"note: {note}")
    if not run.split.exists():
        atomic_write(run.split, data.split_record())
    return False


def _record_failure(run: RunDir, step: int, e: BaseException) -> None:
    """status.json says how the run ended when it did not finish (the exception goes on up)."""
    if is_disk_full(e):
        run.set_status("failed", step, f"disk full at step {step} (no space left on device writing "
                                       f"{_full_where(e, run)}); free space and rerun the same command to resume")
    elif isinstance(e, KeyboardInterrupt):
        run.set_status("preempted", step, f"interrupted at step {step}; rerun the same command to resume "
                                          "from the newest checkpoint")
    elif not isinstance(e, SystemExit):
        run.set_status("failed", step, f"{type(e).__name__}: {e}".splitlines()[0][:500])


class _Training:
    """One run's training state: devices, nets and optimizers, the checkpoint (restored from the newest
    intact one), the evaluator, TensorBoard, the timed interval and the best-checkpoint keeper."""

    def __init__(self, cfg: Config, data, run: RunDir, log):
        self.finished = False  # set once status.json says "finished": nothing after that may undo it
        import keras
        import tensorflow as tf

        from gan.evaluators import evaluation
        self.cfg, self.run, self.log = cfg, run, log
        cpus = cpus_given()
        size_thread_pools(cpus, log)
        strategy = make_strategy(cfg.train.devices)
        keras.utils.set_random_seed(cfg.train.seed)
        with strategy.scope():
            self.generator, discriminator, opt_g, opt_d = build_models(cfg)
            self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
            # Seconds of training already spent in the current eval interval (survives preemption).
            interval_var = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.train_step = make_train_step(cfg, strategy, self.generator, discriminator, opt_g, opt_d)
        self.manager = self._restore(dict(generator=self.generator, discriminator=discriminator, opt_g=opt_g,
                                          opt_d=opt_d, step=self.step_var, interval_seconds=interval_var,
                                          **self.train_step.checkpoint_state), discriminator)
        self.start = int(self.step_var.numpy())
        run.truncate_after(self.start)  # rows written after that checkpoint are redone, never duplicated
        log(f"{'resuming' if self.start else 'starting'} {run.path} at step {self.start}/{cfg.train.steps} "
            f"on {strategy.num_replicas_in_sync} device(s); data {data.source} ({data.format}), "
            f"{len(data.train.ids)}/{len(data.val.ids)}/{len(data.test.ids)} images")
        run.set_status("running", self.start)
        self.evaluator = evaluation.Evaluator(cfg, data, MetricPool(cfg.eval.workers or cpus))
        self.writer = tf.summary.create_file_writer(str(run.tensorboard))
        self.progress = Progress(self.start, cfg.train.steps, log)
        self.iterator = iter(strategy.experimental_distribute_dataset(train_pipeline(data.train, cfg, self.start)))
        last_eval = max([int(r["step"]) for r in read_csv(run.timings, ("step",))] + [0])
        self.interval = Interval(interval_var, last_eval=last_eval, batch=cfg.train.batch_size, where={
            "host": socket.gethostname(), "device": device_name(strategy), "cpus": cpus})
        self.best = _best_checkpoint(cfg, run, log)
        self.overlap = cfg.eval.overlap == "on" or (cfg.eval.overlap == "auto"
                                                    and bool(tf.config.list_physical_devices("GPU")))
        self.pending: list = []  # evaluations whose metrics are still computing (overlap)
        self.last_checkpoint, self.saved_step = time.monotonic(), self.start

    def _restore(self, parts: dict, discriminator):
        import tensorflow as tf
        # Dropout's seed generators: without them a resumed U-Net would redraw the masks it already used.
        from gan.models import random_state
        ckpt = tf.train.Checkpoint(**parts, random=random_state_checkpoint(self.generator, discriminator))
        # Nets without random layers (ResNet, hybrid) have no such state: nothing is older about their checkpoints.
        has_random = any(random_state(net) for net in (self.generator, discriminator))
        restore_newest_intact(ckpt, self.run.checkpoints, log=self.log, older=(
            "random", tf.train.Checkpoint(**parts), "written before dropout's state was checkpointed; its masks restart")
            if has_random else None)
        # Built after the restore: it then lists only what is left once damaged checkpoints are set aside.
        return tf.train.CheckpointManager(ckpt, self.run.checkpoints, max_to_keep=self.cfg.train.checkpoints_to_keep,
                                          checkpoint_name=contract.CHECKPOINT_PREFIX)

    def steps_in_call(self, step: int) -> int:
        """Steps the next call trains: `train.steps_per_call`, ending at the next evaluation, log line or the
        run's end, so every one of them falls on a call's last step."""
        t = self.cfg.train
        return max(1, min(t.steps_per_call, t.steps - step, t.eval_every - step % t.eval_every,
                          t.log_every - step % t.log_every))

    def run_steps(self, n: int) -> dict:
        import tensorflow as tf
        return self.train_step(self.iterator) if n == 1 else self.train_step.many(self.iterator, tf.constant(n))

    def log_losses(self, step: int, n: int, losses: dict[str, float]) -> None:
        import tensorflow as tf
        self.progress.update(step, n, losses)
        if step % self.cfg.train.log_every == 0:
            with self.writer.as_default(step=step):
                for k, v in losses.items():
                    tf.summary.scalar(f"loss/{k}", v)

    def evaluate(self, step: int, report) -> None:
        """An evaluation at `step`: its photos generated now; its metrics here, or (overlap) in the pool's
        workers while training goes on, their rows written at the next evaluation or checkpoint, in step
        order. The interval's timings row counts the seconds the loop stood still for evaluations. Results
        are reported (the Tune hook) after any checkpoint of this step, so a trial a scheduler stops on
        its report has written it."""
        t0 = time.perf_counter()
        written = self.collect()  # the previous evaluation's rows first: step order
        weights = self.generator.get_weights()
        self.pending.append(self.evaluator.start(weights, step, self.run, overlap=self.overlap))
        if not self.overlap:
            written += self.collect()
        row = self.interval.close(step, eval_seconds=time.perf_counter() - t0)
        append_csv(self.run.timings, contract.TIMINGS_COLUMNS, [row])
        if self.cfg.train.checkpoint_minutes <= 0:  # on a clock of 0: a checkpoint at every evaluation
            written += self.checkpoint(step)
        self.send(written, report)

    def collect(self) -> list[tuple[int, dict]]:
        """Write the rows of every evaluation still pending, in step order, and offer each to the
        best-checkpoint keeper; [(step, scores)] to report."""
        written = []
        while self.pending:
            pending = self.pending.pop(0)
            scores = self.evaluator.finish(pending, self.run, self.writer)
            if self.best is not None:
                self.best.offer(scores["val"][self.best.metric], pending.step, pending.weights)
            self.log(f"step {pending.step}: " + "  ".join(f"{split} ssim {m['ssim']:.3f} hist {m['hist_corr']:.3f}"
                                                          for split, m in scores.items()))
            written.append((pending.step, scores))
        return written

    def send(self, written: list[tuple[int, dict]], report) -> None:
        if report is not None:
            for step, scores in written:
                report(step, scores, self.manager.latest_checkpoint)

    def checkpoint_due(self, step: int) -> bool:
        minutes = self.cfg.train.checkpoint_minutes
        return minutes > 0 and time.monotonic() - self.last_checkpoint >= 60 * minutes

    def checkpoint(self, step: int, report=None) -> list[tuple[int, dict]]:
        """Both nets, the optimizers and the step: every evaluation before it written first (a resume
        truncates rows past its checkpoint and redoes them, so none is lost or duplicated); the seconds of
        a half-done interval survive in it. Reports what it wrote with `report`, else returns it."""
        written = self.collect()
        self.interval.keep()
        self.manager.save(checkpoint_number=step)
        self.last_checkpoint, self.saved_step = time.monotonic(), step
        self.run.set_status("running", step)
        if report is None:
            return written
        self.send(written, report)
        return []

    def preempted(self, step: int, signal_name: str, checkpoint: bool) -> int:
        if checkpoint:
            self.checkpoint(step)
        self.run.set_status("preempted", step, f"{signal_name} at step {step}; rerun the same command to resume")
        self.log(f"{self.run.path}: {signal_name}, " + (f"checkpointed at step {step}" if checkpoint else
                                                        f"before training resumed at step {step}") + "; rerun to resume")
        return EXIT_PREEMPTED

    def diverged(self, step: int, losses: dict[str, float]) -> int:
        bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(v))
        self.run.set_status("failed", step, f"non-finite loss at step {step}: {bad}")
        self.log(f"{self.run.path}: stopped, non-finite loss at step {step}: {bad}")
        return EXIT_DIVERGED

    def test(self, step: int) -> int:
        """The test split, scored with the last weights or those `eval.select` kept (selected on val)."""
        if self.best is None:
            summary = self.evaluator.test(self.generator.get_weights(), step, self.run,
                                          selected={"rule": "last", "step": step})
        else:
            from gan.inference import build_generator
            weights = self.best.weights(lambda: build_generator(self.cfg))  # replaces a damaged best first
            selected = {"rule": self.cfg.eval.select, "step": self.best.step, "value": self.best.value}
            summary = self.evaluator.test(weights, step, self.run,
                                          selected={**selected, **({"note": self.best.note} if self.best.note else {})})
        self.run.set_status("finished", step)
        self.finished = True
        self.log(f"{self.run.path}: finished {step} steps; test " + "  ".join(
            f"{k} {v['mean']:.3f}" for k, v in summary["test"].items()))
        return 0


def _best_checkpoint(cfg: Config, run: RunDir, log):
    """The best-validation keeper for `eval.select = best_val_<metric>` (None for 'last')."""
    if cfg.eval.select == "last":
        return None
    from gan.checkpoints import BestCheckpoint
    metric = cfg.eval.select.removeprefix("best_val_")
    rows = read_csv(run.fcn_metrics if metric in contract.FCN_METRICS else run.metrics)
    lower_is_better = metric in METRICS and not METRICS[metric].higher_is_better  # FCN metrics: higher
    from gan.inference import build_generator
    return BestCheckpoint(run.checkpoints / contract.BEST, metric, lower_is_better, rows,
                          build=lambda: build_generator(cfg), run_checkpoints=run.checkpoints, log=log)


def _full_where(error: BaseException, run: RunDir) -> str:
    """The file a full disk refused (TensorFlow's checkpoint writer does not name it: its folder)."""
    return str(getattr(error, "filename", None) or run.checkpoints)


def _close_all(log, *closers) -> None:
    """Run every closer. While an error is on its way out (a full disk, say), a closer's own failure is
    logged in one line rather than raised over it; otherwise it is raised."""
    failing = sys.exc_info()[1] is not None
    for close in closers:
        try:
            close()
        except Exception as e:
            if not failing:
                raise
            log(f"warning: while stopping, {getattr(close, '__qualname__', close)} failed too "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
