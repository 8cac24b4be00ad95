"""A compact Cityscapes segmenter the suite trains itself, and the FCN-score it gives.

The pix2pix paper judged labels -> photo by segmenting the generated photos
and scoring the result against the input labels ("FCN-score"). No pretrained
weights can be downloaded here, so `jobs/train_segmenter.py` trains this
small encoder-decoder (4 stride-2 conv blocks, 4 upsampling blocks with skip
connections, 19 classes) on the real photos of the dataset's training split.
Its run directory:

    <out>/segmenter/<name>/config.json status.json metrics.csv summary.json segmenter.weights.h5

FCN-score (as the pix2pix / cityscapesScripts evaluation): a confusion
matrix over all pixels whose label is one of the 19 classes; per-pixel
accuracy = correct / labelled; per-class accuracy = mean over classes present
in the labels of correct / labelled; class IoU = mean over classes with a
non-empty union of intersection / union.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gan.errors import UserError
from gan.labels import IGNORE, NUM_CLASSES, colours_to_train_ids
from gan.pixels import to_unit
from gan.rundir import append_csv, atomic_write, write_json

SEG_METRICS = ("pixel_acc", "class_acc", "iou")


@dataclass
class SegmenterConfig:
    source: str = "synthetic"
    format: str = "auto"
    input_side: str = "right"
    image_size: int = 128
    filters: int = 32
    # 0 = auto: up to 40 epochs, fewer when the train split is large, so that about `image_budget`
    # training images are seen (full Cityscapes, 2,975 images: 4 epochs; cityscapes-mini: 40).
    epochs: int = 0
    image_budget: int = 12_000  # ~30-45 min on 2 CPU cores at 128 px (measured ~4-7 images/s)
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    max_train: int = 100_000  # images of the train split used (all by default)
    max_val: int = 500
    score_size: int = 256  # the final validation score is taken at the study's resolution


PRESETS = {
    "default": {},  # full train split at 128 px, epochs from the image budget
    # Tests: ~15 s on 2 cores; enough images and steps that real photos beat a constant image by a wide
    # margin (class acc ~0.45-0.5 against ~0.23), whatever the thread order of the float sums.
    "tiny": {"image_size": 32, "filters": 16, "epochs": 12, "batch_size": 4, "max_train": 96, "max_val": 8,
             "score_size": 32},
}


def confusion(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    mask = true != IGNORE
    return np.bincount(NUM_CLASSES * true[mask].astype(np.int64) + pred[mask], minlength=NUM_CLASSES ** 2
                       ).reshape(NUM_CLASSES, NUM_CLASSES)


def scores(matrix: np.ndarray) -> dict[str, float]:
    diag, rows, cols = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = np.where(rows > 0, diag / rows, np.nan)
        iou = np.where(rows + cols - diag > 0, diag / (rows + cols - diag), np.nan)
    total = matrix.sum()
    return {"pixel_acc": float(diag.sum() / total) if total else float("nan"),
            "class_acc": float(np.nanmean(class_acc)) if np.isfinite(class_acc).any() else float("nan"),
            "iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")}


def build(size: int, filters: int):
    import keras
    from keras import layers
    inputs = layers.Input([size, size, 3])
    x, skips = inputs, []
    for i in range(4):
        x = layers.Conv2D(filters * 2 ** i, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Conv2D(filters * 2 ** i, 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        skips.append(x)
    for i in reversed(range(4)):
        x = layers.Concatenate()([x, skips[i]]) if i < 3 else x
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = layers.Conv2D(filters * 2 ** max(i - 1, 0), 3, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    logits = layers.Conv2D(NUM_CLASSES, 1)(x)
    return keras.Model(inputs, logits, name="segmenter")


class Segmenter:
    """A trained segmenter: uint8 photos -> train ids, and FCN-scores against colour label maps."""

    def __init__(self, model, size: int):
        import tensorflow as tf
        self.model, self.size = model, size
        self._predict = tf.function(lambda x: tf.argmax(model(x, training=False), -1), reduce_retracing=True)

    @classmethod
    def load(cls, run_dir: str | Path) -> "Segmenter":
        run_dir = Path(run_dir)
        weights = run_dir / "segmenter.weights.h5"
        if not weights.exists():
            raise UserError(f"--eval.segmenter {run_dir}: no segmenter.weights.h5 (train one with "
                            "jobs/train_segmenter.py)")
        cfg = SegmenterConfig(**json.loads((run_dir / "config.json").read_text())["config"])
        model = build(cfg.image_size, cfg.filters)
        model.load_weights(weights)
        return cls(model, cfg.image_size)

    def features(self, photos: np.ndarray) -> np.ndarray:
        """[N, C]: each photo's penultimate-layer activations (the last ReLU before the class logits),
        averaged over the image - the feature space of the segmenter's Fréchet distance."""
        import cv2
        import keras
        import tensorflow as tf
        if not hasattr(self, "_features"):
            inner = keras.Model(self.model.inputs, self.model.layers[-2].output)
            self._features = tf.function(lambda x: tf.reduce_mean(inner(x, training=False), axis=[1, 2]),
                                         reduce_retracing=True)
        out = []
        for start in range(0, len(photos), 16):
            batch = np.stack([cv2.resize(p, (self.size, self.size), interpolation=cv2.INTER_AREA)
                              for p in photos[start:start + 16]])
            out.append(self._features(to_unit(batch)).numpy())
        return np.concatenate(out).astype(np.float64)

    def predict(self, photos: np.ndarray) -> np.ndarray:
        """Train ids at the photos' own size (the segmenter's prediction, nearest-upsampled)."""
        import cv2
        out = []
        for start in range(0, len(photos), 16):
            batch = np.stack([cv2.resize(p, (self.size, self.size), interpolation=cv2.INTER_AREA)
                              for p in photos[start:start + 16]])
            out.append(self._predict(to_unit(batch)).numpy().astype(np.uint8))
        ids = np.concatenate(out)
        height, width = photos.shape[1:3]
        if (height, width) == ids.shape[1:3]:
            return ids
        return np.stack([cv2.resize(i, (width, height), interpolation=cv2.INTER_NEAREST) for i in ids])

    def fcn_scores(self, photos: np.ndarray, label_maps: np.ndarray) -> tuple[list[dict], dict]:
        """(per-image scores, dataset-level scores from the summed confusion matrix), at the label maps'
        own resolution (256 px in the study), whatever size the segmenter works at."""
        pred, true = self.predict(photos), np.stack([colours_to_train_ids(m) for m in label_maps])
        matrices = [confusion(p, t) for p, t in zip(pred, true)]
        per_image = [{f"fcn_{k}": v for k, v in scores(m).items()} for m in matrices]
        return per_image, scores(np.sum(matrices, axis=0))


