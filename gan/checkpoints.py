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

from gan.contract import CHECKPOINT_PREFIX, CHECKPOINT_STATE, DAMAGED


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


def keep_newest_only(directory: str | Path) -> int:
    """Delete every checkpoint of `directory` but the newest (by step), rewriting the state file; returns
    the bytes freed. For runs that will not train on (a sweep's scheduler stopped them): the newest is what
    evaluation and export use. No TensorFlow: files and the state file's text only."""
    import re
    directory = Path(directory)
    steps = sorted(int(m.group(1)) for f in directory.glob(f"{CHECKPOINT_PREFIX}-*.index")
                   if (m := re.fullmatch(rf"{CHECKPOINT_PREFIX}-(\d+)\.index", f.name)))
    freed = 0
    for step in steps[:-1]:
        for f in directory.glob(f"{CHECKPOINT_PREFIX}-{step}.*"):
            if not f.name.endswith(DAMAGED):
                freed += f.stat().st_size
                f.unlink()
    if steps:
        _set_aside(directory, [], [f"{CHECKPOINT_PREFIX}-{steps[-1]}"])
    return freed


class BestCheckpoint:
    """The generator at the best validation score so far (`eval.select = best_val_<metric>`), kept in
    `checkpoints/best/` beside the run's own checkpoints.

    The best score so far is re-read from the run's evaluation rows on resume (rows past the resumed
    checkpoint are dropped first, and a resumed run redoes those steps exactly, so a best checkpoint saved
    by them is written again with the same weights).

    A best checkpoint that cannot be read (a truncated copy, a full disk) is set aside, never trusted:
    the best of the run's own intact checkpoints by the same validation rows takes its place, said in one
    warning and recorded as `note` in the test's `selected` record, so the run still ends and its test is
    scored with the best model the run can still show.
    """

    def __init__(self, directory: Path, metric: str, lower_is_better: bool, rows: list[dict],
                 build, run_checkpoints: Path | None = None, log=print):
        import tensorflow as tf
        self.metric, self.lower, self.log = metric, lower_is_better, log
        self.directory, self.run_checkpoints = Path(directory), run_checkpoints
        self.build, self.note, self.lost = build, "", None
        # Its own copy of the generator, whose weights are set to those of the evaluation it keeps: the
        # training model has moved on when an overlapped evaluation's score arrives. One manager for every
        # save, so a replaced checkpoint is the one the next save retires.
        self.keeper = build()
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(generator=self.keeper), str(directory),
                                                  max_to_keep=1, checkpoint_name=CHECKPOINT_PREFIX)
        self.scored = {int(r["step"]): float(r[metric]) for r in rows if r.get("split") == "val" and r.get(metric)}
        best = self._best_of(self.scored)
        self.value, self.step = (self.scored[best], best) if best is not None else (None, None)
        if self.manager.latest_checkpoint is not None and not readable(self.manager.latest_checkpoint):
            self._replace_damaged()

    def _best_of(self, scored: dict[int, float]) -> int | None:
        if not scored:
            return None
        return (min if self.lower else max)(scored, key=lambda step: (scored[step], -step))

    def offer(self, value: float, step: int, weights: list) -> None:
        """Keep the generator's `weights` if `value` (validation `metric` at `step`) beats the best so far."""
        self.scored[step] = value
        better = self.value is None or (value < self.value if self.lower else value > self.value)
        if better or self.manager.latest_checkpoint is None:
            self.value, self.step = value, step
            self.keeper.set_weights(weights)
            self.manager.save(checkpoint_number=step)
            if self.lost is not None:  # the note names the step the test uses, whichever it is
                self.note = (f"the best checkpoint (step {self.lost}) could not be read; the best of the intact "
                             f"checkpoints and the later evaluations by the same validation {self.metric} "
                             f"(step {step}) was used")

    def _replace_damaged(self) -> None:
        """Set the unreadable best checkpoint aside; keep instead the run's intact checkpoint with the best
        validation score. With none left, the best recorded score still stands as the bar a later
        evaluation must beat to be kept (the step it names has no weights left, said in the note)."""
        import tensorflow as tf
        damaged = self.manager.latest_checkpoint
        _set_aside(self.directory, [damaged], [])
        intact = {}
        if self.run_checkpoints is not None:
            state = tf.train.get_checkpoint_state(str(self.run_checkpoints))
            for path in (state.all_model_checkpoint_paths if state else []):
                path = str(self.run_checkpoints / Path(path).name)
                step = int(path.rsplit("-", 1)[1])
                if step in self.scored and readable(path):
                    intact[step] = path
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(generator=self.keeper), str(self.directory),
                                                  max_to_keep=1, checkpoint_name=CHECKPOINT_PREFIX)
        lost = self.lost = damaged.rsplit("-", 1)[1]
        step = self._best_of({s: self.scored[s] for s in intact})
        if step is None:
            self.value = self.step = None
            self.note = f"the best checkpoint (step {lost}) could not be read and no intact checkpoint had a score"
            self.log(f"warning: {damaged} cannot be read; set aside. {self.note}: the best of the steps still "
                     "to come is kept")
            return
        tf.train.Checkpoint(generator=self.keeper).restore(intact[step]).expect_partial()
        self.manager.save(checkpoint_number=step)
        self.value, self.step = self.scored[step], step
        self.note = (f"the best checkpoint (step {lost}) could not be read; the best intact one by the same "
                     f"validation {self.metric} (step {step}) was used")
        self.log(f"warning: {damaged} cannot be read; set aside. Using step {step} instead "
                 f"(val {self.metric} {self.value:.4f}), the best of the run's intact checkpoints")

    def weights(self, build_generator) -> list:
        """The kept generator's weights, restored into a model from `build_generator()`; a best checkpoint
        damaged since it was written is replaced first (see the class)."""
        import tensorflow as tf
        if self.manager.latest_checkpoint is None or not readable(self.manager.latest_checkpoint):
            if self.manager.latest_checkpoint is not None:
                self._replace_damaged()
            if self.manager.latest_checkpoint is None:
                from gan.errors import UserError
                raise UserError(f"{self.directory}: no readable best checkpoint ({self.note or 'none was kept'}); "
                                "extend the run (--train.steps) to select one again")
        model = build_generator()
        tf.train.Checkpoint(generator=model).restore(self.manager.latest_checkpoint).expect_partial()
        return model.get_weights()


def readable(path: str) -> bool:
    """Every tensor of the checkpoint at `path` can be read (a truncated or corrupted data file cannot)."""
    import tensorflow as tf
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    # The same errors restore_newest_intact meets for damaged files.
    except (tf.errors.OpError, ValueError, IndexError, OSError):
        return False
    return True
