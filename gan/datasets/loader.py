"""Datasets: find image pairs, choose the 400/50/50 split, feed `tf.data`.

Formats (docs/design.md): `synthetic` (generated into a cache, then read as
pix2pix), `pix2pix` (photo and label side by side), `cityscapes`
(`leftImg8bit/` + `gtFine/*_gtFine_color.png`), `paired-folders` (`A/` inputs,
`B/` targets with matching names). Files are decoded in parallel threads
(OpenCV releases the GIL), resized once and kept in memory as uint8 arrays —
400 pairs at 256px are 157 MB — so the training pipeline never touches the
disk again. The training pipeline is a function of (seed, step): example k of
the run is always the same image with the same augmentation, which is what
makes resume step-exact.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from gan.config import Config
from gan.errors import UserError
from gan.datasets.fetch import data_fingerprint, dataset_folder
from gan.datasets.pixels import to_unit
from gan.datasets.synthetic import ensure_synthetic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Pair:
    """One example on disk: a side-by-side file (target_path None) or two files."""
    id: str
    input_path: str
    target_path: str | None = None  # None: side-by-side in input_path


@dataclass
class Split:
    ids: list[str]
    inputs: np.ndarray  # uint8 [N, S, S, 3] label maps
    targets: np.ndarray  # uint8 [N, S, S, 3] photos


# -- discovering pairs ------------------------------------------------------

def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def detect_format(root: Path) -> str:
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if (root / "A").is_dir() and (root / "B").is_dir():
        return "paired-folders"
    if any((root / s).is_dir() for s in SPLITS):
        return "pix2pix"
    raise UserError(f"--data {root}: cannot tell the layout (expected train/ val/ [test/], "
                    "leftImg8bit/ + gtFine/, or A/ + B/); name it with --data-format")


def find_pairs(root: Path, fmt: str) -> dict[str, list[Pair]]:
    """The dataset's own splits: {'train': [...], 'val': [...], 'test': [...]} (some may be empty)."""
    if fmt == "pix2pix":
        pools = {s: [Pair(f"{s}/{p.stem}", str(p)) for p in _images(root / s)] if (root / s).is_dir() else []
                 for s in SPLITS}
    elif fmt == "cityscapes":
        pools = {}
        for s in SPLITS:
            pools[s] = []
            for photo in sorted((root / "leftImg8bit" / s).glob("*/*_leftImg8bit.png")):
                stem = photo.name[: -len("_leftImg8bit.png")]
                label = root / "gtFine" / s / photo.parent.name / f"{stem}_gtFine_color.png"
                if label.exists():  # the official test split ships no real labels
                    pools[s].append(Pair(f"{s}/{stem}", str(label), str(photo)))
    elif fmt == "paired-folders":
        a, b = _images(root / "A"), {p.stem: p for p in _images(root / "B")}
        missing = [p.name for p in a if p.stem not in b]
        if missing:
            raise UserError(f"--data {root / 'A' / missing[0]}: no matching file in {root / 'B'}")
        pools = {"train": [Pair(p.stem, str(p), str(b[p.stem])) for p in a], "val": [], "test": []}
    else:
        raise UserError(f"--data-format: unknown format {fmt!r}")
    if not pools["train"]:
        where = {"pix2pix": root / "train", "cityscapes": root / "leftImg8bit" / "train",
                 "paired-folders": root / "A"}[fmt]
        raise UserError(f"--data {where}: missing or empty training split")
    return pools


def select_splits(pools: dict[str, list[Pair]], n_train: int, n_val: int, n_test: int,
                  seed: int) -> tuple[dict[str, list[Pair]], list[str]]:
    """Choose n_train/n_val/n_test pairs reproducibly from whatever splits exist.

    Train comes from the dataset's train split; val from its val split, else
    carved from train; test from its test split, else carved from val, else
    from train. Every carve is disjoint. Returns the choice and notes about
    any split that had fewer images than asked.
    """
    rng = np.random.default_rng(seed)
    shuffled = {s: [pools[s][i] for i in rng.permutation(len(pools[s]))] for s in SPLITS}
    chosen: dict[str, list[Pair]] = {}
    notes: list[str] = []

    def take(split: str, n: int, sources: list[str]) -> None:
        picked: list[Pair] = []
        for src in sources:
            room = n - len(picked)
            picked += shuffled[src][:room]
            shuffled[src] = shuffled[src][room:]
        if not picked and n > 0:
            raise UserError(f"--data: no images left for the {split} split "
                            f"(dataset splits: {', '.join(f'{s}={len(pools[s])}' for s in SPLITS)})")
        if len(picked) < n:
            notes.append(f"{split}: {len(picked)} images available, {n} asked")
        chosen[split] = picked

    # Val and test are carved before train takes its share, so a dataset with
    # only a train split still yields all three.
    take("test", n_test, ["test", "val", "train"])
    take("val", n_val, ["val", "train"])
    take("train", n_train, ["train"])
    chosen["train"].sort(key=lambda p: p.id)  # order on disk; training order comes from the seed
    return chosen, notes


