"""The cost model of a trial and of a sweep on GPUs: from the nets' FLOPs, the device's rate and the host
costs measured on this machine, not from any one study's wall clock.

Per trial (one generator, one image size, one device):

- GPU ms per step = the step's FLOPs / (the device's dense rate at the run's precision x a batch-1
  efficiency) + the host's ms per step, measured here with the project's own step at a near-zero-FLOP
  size: a call's own cost (Python, the `tf.function` call, the strategy; divided by
  `train.steps_per_call`) and the graph's cost per step beyond its FLOPs (dispatching some hundreds of
  ops; on a GPU their launches, which XLA fuses: the CPU's figure is an upper bound there);
- an evaluation's seconds: generating the train subset and the val split on the device (inference FLOPs),
  and the four metrics on the CPU (measured per image at this size, over the host's cores); with
  `eval.overlap` only the generation stops training;
- checkpoint bytes (both nets, Adam's two slots) and the write rate they make on the clock
  (`train.checkpoint_minutes`; 0 = at every evaluation);
- the share of wall time the GPU trains.

Per sweep (N trials on M nodes of G GPUs, P trials packed per GPU): the filesystem's write rate, the disk
peak (`train.checkpoints_to_keep` checkpoints per trial, and the best generator), the head node's load
(results reported per second) and the wall time. Plain arithmetic over measured inputs: `jobs/bench.py
--plan` measures them and prints the table; the docs' plans are derived from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Dense (no sparsity) tensor rates from the vendors' data sheets, TFLOP/s: fp32 (CUDA cores), tf32 (what
# TensorFlow uses for float32 convolutions and matmuls on Ampere and later), bf16/fp16 (mixed precision).
# Batch 1 at 256 px keeps a GPU far from its peak (small grids, many short kernels): the efficiency is an
# assumption, overridable (--efficiency), and replaced by a lent GPU's measured step (--measured-ms).
DEVICES = {
    "V100": {"fp32": 15.7, "tf32": 15.7, "bf16": 125.0},  # no TF32: float32 runs on CUDA cores; fp16 tensor cores
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0},
    "H100": {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0},
    "H200": {"fp32": 67.0, "tf32": 495.0, "bf16": 989.0},
}
BATCH1_EFFICIENCY = 0.15  # share of the dense rate a batch-1, 256 px conv net sustains (assumption)


@dataclass
class HostCosts:
    """What this machine measured (jobs/bench.py --plan)."""

    host_ms_per_call: float  # a tf.function call's own cost (Python, the call, the strategy): / steps_per_call
    metric_ms_per_image: float  # the four metrics of one image at the trial's size, one core
    cores: int  # CPU cores per trial for the metrics
    write_gb_per_s: float = 1.0  # the checkpoint filesystem's write rate per trial (assumption, --write-gbps)
    host_ms_per_step: float = 0.0  # the graph's cost per step beyond its FLOPs (op dispatch): every step pays it


@dataclass
class TrialPlan:
    generator: str
    size: int
    device: str
    precision: str
    step_gflop: float
    infer_gflop: float
    checkpoint_bytes: int  # both nets and Adam's two slots, float32
    best_bytes: int = 0  # the best generator's weights (eval.select best_val_*)
    steps: int = 60_000
    eval_every: int = 1_000
    eval_images: int = 100  # the train subset and the val split
    checkpoint_minutes: float = 10.0
    steps_per_call: int = 1
    overlap: bool = True
    efficiency: float = BATCH1_EFFICIENCY
    measured_ms: float | None = None  # a lent GPU's measured ms per step replaces the FLOP estimate
    figures: dict = field(default_factory=dict)

    def rate_tflops(self) -> float:
        kind = "bf16" if self.precision.startswith("mixed") else "tf32"
        return DEVICES[self.device][kind]

    def predict(self, host: HostCosts) -> dict:
        """Every per-trial figure, in seconds, bytes and shares."""
        rate = self.rate_tflops() * 1e12 * self.efficiency
        host_ms = host.host_ms_per_call / self.steps_per_call + host.host_ms_per_step
        device_ms = self.measured_ms if self.measured_ms is not None else self.step_gflop * 1e9 / rate * 1e3
        step_ms = device_ms + (0.0 if self.measured_ms is not None else host_ms)
        interval_s = self.eval_every * step_ms / 1e3
        generate_s = self.eval_images * self.infer_gflop * 1e9 / rate
        metrics_s = self.eval_images * host.metric_ms_per_image / 1e3 / max(1, host.cores)
        # Overlapped, the metrics of one evaluation must finish within the next interval or training waits.
        blocking_s = generate_s + (max(0.0, metrics_s - interval_s) if self.overlap else metrics_s)
        evaluations = math.ceil(self.steps / self.eval_every)
        train_s = self.steps * step_ms / 1e3
        wall_guess = train_s + evaluations * blocking_s
        every_s = 60 * self.checkpoint_minutes if self.checkpoint_minutes > 0 else interval_s + blocking_s
        checkpoints = max(1, math.floor(wall_guess / every_s)) + 1  # the clock's, and the end's
        write_s = self.checkpoint_bytes / (host.write_gb_per_s * 1e9)
        wall_s = wall_guess + checkpoints * write_s
        self.figures = {
            "step_ms": step_ms, "device_ms": device_ms, "host_ms": host_ms, "host_share": host_ms / step_ms,
            "interval_s": interval_s, "eval_generate_s": generate_s, "eval_metrics_s": metrics_s,
            "eval_blocking_s": blocking_s, "evaluations": evaluations, "checkpoints": checkpoints,
            "checkpoint_gb": self.checkpoint_bytes / 1e9, "best_gb": self.best_bytes / 1e9, "checkpoint_mb_per_s": self.checkpoint_bytes / every_s / 1e6,
            "train_s": train_s, "wall_s": wall_s, "gpu_busy": train_s / wall_s,
        }
        return self.figures


def sweep(trial: dict, trials: int, nodes: int, gpus_per_node: int, per_gpu: int, keep: int,
          reports_per_eval: int = 1) -> dict:
    """A sweep of `trials` trials like `trial` (TrialPlan.predict's figures), `per_gpu` packed per GPU."""
    slots = nodes * gpus_per_node * per_gpu
    concurrent = min(trials, slots)
    # Packed trials share the device: each runs ~per_gpu times slower while the GPU is the bottleneck.
    slowdown = per_gpu if per_gpu > 1 else 1
    waves = math.ceil(trials / slots)
    return {
        "trials": trials, "nodes": nodes, "concurrent": concurrent, "waves": waves,
        "wall_h": waves * trial["wall_s"] * slowdown / 3600,
        "gpu_h": trials * trial["wall_s"] / 3600,
        "write_mb_per_s": concurrent * trial["checkpoint_mb_per_s"] / slowdown,
        # Each trial keeps `keep` checkpoints, writes one more before the oldest goes, and its best generator.
        "disk_peak_gb": trials * ((keep + 1) * trial["checkpoint_gb"] + trial["best_gb"]),
        "head_reports_per_s": concurrent * reports_per_eval / ((trial["interval_s"] + trial["eval_blocking_s"]) * slowdown),
    }


def as_dict(plan: TrialPlan) -> dict:
    return asdict(plan)


class CheckpointSizes:
    """Checkpoint bytes per model config and image size (gan/models `checkpoint_bytes`), kept in a JSON file
    in the suite's cache: sizing a net builds it, which imports TensorFlow (seconds), and every launch's disk
    check sizes its trials' nets; an answer is reused only for nets built by the same code (a digest of
    the files that define them: gan/models/ and $PIX2PIX_GENERATORS) and the same Keras."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.added = False
        try:
            known = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, unreadable or damaged: a cache, rebuilt (and rewritten) as used
            known = {}
        self.known = ({k: v for k, v in known.items() if type(v) is int and v > 0}  # an edited entry is sized again
                      if isinstance(known, dict) else {})
        self._code = _model_code_digest()

    def bytes(self, model_cfg, size: int) -> int:
        from gan.models import checkpoint_bytes
        key = hashlib.sha256(json.dumps([asdict(model_cfg), size, self._code], sort_keys=True,
                                        default=str).encode()).hexdigest()[:32]
        if key not in self.known:
            self.known[key], self.added = checkpoint_bytes(model_cfg, size), True
        return self.known[key]

    def save(self, log=print) -> None:
        """Keep what was added; a cache that cannot be written (read-only, full) costs the next launch the
        build, which it says."""
        if not self.added:
            return
        from gan.files import write_json
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, self.known)
        except OSError as e:
            log(f"note: net sizes not kept in {self.path} ({e.strerror or e}); the next launch sizes the nets again")


def _model_code_digest() -> str:
    import gan.models
    from gan.provenance import version
    h = hashlib.sha256(version("keras", "keras", "keras-nightly").encode())
    folders = [Path(gan.models.__file__).parent, *([Path(os.environ[gan.models.EXTRA_ENV])]
                                                   if os.environ.get(gan.models.EXTRA_ENV) else [])]
    for folder in folders:
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else []:
            h.update(str(path).encode())
            h.update(path.read_bytes())
    return h.hexdigest()
