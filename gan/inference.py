"""Inference: build the nets, run a generator on uint8 label maps, restore it from a run, export it.

`Generator` is a single-device copy of a generator: images are generated one
at a time with `training=True`, as pix2pix does at test time (batch
statistics of the image, dropout on), so results do not depend on the
batch. Dropout draws one fixed mask per run: its seed generators restart
from values derived from `train.seed` before every image, so a label map
always gives the same photo - in the evaluations during training, in
`jobs/evaluate.py` (which reproduces the run's own rows exactly), and in the
exported SavedModel. `restore_generator` reads the newest intact checkpoint
of a run (read-only), `export_saved_model` writes a SavedModel with uint8 in
and out that computes exactly what `Generator` does.
"""

from __future__ import annotations

import numpy as np

from gan.config import Config
from gan.contract import check_config, checkpoint_file
from gan.datasets.pixels import to_uint8, to_unit
from gan.rundir import RunDir
from gan.files import atomic_write, read_json


def build_generator(cfg: Config):
    from gan import models  # Keras loads here, not when a command merely checks its input
    return models.build_generator(cfg.model, cfg.data.image_size)


def build_discriminator(cfg: Config):
    from gan import models
    return models.build_discriminator(cfg.model, cfg.data.image_size)


def noise_starts(states: list, seed: int) -> list[np.ndarray]:
    """The fixed start of each dropout seed generator for a run of training seed `seed`."""
    return [np.array([np.random.default_rng([seed, i]).integers(1, 2 ** 31 - 1), 0], state.dtype)
            for i, state in enumerate(states)]


def generate_one(model, states: list, starts: list, image):
    """One [1, S, S, 3] image in [-1, 1] through `model` as at test time, dropout restarted at `starts`."""
    for state, start in zip(states, starts):
        state.assign(start)
    return model(image, training=True)


class Generator:
    """Single-device inference copy of a generator: uint8 label maps in, uint8 photos out."""

    def __init__(self, cfg: Config, model=None):
        import tensorflow as tf

        from gan.models import random_state
        self.model = model if model is not None else build_generator(cfg)
        self.noise = random_state(self.model)
        self.noise_starts = noise_starts(self.noise, cfg.train.seed)
        self._call = tf.function(lambda x: generate_one(self.model, self.noise, self.noise_starts, x),
                                 reduce_retracing=True, autograph=False)  # a loop over Python lists only

    def set_weights(self, weights) -> None:
        self.model.set_weights(weights)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return np.stack([to_uint8(self._call(to_unit(image[None]))[0]).numpy() for image in inputs])