# -- decoding ----------------------------------------------------------------

def read_image(path: str) -> np.ndarray:
    """RGB uint8; one clear error for a missing, unreadable or truncated file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    if not raw:
        raise UserError(f"{path}: empty file (0 bytes)")  # OpenCV raises on an empty buffer, naming nothing
    if raw[:2] == b"\xff\xd8" and not raw.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise UserError(f"{path}: truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise UserError(f"{path}: not a readable image (empty, truncated or unknown format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_pair(pair: Pair, size: int, input_side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """(input label map, target photo), each uint8 [size, size, 3]."""
    if pair.target_path is None:
        both = read_image(pair.input_path)
        h, w = both.shape[:2]
        if w != 2 * h:
            raise UserError(f"{pair.input_path}: a side-by-side pair must be twice as wide as high, got {w}x{h}")
        left, right = both[:, :h], both[:, h:]
        label, photo = (right, left) if input_side == "right" else (left, right)
    else:
        label, photo = read_image(pair.input_path), read_image(pair.target_path)
        if label.shape != photo.shape:
            raise UserError(f"{pair.input_path}: size {label.shape[1]}x{label.shape[0]} does not match "
                            f"{pair.target_path} ({photo.shape[1]}x{photo.shape[0]})")
    # Labels keep their exact colours (nearest); photos are averaged (area).
    label = cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST)
    photo = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
    return label, photo


def load_split(pairs: list[Pair], size: int, input_side: str, threads: int = 8) -> Split:
    with ThreadPoolExecutor(threads) as pool:
        loaded = list(pool.map(lambda p: load_pair(p, size, input_side), pairs))
    return Split([p.id for p in pairs], np.stack([a for a, _ in loaded]), np.stack([b for _, b in loaded]))


def resolve_source(cfg: Config) -> tuple[Path, str]:
    """(folder, format) of the configured dataset, generating synthetic data if needed."""
    d = cfg.data
    if d.source == "synthetic" or d.format == "synthetic":
        if d.source != "synthetic":
            raise UserError(f"--data-format synthetic takes no folder (got --data {d.source})")
        # Generate at least the asked counts so any split size works.
        counts = {"train": max(400, d.n_train), "val": max(50, d.n_val), "test": max(50, d.n_test)}
        return ensure_synthetic(d.image_size, seed=0, cache_dir=d.cache_dir, split_sizes=counts), "pix2pix"
    root = dataset_folder(d.source)
    return root, detect_format(root) if d.format == "auto" else d.format


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    source: str
    format: str
    notes: list[str]
    fingerprint: str = ""  # gan/datasets/fetch.py: the manifest's, or a hash of the file list and sizes

    files: dict[str, list[str]] = field(default_factory=dict)  # per split: input paths relative to source

    def split_record(self) -> str:
        """split.json: the ids of each split and, under `files`, their paths relative to the dataset folder
        (what `data.split_file` reads back: ids alone are ambiguous when train and val share file names)."""
        return json.dumps({"source": self.source, "format": self.format, "fingerprint": self.fingerprint,
                           "notes": self.notes, "files": self.files,
                           **{s: getattr(self, s).ids for s in SPLITS}}, indent=1)


def splits_from_file(pools: dict[str, list[Pair]], root: Path, path: str) -> tuple[dict[str, list[Pair]], list[str]]:
    """The exact split a split.json names (`files`: paths relative to the dataset folder)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--data.split_file {path}: not readable JSON ({e})") from None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(isinstance(files.get(s), list) for s in SPLITS):
        raise UserError(f"--data.split_file {path}: needs 'files' with train/val/test lists of paths "
                        "(a split.json written by this version)")
    for split in SPLITS:
        if not files[split]:
            raise UserError(f"--data.split_file {path}: the {split} list is empty")
        if not all(isinstance(f, str) for f in files[split]):
            raise UserError(f"--data.split_file {path}: the {split} list holds something other than paths")
        repeated = sorted({f for f in files[split] if files[split].count(f) > 1})
        if repeated:
            raise UserError(f"--data.split_file {path}: {len(repeated)} images appear twice in the {split} list "
                            f"(e.g. {repeated[0]}); each image once")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(files[a]) & set(files[b]))
        if shared:
            raise UserError(f"--data.split_file {path}: {len(shared)} images are in both the {a} and the {b} "
                            f"list (e.g. {shared[0]}); the splits must be disjoint")
    by_path = {str(Path(p.input_path).relative_to(root)): p for pool in pools.values() for p in pool}
    # Photos of the dataset's own train split judged as val or test would leak into the verdict (the
    # segmenter that gives the FCN-score trains on that split too), unless the dataset has nothing else.
    own_train = {str(Path(p.input_path).relative_to(root)) for p in pools.get("train", [])}
    if pools.get("val") or pools.get("test"):
        for split in ("val", "test"):
            leaked = [f for f in files[split] if f in own_train]
            if leaked:
                raise UserError(f"--data.split_file {path}: {len(leaked)} of its {split} images are in the "
                                f"dataset's training split (e.g. {leaked[0]}); {split} images come from its "
                                "val or test split")
    missing = [f for s in SPLITS for f in files[s] if f not in by_path]
    if missing:
        raise UserError(f"--data.split_file {path}: {len(missing)} of its images are not in {root} (e.g. "
                        f"{missing[0]}); is this a copy of the same dataset?")
    chosen = {s: [by_path[f] for f in files[s]] for s in SPLITS}
    chosen["train"].sort(key=lambda p: p.id)
    return chosen, [f"split from {path}: {', '.join(f'{s}={len(chosen[s])}' for s in SPLITS)}"]


