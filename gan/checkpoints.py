"""Restore the newest checkpoint that can be read; set damaged ones aside.

A checkpoint can be damaged by a node that died mid-write, a full disk or a
truncated copy. `tf.train.CheckpointManager` only knows the newest one, so a
damaged newest checkpoint would block a run for good although an intact older
one is kept. `restore_newest_intact` tries them newest first; with
`set_aside` (the trainer) a damaged one's files are renamed `*.damaged` and
the manager's state file is rewritten without it, so the next save and
every later restore see a consistent list.
"""

from __future__ import annotations

from pathlib import Path

from gan.contract import CHECKPOINT_STATE, DAMAGED


def restore_newest_intact(checkpoint, directory: str | Path, set_aside: bool = True, log=print,
                          only: str | None = None, older: tuple[str, object, str] | None = None,
                          resumed: bool = True) -> str | None:
    """Restore `checkpoint` from the newest readable checkpoint in `directory` (or exactly `only`);
    returns its path, or None when there is none. Damaged ones are named in a warning.

    `older` = (name, checkpoint without that part, note): a checkpoint written before `name` was part
    of it (its index has no `name/` entry) is restored through the second object, and the note logged. `resumed`:
    the caller trains on from it (the warning then says the later steps are redone)."""
    import tensorflow as tf
    directory = Path(directory)
    state = tf.train.get_checkpoint_state(str(directory))
    candidates = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in candidates:
        candidates.append(state.model_checkpoint_path)
    if only is not None:
        candidates = [only]
    damaged = []
    for path in reversed(candidates):
        path = str(directory / Path(path).name)
        try:
            target = checkpoint
            if older is not None and not any(name.startswith(older[0] + "/")
                                             for name, _ in tf.train.list_variables(path)):
                target = older[1]
                log(f"note: {path}: {older[2]}")
            target.restore(path).assert_existing_objects_matched()
        # What TF raises for a damaged file varies with the damage: OpError (DataLoss, NotFound, ...),
        # IndexError ("Read less bytes than requested"), AssertionError/ValueError (objects not matched).
        except (tf.errors.OpError, AssertionError, ValueError, IndexError, OSError) as e:
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            damaged.append(path)
            log(f"warning: checkpoint {path} cannot be restored ({type(e).__name__}: {reason})"
                + ("; set aside" if set_aside else ""))
            continue
        if damaged:
            log(f"warning: resuming from the older checkpoint {path}; the steps after it are redone" if resumed
                else f"warning: using the older checkpoint {path}")
        if set_aside and damaged:
            _set_aside(directory, damaged, [str(directory / Path(p).name) for p in candidates if
                                            str(directory / Path(p).name) not in damaged])
        return path
    if set_aside and damaged:
        _set_aside(directory, damaged, [])
    return None


def _set_aside(directory: Path, damaged: list[str], kept: list[str]) -> None:
    from gan.files import atomic_write
    for path in damaged:
        for f in directory.glob(Path(path).name + ".*"):
            f.rename(f.with_name(f.name + DAMAGED))
    state_file = directory / CHECKPOINT_STATE
    if kept:  # TensorFlow's CheckpointState text format, written here: its writer is a deprecated v1 API
        names = [Path(p).name for p in kept]
        atomic_write(state_file, f'model_checkpoint_path: "{names[-1]}"\n'
                     + "".join(f'all_model_checkpoint_paths: "{n}"\n' for n in names))
    else:
        state_file.unlink(missing_ok=True)


class BestCheckpoint:
    """The generator at the best validation score so far (`eval.select = best_val_<metric>`), kept in
    `checkpoints/best/` beside the run's own checkpoints.

    The best score so far is re-read from the run's evaluation rows on resume (rows past the resumed
    checkpoint are dropped first, and a resumed run redoes those steps exactly, so a best checkpoint saved
    by them is written again with the same weights).
    """

    def __init__(self, generator, directory: Path, metric: str, lower_is_better: bool, rows: list[dict]):
        import tensorflow as tf
        self.metric, self.lower = metric, lower_is_better
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(generator=generator), str(directory),
                                                  max_to_keep=1)
        scored = [(float(r[metric]), int(r["step"])) for r in rows if r.get("split") == "val" and r.get(metric)]
        best = (min if lower_is_better else max)(scored, key=lambda t: t[0], default=None)
        self.value, self.step = best if best else (None, None)

    def offer(self, value: float, step: int) -> None:
        """Keep the generator if `value` (validation `metric` at `step`) beats the best so far."""
        better = self.value is None or (value < self.value if self.lower else value > self.value)
        if better or self.manager.latest_checkpoint is None:
            self.value, self.step = value, step
            self.manager.save(checkpoint_number=step)

    def weights(self, build_generator) -> list:
        """The kept generator's weights, restored into a model from `build_generator()`."""
        import tensorflow as tf
        model = build_generator()
        tf.train.Checkpoint(generator=model).restore(self.manager.latest_checkpoint).expect_partial()
        return model.get_weights()
