"""What a run says while it trains: the timing of each evaluation interval (timings.csv) and the progress
line or bar."""

from __future__ import annotations

import resource
import sys
import time


def system_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


class Interval:
    """Timing of the current evaluation interval: seconds of training steps (carried over a preemption
    by the checkpointed `seconds_var`), their kernel CPU seconds, and the wall-clock span."""

    def __init__(self, seconds_var, last_eval: int, batch: int, where: dict):
        self.seconds_var, self.last_eval, self.batch, self.where = seconds_var, last_eval, batch, where
        self.seconds, self.kernel, self.started = float(seconds_var.numpy()), 0.0, time.time()

    def timed(self, step_fn):
        tick, kernel = time.perf_counter(), system_seconds()
        out = step_fn()
        self.seconds += time.perf_counter() - tick
        self.kernel += system_seconds() - kernel
        return out

    def keep(self) -> None:
        self.seconds_var.assign(self.seconds)

    def close(self, step: int, eval_seconds: float) -> dict:
        """The timings.csv row of the interval that ends at `step`; the next one starts now."""
        steps, seconds = step - self.last_eval, self.seconds
        row = {"step": step, "steps": steps, "train_seconds": round(seconds, 4),
               "steps_per_second": round(steps / seconds, 4), "images_per_second": round(steps * self.batch / seconds, 4),
               "eval_seconds": round(eval_seconds, 4), "system_seconds": round(self.kernel, 4), **self.where,
               "started": round(self.started, 3), "ended": round(time.time(), 3)}
        self.last_eval, self.seconds, self.kernel, self.started = step, 0.0, 0.0, time.time()
        self.seconds_var.assign(0.0)
        return row


class Progress:
    """A tqdm bar in a terminal, a plain line every 10 % of the run otherwise."""

    def __init__(self, start: int, total: int, log):
        self.log, self.total, self.bar = log, total, None
        self.every = max(1, total // 10)
        self.t0, self.start = time.perf_counter(), start
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, n: int, losses: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(g=f"{losses['gen_total']:.3f}", d=f"{losses['disc']:.3f}", refresh=False)
        elif step // self.every > (step - n) // self.every:  # crossed a tenth of the run in these n steps
            rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            self.log(f"step {step}/{self.total}  g {losses['gen_total']:.4f} (gan {losses['gen_gan']:.4f}, "
                     f"l1 {losses['gen_l1']:.4f})  d {losses['disc']:.4f}  {rate:.2f} steps/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
