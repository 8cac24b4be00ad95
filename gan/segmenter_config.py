"""The segmenter's config (jobs/train_segmenter.py): the FCN-score's judge, trained on real photos to label
them, so a generated photo is scored by how well it is read back (gan/evaluators/segmenter.py)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from gan.config import DATA_FORMATS
from gan.dotted import ConfigError, Dotted, check_folder_names, check_image_size, field_names, flag, from_preset


@dataclass
class SegmenterDataConfig:
    source: str = "synthetic"  # as data.source of the trainer: 'synthetic' or a dataset folder
    format: str = "auto"
    input_side: str = "right"  # which half of a pix2pix file is the label map
    image_size: int = 128  # the segmenter's working size (photos are resized to it)
    max_train: int = 100_000  # images of the train split used (all by default)
    max_val: int = 500


@dataclass
class SegmenterTrainConfig:
    # 0 = auto: up to 40 epochs, fewer when the train split is large, so that about `image_budget`
    # training images are seen (full Cityscapes, 2,975 images: 4 epochs; cityscapes-mini: 40).
    epochs: int = 0
    image_budget: int = 12_000  # ~30-45 min on 2 CPU cores at 128 px (measured ~4-7 images/s)
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0


@dataclass
class SegmenterModelConfig:
    filters: int = 32  # width of the first block; the encoder doubles it three times


@dataclass
class SegmenterEvalConfig:
    score_size: int = 256  # the final validation score is taken at the study's resolution


@dataclass
class SegmenterConfig(Dotted):
    data: SegmenterDataConfig = field(default_factory=SegmenterDataConfig)
    model: SegmenterModelConfig = field(default_factory=SegmenterModelConfig)
    train: SegmenterTrainConfig = field(default_factory=SegmenterTrainConfig)
    eval: SegmenterEvalConfig = field(default_factory=SegmenterEvalConfig)
    experiment: str = "segmenter"
    run_name: str = "segmenter"  # <out>/segmenter/segmenter: what --eval.segmenter runs/segmenter/segmenter names

    @property
    def name(self) -> str:
        return self.run_name

    def validate(self) -> "SegmenterConfig":
        """Raise ConfigError naming the first bad field (the segmenter trusts the rest)."""
        t = self.train
        for key, allowed in (("data.format", DATA_FORMATS), ("data.input_side", ("left", "right"))):
            if self.flat()[key] not in allowed:
                raise ConfigError(f"{flag(key)}: unknown value {self.flat()[key]!r} (choose from {', '.join(allowed)})")
        for key in ("data.image_size", "eval.score_size"):
            check_image_size(key, self.flat()[key])
        for key in ("data.max_train", "data.max_val", "train.image_budget", "train.batch_size", "model.filters"):
            if self.flat()[key] < 1:
                raise ConfigError(f"--{key}: must be >= 1, got {self.flat()[key]}")
        if t.epochs < 0:
            raise ConfigError(f"--train.epochs: must be >= 0 (0 = from the image budget), got {t.epochs}")
        if not (math.isfinite(t.lr) and t.lr > 0):
            raise ConfigError(f"--train.lr: must be a finite number > 0, got {t.lr}")
        check_folder_names(self)
        return self

    @classmethod
    def from_record(cls, raw: dict[str, Any]) -> "SegmenterConfig":
        """config.json's "config" of a segmenter run; runs written before the nested layout (one flat
        object: source, image_size, epochs, ...) read as their nested equivalent."""
        if not any(isinstance(v, dict) for v in raw.values()):
            groups = {f.name: f.type for f in dataclasses.fields(cls) if f.name in ("data", "model", "train", "eval")}
            where = {name: group for group in groups for name in field_names(getattr(cls(), group))}
            raw = {f"{where[k]}.{k}": v for k, v in raw.items() if k in where}
            return cls().update(raw)
        return cls.from_dict(raw)


def segmenter_tiny(cfg: SegmenterConfig) -> SegmenterConfig:
    """Tests: ~15 s on 2 cores; enough images and steps that real photos beat a constant image by a wide
    margin (class acc ~0.45-0.5 against ~0.23), whatever the thread order of the float sums."""
    cfg.data.image_size, cfg.eval.score_size, cfg.data.max_train, cfg.data.max_val = 32, 32, 96, 8
    cfg.model.filters = 16
    cfg.train.epochs, cfg.train.batch_size = 12, 4
    return cfg


SEGMENTER_PRESETS: dict[str, Callable[[SegmenterConfig], SegmenterConfig]] = {
    "default": lambda cfg: cfg,  # the full train split at 128 px, epochs from the image budget
    "tiny": segmenter_tiny,
}


def make_segmenter_config(preset: str = "default", overrides: dict[str, Any] | None = None) -> SegmenterConfig:
    """Preset, then dotted overrides, then validation (as `make_config`)."""
    return from_preset(SEGMENTER_PRESETS, SegmenterConfig, preset, overrides)