def _load_photos_and_ids(cfg: SegmenterConfig, splits: tuple[str, ...] = ("train", "val")):
    from gan.config import make_config
    from gan.data import find_pairs, load_split, resolve_source, select_splits
    data_cfg = make_config("paper", {"data.source": cfg.source, "data.format": cfg.format,
                                     "data.input_side": cfg.input_side, "data.image_size": cfg.image_size})
    root, fmt = resolve_source(data_cfg)
    pools = find_pairs(root, fmt)
    # Validate on the dataset's own val split; carve a fifth of train only when it has none.
    n_val = min(cfg.max_val, len(pools["val"]) or max(1, len(pools["train"]) // 5))
    chosen, _ = select_splits(pools, cfg.max_train, n_val, 0, cfg.seed)
    out = {}
    for split in splits:
        s = load_split(chosen[split], cfg.image_size, cfg.input_side)
        out[split] = (s.targets, colours_to_train_ids(s.inputs))  # photos, class ids
    return out, str(root)


def resolve_epochs(cfg: SegmenterConfig, n_train: int) -> int:
    """`cfg.epochs`, or for 0 the epochs that fit `cfg.image_budget` (between 1 and 40)."""
    return cfg.epochs or max(1, min(40, round(cfg.image_budget / max(n_train, 1))))


def train_segmenter(cfg: SegmenterConfig, out: str | Path, name: str = "segmenter", log=print) -> dict:
    """Train (or resume) the segmenter; returns summary.json's content."""
    import keras
    import tensorflow as tf

    run = Path(out) / "segmenter" / name
    config_path = run / "config.json"
    if config_path.exists():
        old = json.loads(config_path.read_text())["config"]
        if old != asdict(cfg):
            raise UserError(f"--out {run}: holds a segmenter with another config; choose another --name")
    run.mkdir(parents=True, exist_ok=True)
    write_json(config_path, {"kind": "segmenter", "config": asdict(cfg)})
    data, source = _load_photos_and_ids(cfg)
    keras.utils.set_random_seed(cfg.seed)
    model = build(cfg.image_size, cfg.filters)
    weights = run / "segmenter.weights.h5"
    done_epochs = 0
    if weights.exists() and (run / "metrics.csv").exists():
        model.load_weights(weights)
        done_epochs = len((run / "metrics.csv").read_text().splitlines()) - 1
    model.compile(optimizer=keras.optimizers.Adam(cfg.lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE))
    photos, ids = data["train"]
    epochs = resolve_epochs(cfg, len(photos))

    def augment(photo, label):
        flip = tf.random.uniform([]) < 0.5
        photo = tf.cond(flip, lambda: tf.reverse(photo, [1]), lambda: photo)
        label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
        return to_unit(photo), tf.cast(label, tf.int32)

    ds = (tf.data.Dataset.from_tensor_slices((photos, ids)).shuffle(len(photos), seed=cfg.seed)
          .map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE))
    segmenter = Segmenter(model, cfg.image_size)
    val_photos, val_ids = data["val"]

    class Evaluate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            pred = segmenter.predict(val_photos)
            s = scores(sum(confusion(p, t) for p, t in zip(pred, val_ids)))
            append_csv(run / "metrics.csv", ["epoch", "loss", *SEG_METRICS],
                       [{"epoch": epoch + 1, "loss": round(float(logs["loss"]), 5),
                         **{k: round(v, 5) for k, v in s.items()}}])
            model.save_weights(str(weights) + ".tmp.weights.h5")
            Path(str(weights) + ".tmp.weights.h5").replace(weights)  # atomic: never a half-written file
            log(f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f}  val pixel acc {s['pixel_acc']:.3f}  "
                f"class acc {s['class_acc']:.3f}  mIoU {s['iou']:.3f}")

    t0 = time.perf_counter()
    if done_epochs < epochs:
        model.fit(ds, epochs=epochs, initial_epoch=done_epochs, callbacks=[Evaluate()], verbose=0, shuffle=False)
    # The final score at the study's 256 px (labels at full size, predictions upsampled), as the FCN-score
    # of generated photos is measured.
    full = _load_photos_and_ids(SegmenterConfig(**{**asdict(cfg), "image_size": cfg.score_size}), ("val",))[0]["val"]
    final = scores(sum(confusion(p, t) for p, t in zip(segmenter.predict(full[0]), full[1])))
    summary = {"val_real_photos": final, "score_size": cfg.score_size, "train_images": len(photos),
               "val_images": len(val_photos), "epochs": epochs,
               "train_seconds": round(time.perf_counter() - t0, 2), "source": source}
    write_json(run / "summary.json", summary)
    atomic_write(run / "status.json", json.dumps({"state": "finished", "epoch": epochs}))
    return summary
