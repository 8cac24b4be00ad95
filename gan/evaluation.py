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
from gan.metrics import METRIC_NAMES, MetricPool
from gan.models import build_discriminator as _build_discriminator
from gan.models import build_generator as _build_generator
from gan.rundir import METRICS_COLUMNS, RunDir, append_csv, atomic_write, write_csv, write_json, read_csv


def build_generator(cfg: Config):
    return _build_generator(cfg.model, cfg.data.image_size)


def build_discriminator(cfg: Config):
    return _build_discriminator(cfg.model, cfg.data.image_size)


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
    """Mean and sample standard deviation (ddof=1) of every metric."""
    out = {}
    for name in METRIC_NAMES:
        values = np.array([r[name] for r in rows], np.float64)
        out[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return out


class Evaluator:
    def __init__(self, cfg: Config, data: Dataset, pool: MetricPool):
        self.cfg, self.data, self.pool = cfg, data, pool
        self.generator = Generator(cfg)
        n = min(cfg.eval.train_subset, len(data.train.ids))
        self.sets = {"train": (data.train.inputs[:n], data.train.targets[:n]),  # fixed subset
                     "val": (data.val.inputs, data.val.targets)}

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
        write_csv(run.test_metrics, ["image", *METRIC_NAMES],
                  [{"image": i, **{k: round(r[k], 6) for k in METRIC_NAMES}} for i, r in zip(test.ids, per_image)])
        k = self.cfg.eval.samples
        write_png(run.samples / "test.png", sample_grid(test.inputs[:k], test.targets[:k], outputs[:k]))
        timings = read_csv(run.timings)
        summary = {
            "generator": self.cfg.model.generator, "steps": step, "images": len(test.ids),
            "test": summarise(per_image),
            "train_seconds": round(sum(float(r["train_seconds"]) for r in timings), 3),
            "eval_seconds": round(sum(float(r["eval_seconds"]) for r in timings), 3),
            "parameters": {"generator": int(self.generator.model.count_params())},
        }
        write_json(run.summary, summary)
        return summary

    def close(self) -> None:
        self.pool.close()
