"""A compact Cityscapes segmenter the suite trains itself, and the FCN-score it gives.

The pix2pix paper judged labels -> photo by segmenting the generated photos
and scoring the result against the input labels ("FCN-score"). No pretrained
weights can be downloaded here, so `jobs/train_segmenter.py` trains this
small encoder-decoder (4 stride-2 conv blocks, 4 upsampling blocks with skip
connections, 19 classes) on the real photos of the dataset's training split.
Its run directory follows the run-directory contract (`gan/contract.py`, kind
"segmenter") and the trainer's rules (lease, status, resume, --overwrite):

    <out>/segmenter/<run_name>/config.json status.json lease.json metrics.csv summary.json segmenter.weights.h5

FCN-score (as the pix2pix / cityscapesScripts evaluation): a confusion
matrix over all pixels whose label is one of the 19 classes; per-pixel
accuracy = correct / labelled; per-class accuracy = mean over classes present
in the labels of correct / labelled; class IoU = mean over classes with a
non-empty union of intersection / union.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gan.segmenter_config import SegmenterConfig
from gan.contract import SEGMENTER_COLUMNS, SEGMENTER_KIND, SEGMENTER_WEIGHTS, check_status, run_path
from gan.errors import EXIT_PREEMPTED, DiskFull, UserError, is_disk_full
from gan.datasets.labels import IGNORE, NUM_CLASSES, colours_to_train_ids
from gan.lease import Lease
from gan.datasets.pixels import to_unit
from gan.rundir import RunDir
from gan.files import append_csv, read_csv, read_json, write_json

# Fields a resumed segmenter may change: more epochs extend it; the validation set's size and the final
# score's resolution are measurement, not training.
RESUMABLE_FIELDS = {"train.epochs", "data.max_val", "eval.score_size"}


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


def weights_identity(path: Path) -> str:
    """The first 16 hex digits of the weights file's SHA-256: which judge scored a run (two segmenters
    trained into the same folder, or retrained there, share a path but not this)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class Segmenter:
    """A trained segmenter: uint8 photos -> train ids, and FCN-scores against colour label maps."""

    def __init__(self, model, size: int):
        import tensorflow as tf
        self.model, self.size = model, size
        self.identity = ""  # weights_identity of the file it was loaded from (Segmenter.load)
        self._predict = tf.function(lambda x: tf.argmax(model(x, training=False), -1), reduce_retracing=True)

    @classmethod
    def weights_of(cls, run_dir: str | Path, flag: str = "--eval.segmenter") -> Path:
        """The segmenter run's weights file, or one line naming `flag` (no TensorFlow: a refusal is instant)."""
        weights = RunDir(run_dir, kind=SEGMENTER_KIND).path / SEGMENTER_WEIGHTS
        if not weights.exists():
            raise UserError(f"{flag} {run_dir}: no {SEGMENTER_WEIGHTS} (train one with "
                            "jobs/train_segmenter.py)")
        return weights

    @classmethod
    def load(cls, run_dir: str | Path, flag: str = "--eval.segmenter") -> "Segmenter":
        run = RunDir(run_dir, kind=SEGMENTER_KIND)
        weights = cls.weights_of(run_dir, flag)
        cfg = SegmenterConfig.from_record(read_json(run.config)["config"])
        model = build(cfg.data.image_size, cfg.model.filters)
        model.load_weights(weights)
        segmenter = cls(model, cfg.data.image_size)
        segmenter.identity = weights_identity(weights)
        return segmenter

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