def load_dataset(cfg: Config) -> Dataset:
    root, fmt = resolve_source(cfg)
    pools = find_pairs(root, fmt)
    if cfg.data.split_file:
        chosen, notes = splits_from_file(pools, root, cfg.data.split_file)
    else:
        chosen, notes = select_splits(pools, cfg.data.n_train, cfg.data.n_val, cfg.data.n_test, cfg.data.split_seed)
    splits = {s: load_split(chosen[s], cfg.data.image_size, cfg.data.input_side) for s in SPLITS}
    files = {s: [str(Path(p.input_path).relative_to(root)) for p in chosen[s]] for s in SPLITS}
    return Dataset(**splits, source=str(root), format=fmt, notes=notes, fingerprint=data_fingerprint(root),
                   files=files)


# -- tf.data -----------------------------------------------------------------

def example_order(n_images: int, seed: int, start: int, stop: int) -> np.ndarray:
    """Image index of examples start..stop-1 of a run: a fresh permutation per epoch."""
    first_epoch, last_epoch = start // n_images, (stop - 1) // n_images
    epochs = [np.random.default_rng([seed, e]).permutation(n_images) for e in range(first_epoch, last_epoch + 1)]
    flat = np.concatenate(epochs) if epochs else np.zeros(0, np.int64)
    offset = first_epoch * n_images
    return flat[start - offset: stop - offset]


def augment(label, photo, example, cfg: Config):
    """Identical geometric augmentation of label and photo, seeded by the example number."""
    import tensorflow as tf
    a, size = cfg.aug, cfg.data.image_size
    seed = tf.stack([tf.cast(cfg.train.seed, tf.int64), example])
    seeds = tf.random.experimental.stateless_split(seed, 6)
    pair = tf.stack([label, photo])  # [2, S, S, 3]: one crop/flip for both
    if a.crop_scale_min < 1.0:
        frac = tf.random.stateless_uniform([], seeds[0], a.crop_scale_min, 1.0)
        side = tf.cast(tf.round(frac * size), tf.int32)
        pair = tf.image.stateless_random_crop(pair, [2, side, side, 3], seeds[1])
        pair = tf.image.resize(pair, [size, size], method="nearest")
    if a.jitter:
        big = int(round(size * a.jitter_scale))
        pair = tf.image.resize(pair, [big, big], method="nearest")
        pair = tf.image.stateless_random_crop(pair, [2, size, size, 3], seeds[2])
    if a.mirror:
        flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        pair = tf.cond(flip, lambda: tf.reverse(pair, axis=[2]), lambda: pair)
    label, photo = pair[0], pair[1]
    if a.color_jitter > 0:  # target only: the label colours are the classes
        photo = tf.image.stateless_random_brightness(photo, a.color_jitter, seeds[4])
        photo = tf.image.stateless_random_contrast(photo, 1 - a.color_jitter, 1 + a.color_jitter, seeds[5])
        photo = tf.clip_by_value(photo, -1.0, 1.0)
    return label, photo


def train_pipeline(split: Split, cfg: Config, start_step: int):
    """Batches for steps start_step..cfg.train.steps-1, deterministic in (seed, step)."""
    import tensorflow as tf
    batch = cfg.train.batch_size
    start, stop = start_step * batch, cfg.train.steps * batch
    order = example_order(len(split.ids), cfg.train.seed, start, stop) if stop > start else np.zeros(0, np.int64)
    inputs, targets = split.inputs, split.targets
    size = cfg.data.image_size

    def examples():
        for k, i in enumerate(order, start):
            yield k, inputs[i], targets[i]

    spec = tf.TensorSpec([size, size, 3], tf.uint8)
    ds = tf.data.Dataset.from_generator(
        examples, output_signature=(tf.TensorSpec([], tf.int64), spec, spec))
    # No tensor-dependent Python control flow in augment (its ifs read the config; the flip is a tf.cond):
    # autograph's source rewrite would change no op and costs about half a second of every run's start.
    prepare = tf.autograph.experimental.do_not_convert(lambda k, x, y: augment(to_unit(x), to_unit(y), k, cfg))
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