def sample_grid(inputs: np.ndarray, targets: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Rows of input | target | output."""
    return np.concatenate([np.concatenate(row, axis=1) for row in zip(inputs, targets, outputs)], axis=0)


def write_png(path, image: np.ndarray) -> None:
    import cv2
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic_write(path, encoded.tobytes())


def restore_generator(run_path, step: int | None = None, last: bool = False, log=print):
    """(config, Generator, step) from a run directory's checkpoint.

    Default: the model the run's test was scored with - for `eval.select best_val_<metric>` the kept best
    checkpoint (`checkpoints/best/`), else the newest. `step`: that checkpoint, among the run's own or the
    best; `last`: the newest, whatever the run selected."""
    from pathlib import Path

    from gan.contract import BEST, check_summary
    from gan.errors import UserError

    run = RunDir(Path(run_path))
    if not run.config.exists():
        raise UserError(f"{run.path}: not a run directory (config.json missing)")
    cfg = Config.from_dict(check_config(read_json(run.config), run.config)["config"])
    best = run.checkpoints / BEST
    folder, only = run.checkpoints, None
    if step is not None:
        found = [f / checkpoint_file(step) for f in (run.checkpoints, best) if (f / f"{checkpoint_file(step)}.index").exists()]
        if not found:
            raise UserError(f"--step {step}: no checkpoint {checkpoint_file(step)} in {run.checkpoints} or {best}")
        folder, only = found[0].parent, str(found[0])
    import tensorflow as tf  # here: a mistyped --step is refused before TensorFlow starts

    from gan.checkpoints import restore_newest_intact
    if step is None and not last and cfg.eval.select != "last":
        selected = (check_summary(read_json(run.summary), run.summary).get("selected", {})
                    if run.summary.exists() else {})
        if selected.get("step") is not None:
            only = str(best / checkpoint_file(selected['step']))
            if not Path(only + ".index").exists():
                raise UserError(f"{run.path}: its test was scored with the best checkpoint (step "
                                f"{int(selected['step'])}, {cfg.eval.select}), which is not in {best}; "
                                "pass --last for the newest checkpoint, or --step N")
            folder = best
        elif tf.train.get_checkpoint_state(str(best)) is not None:
            folder = best  # an unfinished run: the best so far
        log(f"{run.path}: {cfg.eval.select} selects the best checkpoint (--last for the newest)")
    if only is None and tf.train.get_checkpoint_state(str(folder)) is None:
        raise UserError(f"{run.checkpoints}: no checkpoint yet")
    generator = Generator(cfg)
    step_var = tf.Variable(0, dtype=tf.int64)
    # Read-only: a damaged checkpoint is skipped and named, never moved (the trainer may own the run).
    parts = {"generator": generator.model} if folder == best else {"generator": generator.model, "step": step_var}
    restored = restore_newest_intact(_GeneratorCheckpoint(tf.train.Checkpoint(**parts)),
                                     folder, set_aside=False, only=only, resumed=False)
    if restored is None:
        raise UserError(f"{folder}: no checkpoint that can be restored")
    # A best checkpoint holds the generator alone: its step is in its name.
    return cfg, generator, int(step_var.numpy()) if folder != best else int(restored.rsplit("-", 1)[1])


class _GeneratorCheckpoint:
    """A checkpoint of the generator alone: the discriminator and optimizers in the file are ignored."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    def restore(self, path):
        status = self.checkpoint.restore(path)
        status.expect_partial()
        return status


def export_saved_model(generator: Generator, size: int, path, replace: bool = False) -> None:
    """A SavedModel whose `serving_default` maps uint8 label maps [N, S, S, 3] to uint8 photos, each
    exactly as `generator` makes it (dropout on, with the run's fixed mask). Written into a temporary
    folder beside `path`, then moved into place (`replace`: over a previous export), so a failed or
    interrupted export leaves the previous one whole."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import tensorflow as tf

    from gan.errors import raise_for_write
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as e:
        raise_for_write(e, f"--export {path}: cannot write the SavedModel")

    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = generator.model
            self.noise = generator.noise  # tracked here: Keras leaves dropout's state out of the object graph

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="labels")])
        def serve(self, labels):
            def one(image):  # one at a time: batch statistics of each image, as in training-time eval
                return to_uint8(generate_one(self.model, self.noise, generator.noise_starts, to_unit(image[None]))[0])
            # parallel_iterations=1: each image restarts the dropout state, so images must not overlap.
            return {"photos": tf.map_fn(one, labels, fn_output_signature=tf.uint8, parallel_iterations=1)}

    exported = Exported()
    try:
        tf.saved_model.save(exported, str(staging), signatures={"serving_default": exported.serve})
        if path.exists() and replace:
            aside = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.rename(path, aside)
            os.rename(staging, path)
            shutil.rmtree(aside, ignore_errors=True)  # the new export is in place; the old one's files go
        else:
            if path.exists():
                path.rmdir()  # an empty folder the user made for it
            os.rename(staging, path)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise_for_write(e, f"--export {path}: cannot write the SavedModel")
    except tf.errors.OpError as e:  # TensorFlow's file errors (read-only, permission, a file in the way)
        shutil.rmtree(staging, ignore_errors=True)
        raise_for_write(e, f"--export {path}: cannot write the SavedModel")
