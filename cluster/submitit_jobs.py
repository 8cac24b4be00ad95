"""submitit: executors and a checkpointable training job (dinov2-style launcher support).

`TrainJob` runs `gan.train.train`; when SLURM warns of a timeout or
preemption, submitit calls `checkpoint()`, which resubmits the same job; the
rerun finds the run directory and resumes at its last checkpoint (rows after
it are dropped and redone, so none is duplicated or missing).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import submitit

from gan.config import Config
from gan.errors import EXIT_PREEMPTED
from gan.quiet import quiet_tensorflow


class TrainJob(submitit.helpers.Checkpointable):
    def __call__(self, config: dict[str, Any], out: str) -> dict[str, Any]:
        from gan.rundir import RunDir
        from gan.train import run_path, train
        quiet_tensorflow()
        cfg = Config.from_dict(config)
        code = train(cfg, out)
        run = RunDir(run_path(cfg, out))
        if code == EXIT_PREEMPTED:  # the trainer stopped on TERM/USR1/USR2 and checkpointed: resubmit ourselves
            _requeue_through_submitit()
            raise submitit.core.utils.UncompletedJobError(f"{run.path}: preempted, resubmit to resume")
        return {"run": str(run.path), "exit_code": code, **run.read_status()}

    def checkpoint(self, config: dict[str, Any], out: str) -> submitit.helpers.DelayedSubmission:
        # The trainer checkpoints at every evaluation; the resubmitted job resumes from there.
        return submitit.helpers.DelayedSubmission(TrainJob(), config, out)


def _requeue_through_submitit() -> None:
    """On SLURM, run submitit's own checkpoint-and-requeue (what its USR2 handler does; it exits).

    A preemption sends SIGTERM and then submitit's USR2. While the trainer runs, both only make it
    checkpoint and return (submitit's handler, had it run then, would exit from inside a checkpoint
    write and fail the job); the requeue happens here, after the checkpoint, or - for a USR2 that
    arrives after the trainer returned - in submitit's handler, with nothing left to break.
    """
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":  # how submitit tells its SLURM jobs; a direct call has none
        return
    if _cancelled():
        return
    usr = signal.Signals[f"SIG{submitit.slurm.slurm.SlurmJobEnvironment.USR_SIG}"]
    handler = signal.getsignal(usr)
    if callable(handler):
        signal.signal(usr, signal.SIG_IGN)  # USR2 may still arrive: one requeue is enough
        handler(usr, None)


def _cancelled() -> bool:
    """Whether SLURM is ending this job for good: `scancel` (a user's, or the settle driver's when it is
    stopped) sends the same SIGTERM as a preemption, but its job is already CANCELLED (completing) and must
    not requeue itself. A preemption or a time limit's warning leaves the job RUNNING."""
    import subprocess
    try:
        done = subprocess.run(["squeue", "-h", "-j", os.environ.get("SLURM_JOB_ID", ""), "-o", "%T"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False  # no answer: requeue as for a preemption (the run resumes; nothing is lost)
    return done.stdout.strip() in ("CANCELLED", "COMPLETING")


def refuse_what_no_node_meets(partition: str | None, cpus: int, gpus: int, mem_gb: int) -> None:
    """A task no node of the partition can hold would wait in the queue for ever (reason: Resources): refused
    in one line, naming the largest node, when SLURM answers `sinfo` (not on a machine without SLURM)."""
    import re
    import shutil
    import subprocess

    from gan.errors import UserError
    if not shutil.which("sinfo"):
        return
    cmd = ["sinfo", "-h", "-N", "-o", "%c|%m|%G", *(["-p", partition] if partition else [])]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return
    if done.returncode:
        return  # no SLURM to ask here (sbatch will say so itself)
    nodes = []
    for line in done.stdout.splitlines():
        node_cpus, node_mem, gres = (line.split("|") + ["", "", ""])[:3]
        node_gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        if node_cpus.strip().isdigit():
            nodes.append((int(node_cpus), int(re.sub(r"\D", "", node_mem) or 0), node_gpus))
    if not nodes or any(c >= cpus and m >= mem_gb * 1024 and g >= gpus for c, m, g in nodes):
        return
    c, m, g = max(nodes, key=lambda n: (n[2], n[0], n[1]))
    where = f"partition {partition}" if partition else "the cluster"
    raise UserError(f"--cpus-per-trial {cpus} --gpus-per-trial {gpus} --mem {mem_gb}: no node of {where} has that "
                    f"much (the largest: {c} CPUs, {g} GPUs, {m / 1024:g} GB); ask for less, or another --partition")


def make_executor(folder: str, *, cluster: str | None = None, partition: str | None = None, gpus: int = 0,
                  cpus: int = 4, mem_gb: int = 16, timeout_min: int = 24 * 60, account: str | None = None,
                  array_parallelism: int = 16, name: str = "pix2pix",
                  setup: list[str] | tuple[str, ...] = ()) -> submitit.AutoExecutor:
    """SLURM on a cluster, local processes elsewhere (or as `cluster` says: 'slurm', 'local', 'debug').

    `setup`: extra shell lines run before the task (after the one that exports the fast path's
    LD_PRELOAD; local tasks inherit it from the submitting process, which `run_main` started on it)."""
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": timeout_min, "name": name, "cpus_per_task": cpus,
                              "mem_gb": mem_gb, "slurm_array_parallelism": array_parallelism,
                              "slurm_signal_delay_s": 120,
                              # The fast path on the compute node: its own allocator path, found there.
                              "slurm_setup": [f"export $({sys.executable} -m gan.fastpath)", *setup]}
    if gpus:
        params["gpus_per_node"] = gpus
    if partition:
        params["slurm_partition"] = partition
    if account:
        params["slurm_account"] = account
    executor.update_parameters(**params)
    return executor


def submit_grid(executor: submitit.AutoExecutor, configs: list[Config], out: str) -> list[submitit.Job]:
    """One array job over the generator x sweep grid."""
    with _controllers_write_to_their_folder(executor):
        return executor.map_array(TrainJob(), [c.with_absolute_paths().to_dict() for c in configs],
                                  [str(Path(out).resolve())] * len(configs))


@contextlib.contextmanager
def _controllers_write_to_their_folder(executor: submitit.AutoExecutor):
    """A local job's controller process (submitit's, one per task) inherits the driver's stderr, and Ctrl-C
    or a cancel makes it print a KeyboardInterrupt traceback there. Started with stderr on a file in the
    logs folder, the terminal keeps the driver's one line; the tasks' own logs are unchanged."""
    if executor.cluster != "local":
        yield
        return
    folder = Path(executor.folder)
    folder.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(folder / "controllers.err", "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def wait_for(jobs: list[submitit.Job], log=print) -> int:
    """Wait for every job and say how each ended, in one line each; the number that failed (one bad task must
    not hide the others)."""
    failed = 0
    for job in jobs:
        try:
            result = job.result()
            log(f"job {job.job_id}: {result['state']} at step {result['step']} ({result['run']})")
        except Exception as e:  # noqa: BLE001 - any task's failure is reported and counted, never swallowed
            failed += 1
            log(f"job {job.job_id}: failed: {why(e)} (log: {job.paths.stderr})")
    return failed


def why(error: Exception) -> str:
    """The line that says why a task failed: the last exception line of the trace submitit hands back
    ('UserError: --out ...: in use by another trainer'), else the error's last line."""
    import re
    lines = str(error).strip().splitlines() or [type(error).__name__]
    raised = [line for line in lines if re.match(r"[\w.]*(Error|Exception|Interrupt)\b", line)]
    return (raised or lines)[-1].split("gan.errors.", 1)[-1].strip()


def _state(cfg: Config, out: str) -> str:
    """The run's state as its status file says ('' before it has one)."""
    from gan.contract import run_path
    from gan.rundir import RunDir
    return RunDir(run_path(out, cfg.experiment, cfg.name)).read_status().get("state", "")


def settle_rounds(plan, executor: submitit.AutoExecutor, *, out: str, experiment: str, resume: str,
                  readout) -> int:
    """The settle rule's rounds as submitit arrays (cluster/sweep.py's `settle_loop`): each round's runs are one
    array, waited for before the next look. Interrupted (Ctrl-C, TERM), the round's jobs are cancelled (on SLURM
    each checkpoints, is marked preempted and does not requeue itself) and `resume` continues them.
    `plan` is the SweepPlan; `readout` the command's (settle_start, settle_look, settle_done)."""
    from cluster.plan import run_name
    from cluster.sweep import settle_loop
    from gan.config import make_config

    def train(todo: list[dict]) -> int | None:
        configs = [make_config(plan.preset, {**plan.overrides, **values, "run_name": run_name(values),
                                                 "experiment": experiment}) for values in todo]
        jobs = submit_grid(executor, configs, out)
        print(f"submitted: {', '.join(f'{job.job_id} {cfg.name}' for job, cfg in zip(jobs, configs))}", flush=True)
        try:
            failed = wait_for(jobs)
        except KeyboardInterrupt:
            for job in jobs:
                job.cancel(check=False)  # SLURM: scancel's TERM, the trainer checkpoints and marks its run preempted
            print(f"interrupted: this round's {len(jobs)} job(s) cancelled, their runs kept; continue with: {resume}")
            return EXIT_PREEMPTED
        if failed and any(_state(cfg, out) == "preempted" for cfg in configs):  # stopped, not broken (a Ctrl-C that
            print(f"interrupted: runs of this round were stopped and kept; continue with: {resume}")  # reached the
            return EXIT_PREEMPTED  # tasks before the driver, a TERM to the tasks alone)
        if failed:
            print(f"settle: {failed} run(s) did not finish; fix the cause and continue with: {resume}")
            return 1
        return None

    return settle_loop(plan, Path(out) / experiment, readout, train)