def _load_photos_and_ids(cfg: SegmenterConfig, splits: tuple[str, ...] = ("train", "val"), size: int = 0):
    """{split: (photos, class ids)} at `size` (default the working size), and the dataset folder."""
    from gan.config import make_config
    from gan.datasets.loader import find_pairs, load_split, resolve_source, select_splits
    d = cfg.data
    data_cfg = make_config("paper", {"data.source": d.source, "data.format": d.format, "data.input_side": d.input_side,
                                     "data.image_size": size or d.image_size})
    root, fmt = resolve_source(data_cfg)
    pools = find_pairs(root, fmt)
    # Validate on the dataset's own val split; carve a fifth of train only when it has none.
    n_val = min(d.max_val, len(pools["val"]) or max(1, len(pools["train"]) // 5))
    chosen, _ = select_splits(pools, d.max_train, n_val, 0, cfg.train.seed)
    out = {}
    for split in splits:
        s = load_split(chosen[split], size or d.image_size, d.input_side)
        out[split] = (s.targets, colours_to_train_ids(s.inputs))  # photos, class ids
    return out, str(root)


def resolve_epochs(cfg: SegmenterConfig, n_train: int) -> int:
    """`train.epochs`, or for 0 the epochs that fit `train.image_budget` (between 1 and 40)."""
    return cfg.train.epochs or max(1, min(40, round(cfg.train.image_budget / max(n_train, 1))))


def train_segmenter(cfg: SegmenterConfig, out: str | Path, overwrite: bool = False, log=print) -> int:
    """Train (or resume) the segmenter into <out>/<experiment>/<run_name>; returns the exit code (0, or
    EXIT_PREEMPTED after an interruption: rerun to resume after the last finished epoch).

    The trainer's rules: bad data fails before anything is written; a folder holding another run is
    refused unless `overwrite` (moved aside); one process per run directory (the lease); status.json
    says running / finished / preempted / failed; a full disk is a DiskFull naming where.
    """
    cfg.validate()
    data, source = _load_photos_and_ids(cfg)
    run = RunDir(run_path(out, cfg.experiment, cfg.run_name), kind=SEGMENTER_KIND)
    lease = Lease(run.lease, log=log).acquire()
    try:
        return _train(cfg, data, source, run, overwrite, log)
    except BaseException as e:
        if is_disk_full(e):
            raise DiskFull(f"no space left on device training the segmenter in {run.path}; it keeps its last "
                           "finished epoch: free space and rerun the same command to resume") from None
        raise
    finally:
        lease.release()


def _train(cfg: SegmenterConfig, data, source: str, run: RunDir, overwrite: bool, log) -> int:
    status = check_status(_legacy_status(read_json(run.status, {})), run.status)
    read_csv(run.metrics, required=("epoch",))  # a damaged table stops here, before anything is written
    run.prepare(cfg.to_dict(), cfg.flat(), overwrite=overwrite, data={"source": source},
                read_old=lambda raw: SegmenterConfig.from_record(raw).flat(), resumable=RESUMABLE_FIELDS)
    epochs, done = resolve_epochs(cfg, len(data["train"][0])), _epochs_done(run)
    if status.get("state") == "finished" and done >= epochs and run.summary.exists():
        log(f"{run.path}: already finished after {done} epochs; nothing to do")
        return 0
    model, dataset = _model_and_dataset(cfg, data["train"], run, done)
    segmenter = Segmenter(model, cfg.data.image_size)
    run.set_status("running", done)
    try:
        t0 = time.perf_counter()
        if done < epochs:
            model.fit(dataset, epochs=epochs, initial_epoch=done, verbose=0, shuffle=False,
                      callbacks=[_epoch_end(segmenter, data["val"], run, epochs, log)])
        summary = {**_final_score(cfg, segmenter), "train_images": len(data["train"][0]),
                   "val_images": len(data["val"][0]), "epochs": epochs, "source": source,
                   "train_seconds": round(time.perf_counter() - t0, 2)}
        write_json(run.summary, summary)
        run.set_status("finished", epochs)
        return 0
    except KeyboardInterrupt:
        done = _epochs_done(run)
        run.set_status("preempted", done, f"interrupted after epoch {done}; rerun the same command to resume")
        log(f"{run.path}: interrupted after epoch {done} of {epochs}; rerun the same command to resume")
        return EXIT_PREEMPTED
    except BaseException as e:
        reason = "disk full" if is_disk_full(e) else f"{type(e).__name__}: {e}".splitlines()[0][:500]
        run.set_status("failed", _epochs_done(run), reason)
        raise


def _legacy_status(status: dict) -> dict:
    """A segmenter written before the shared status record said {"state", "epoch"}: its epoch is the step."""
    return {**status, "step": status["epoch"]} if "epoch" in status and "step" not in status else status


def _epochs_done(run: RunDir) -> int:
    return len(read_csv(run.metrics, required=("epoch",)))


def _model_and_dataset(cfg: SegmenterConfig, train, run: RunDir, done: int):
    """The compiled model (the last finished epoch's weights when resuming) and the augmented batches."""
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(cfg.train.seed)
    model = build(cfg.data.image_size, cfg.model.filters)
    if done and (run.path / SEGMENTER_WEIGHTS).exists():
        model.load_weights(run.path / SEGMENTER_WEIGHTS)
    model.compile(optimizer=keras.optimizers.Adam(cfg.train.lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE))

    def augment(example, seed):
        # A stateless draw from each example's own seed: with a stateful one, the parallel map handed the
        # draws out in whatever order its threads ran, and the same command trained a different judge.
        photo, label = example
        flip = tf.random.stateless_uniform([], seed=tf.stack([seed, tf.constant(cfg.train.seed, tf.int64)])) < 0.5
        photo = tf.cond(flip, lambda: tf.reverse(photo, [1]), lambda: photo)
        label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
        return to_unit(photo), tf.cast(label, tf.int32)

    photos, ids = train
    examples = tf.data.Dataset.from_tensor_slices((photos, ids)).shuffle(len(photos), seed=cfg.train.seed)
    dataset = (tf.data.Dataset.zip((examples, tf.data.Dataset.random(seed=cfg.train.seed)))
               .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(cfg.train.batch_size)
               .prefetch(tf.data.AUTOTUNE))
    return model, dataset


def _epoch_end(segmenter: "Segmenter", val, run: RunDir, epochs: int, log):
    """After each epoch: the weights (atomically), then its metrics row - the row is what marks the epoch
    done, so an interruption between the two at worst repeats one epoch - then the status."""
    import keras
    weights = run.path / SEGMENTER_WEIGHTS

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            s = scores(sum(confusion(p, t) for p, t in zip(segmenter.predict(val[0]), val[1])))
            tmp = weights.with_name(f".{weights.name}.tmp.weights.h5")
            segmenter.model.save_weights(tmp)
            tmp.replace(weights)  # atomic: never a half-written file
            append_csv(run.metrics, SEGMENTER_COLUMNS, [{"epoch": epoch + 1, "loss": round(float(logs["loss"]), 5),
                                                         **{k: round(v, 5) for k, v in s.items()}}])
            run.set_status("running", epoch + 1)
            log(f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f}  val pixel acc {s['pixel_acc']:.3f}  "
                f"class acc {s['class_acc']:.3f}  mIoU {s['iou']:.3f}")
    return EpochEnd()


def _final_score(cfg: SegmenterConfig, segmenter: "Segmenter") -> dict:
    """The real val photos' FCN-score at the study's resolution (labels at full size, predictions
    upsampled), as the FCN-score of generated photos is measured."""
    photos, ids = _load_photos_and_ids(cfg, ("val",), size=cfg.eval.score_size)[0]["val"]
    return {"val_real_photos": scores(sum(confusion(p, t) for p, t in zip(segmenter.predict(photos), ids))),
            "score_size": cfg.eval.score_size}
