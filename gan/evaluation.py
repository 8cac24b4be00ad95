"""Evaluation during and after training: generate, measure, write rows and samples.

The evaluator owns a single-device copy of the generator that receives the
trained weights at each evaluation. Images are generated one at a time with
`training=True`, as pix2pix does at test time (batch statistics of the test
image, dropout as noise), so results do not depend on the evaluation batch,
and the training model's state is never touched. Metrics are computed in a
`MetricPool` of worker processes.
"""

from __future__ import annotations

import numpy as np

from gan.config import Config
from gan.data import Dataset, to_float
from gan.metrics import METRIC_NAMES, METRICS_VERSION, MetricPool
from gan.rundir import (FCN_COLUMNS, METRICS_COLUMNS, RunDir, append_csv, atomic_write, read_csv, read_json, write_csv,
                        write_json)


def build_generator(cfg: Config):
    from gan import models  # Keras loads here, not when a command merely checks its input
    return models.build_generator(cfg.model, cfg.data.image_size)


def build_discriminator(cfg: Config):
    from gan import models
    return models.build_discriminator(cfg.model, cfg.data.image_size)


def to_uint8(images) -> np.ndarray:
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class Generator:
    """Single-device inference copy of a generator: uint8 label maps in, uint8 photos out."""

    def __init__(self, cfg: Config, model=None):
        import tensorflow as tf
        self.model = model if model is not None else build_generator(cfg)
        self._call = tf.function(lambda x: self.model(x, training=True), reduce_retracing=True)

    def set_weights(self, weights) -> None:
        self.model.set_weights(weights)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return np.stack([to_uint8(self._call(to_float(image[None]))[0]) for image in inputs])


def sample_grid(inputs: np.ndarray, targets: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Rows of input | target | output."""
    return np.concatenate([np.concatenate(row, axis=1) for row in zip(inputs, targets, outputs)], axis=0)


def write_png(path, image: np.ndarray) -> None:
    import cv2
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic_write(path, encoded.tobytes())


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) of every metric (NaN-aware)."""
    out = {}
    for name in rows[0]:
        values = np.array([r[name] for r in rows], np.float64)
        out[name] = {"mean": float(np.nanmean(values)),
                     "std": float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else 0.0}
    return out


class Evaluator:
    def __init__(self, cfg: Config, data: Dataset, pool: MetricPool):
        self.cfg, self.data, self.pool = cfg, data, pool
        self.generator = Generator(cfg)
        n = min(cfg.eval.train_subset, len(data.train.ids))
        self.sets = {"train": (data.train.inputs[:n], data.train.targets[:n]),  # fixed subset
                     "val": (data.val.inputs, data.val.targets)}
        self._segmenter = None
        self._fcn_real: dict[str, dict[str, float]] = {}  # real photos' mean FCN-score per split, computed once

    @property
    def segmenter(self):
        if self._segmenter is None:
            from gan.segmenter import Segmenter
            self._segmenter = Segmenter.load(self.cfg.eval.segmenter)
        return self._segmenter

    def _fcn_means(self, photos: np.ndarray, label_maps: np.ndarray) -> dict[str, float]:
        rows, _ = self.segmenter.fcn_scores(photos, label_maps)
        return {k: v["mean"] for k, v in summarise(rows).items()}

    def _fcn_rows(self, step: int, outputs: dict[str, np.ndarray]) -> tuple[list[dict], dict]:
        """fcn_metrics.csv rows for the generated photos of each split and for its real photos
        (split `<name>_real`, the reference), and the generated scores by split."""
        rows, scores = [], {}
        for split, generated in outputs.items():
            inputs, targets = self.sets[split]
            if split not in self._fcn_real:
                self._fcn_real[split] = self._fcn_means(targets, inputs)
            scores[split] = self._fcn_means(generated, inputs)
            for name, values in ((split, scores[split]), (f"{split}_real", self._fcn_real[split])):
                rows.append({"step": step, "split": name, **{k: round(v, 6) for k, v in values.items()},
                             "images": len(inputs)})
        return rows, scores

    def evaluate(self, weights, step: int, run: RunDir, writer=None) -> dict[str, dict[str, float]]:
        """Metrics on the train subset and the val split; one metrics.csv row per split."""
        self.generator.set_weights(weights)
        scores, rows, outputs = {}, [], {}
        for split, (inputs, targets) in self.sets.items():
            if not len(inputs):
                continue
            outputs[split] = self.generator(inputs)
            per_image = self.pool(outputs[split], targets)
            scores[split] = {k: float(np.mean([r[k] for r in per_image])) for k in METRIC_NAMES}
            rows.append({"step": step, "split": split, **{k: round(v, 6) for k, v in scores[split].items()},
                         "images": len(inputs)})
        append_csv(run.metrics, METRICS_COLUMNS, rows)
        if self.cfg.eval.fcn_every_eval:
            fcn_rows, fcn_scores = self._fcn_rows(step, outputs)
            append_csv(run.fcn_metrics, FCN_COLUMNS, fcn_rows)
            for split, values in fcn_scores.items():  # reported to Tune and TensorBoard with the rest
                scores[split].update(values)
        k = self.cfg.eval.samples
        grid = sample_grid(self.sets["val"][0][:k], self.sets["val"][1][:k], outputs["val"][:k])
        write_png(run.samples / f"step_{step:06d}.png", grid)
        if writer is not None:
            import tensorflow as tf
            with writer.as_default(step=step):
                for split, values in scores.items():
                    for name, value in values.items():
                        tf.summary.scalar(f"{split}/{name}", value)
                tf.summary.image("samples/val", grid[None])
            writer.flush()
        return scores

    def test(self, weights, step: int, run: RunDir) -> dict:
        """Per-image metrics on the test split, test_metrics.csv and summary.json."""
        self.generator.set_weights(weights)
        test = self.data.test
        outputs = self.generator(test.inputs)
        per_image = self.pool(outputs, test.targets)
        extra = {}
        if self.cfg.eval.segmenter:  # FCN-score: segment the generated photos, score against the input labels
            segmenter = self.segmenter
            fcn_rows, fcn_generated = segmenter.fcn_scores(outputs, test.inputs)
            real_rows, fcn_real = segmenter.fcn_scores(test.targets, test.inputs)  # the reference: real photos
            per_image = [{**a, **b} for a, b in zip(per_image, fcn_rows)]
            # Dataset-level scores (summed confusion matrix, as the paper reports) and per-image means
            # (what the mean (std) tables compare), for the generated and the real test photos.
            extra["fcn"] = {"generated": fcn_generated, "real": fcn_real,
                            "generated_image_mean": summarise(fcn_rows), "real_image_mean": summarise(real_rows),
                            "segmenter": self.cfg.eval.segmenter}
        if self.cfg.eval.inception_weights:
            from gan.fid import InceptionFeatures, fid, kid
            features = InceptionFeatures(self.cfg.eval.inception_weights)
            real, fake = features(test.targets), features(outputs)
            extra.update(fid=fid(real, fake), kid=kid(real, fake))
        columns = list(per_image[0])
        write_csv(run.test_metrics, ["image", *columns],
                  [{"image": i, **{k: round(r[k], 6) for k in columns}} for i, r in zip(test.ids, per_image)])
        k = self.cfg.eval.samples
        write_png(run.samples / "test.png", sample_grid(test.inputs[:k], test.targets[:k], outputs[:k]))
        timings = read_csv(run.timings)
        summary = {
            "generator": self.cfg.model.generator, "steps": step, "images": len(test.ids),
            "metrics_version": METRICS_VERSION, "split_seed": self.cfg.data.split_seed,
            "data": {"source": self.data.source, "fingerprint": self.data.fingerprint},
            "precision": self.cfg.train.precision,
            "test": summarise(per_image),
            "train_seconds": round(sum(float(r["train_seconds"]) for r in timings), 3),
            "eval_seconds": round(sum(float(r["eval_seconds"]) for r in timings), 3),
            "parameters": {"generator": int(self.generator.model.count_params())},
            **extra,
        }
        write_json(run.summary, summary)
        return summary

    def close(self) -> None:
        self.pool.close()


def restore_generator(run_path, step: int | None = None):
    """(config, Generator, step) from a run directory's checkpoint (the latest, or `step`)."""
    from pathlib import Path

    from gan.errors import UserError

    run = RunDir(Path(run_path))
    if not run.config.exists():
        raise UserError(f"{run.path}: not a run directory (config.json missing)")
    cfg = Config.from_dict(read_json(run.config)["config"])
    import tensorflow as tf

    from gan.checkpoints import restore_newest_intact
    only = None
    if step is not None:
        only = str(run.checkpoints / f"ckpt-{step}")
        if not Path(only + ".index").exists():
            raise UserError(f"--step {step}: no checkpoint {only}")
    if only is None and tf.train.get_checkpoint_state(str(run.checkpoints)) is None:
        raise UserError(f"{run.checkpoints}: no checkpoint yet")
    generator = Generator(cfg)
    step_var = tf.Variable(0, dtype=tf.int64)
    # Read-only: a damaged checkpoint is skipped and named, never moved (the trainer may own the run).
    restored = restore_newest_intact(_GeneratorCheckpoint(tf.train.Checkpoint(generator=generator.model,
                                                                              step=step_var)),
                                     run.checkpoints, set_aside=False, only=only)
    if restored is None:
        raise UserError(f"{run.checkpoints}: no checkpoint that can be restored")
    return cfg, generator, int(step_var.numpy())


class _GeneratorCheckpoint:
    """A checkpoint of the generator alone: the discriminator and optimizers in the file are ignored."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    def restore(self, path):
        status = self.checkpoint.restore(path)
        status.expect_partial()
        return status


def export_saved_model(generator: Generator, size: int, path) -> None:
    """A SavedModel whose `serving_default` maps uint8 label maps [N, S, S, 3] to uint8 photos."""
    import tensorflow as tf

    model = generator.model

    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="labels")])
        def serve(self, labels):
            def one(image):  # one at a time: batch statistics of each image, as in training-time eval
                out = self.model(tf.cast(image[None], tf.float32) / 127.5 - 1.0, training=True)[0]
                return tf.cast(tf.clip_by_value(tf.round((out + 1.0) * 127.5), 0, 255), tf.uint8)
            return {"photos": tf.map_fn(one, labels, fn_output_signature=tf.uint8)}

    exported = Exported()
    tf.saved_model.save(exported, str(path), signatures={"serving_default": exported.serve})
