"""The trainer's configuration: its schema with the study's defaults, its checks, and the presets.

One `Config` object flows from the command line (or a Ray Tune search space, or
a SLURM array index) to the trainer unchanged. Every field has a dotted name
(`optim.lr_g`, `model.resnet.blocks`, `aug.mirror`) that works the same way in
`jobs/train.py --optim.lr_g 1e-4` and in a Tune `param_space`.

Defaults are the paper protocol: 256x256, batch 1, 60,000 steps, evaluation
every 1,000 steps, Adam(2e-4, beta_1=0.5) for both nets, BCE + 100 * L1,
split 400/50/50, seed 0. Presets are small functions that change a few fields
(big_vision style); `PRESETS` is their registry.

The model section holds what every generator shares (`model.filters`, ...) and one
section per registered generator with its own settings (`model.resnet.blocks`,
`model.unet.dropout`), declared in the generator's module (gan/models). Older flat
names (`model.resnet_blocks`) still read, from flags and from earlier runs' config.json.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from gan import models
from gan.contract import FCN_METRICS, SEGMENTER_WEIGHTS
from gan.dotted import ConfigError, Dotted, check_folder_names, check_image_size, flag, flatten, from_preset

DATA_FORMATS = ("auto", "synthetic", "pix2pix", "cityscapes", "paired-folders")
BATCHNORM_MODES = ("auto", "fused", "synchronized", "keras")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
ADAM_KERNELS = ("fused", "keras")
UPSAMPLE_KERNELS = ("subpixel", "keras")
CONV_KERNELS = ("auto", "winograd", "keras")
# Fields that name a file or folder: made absolute before a config leaves the user's shell (Tune, SLURM).
PATH_FIELDS = ("data.source", "data.split_file", "data.cache_dir", "eval.segmenter", "eval.inception_weights")
# Every switch with a fixed set of values: checked here once (`Config.validate`), trusted downstream.
CHOICES = {"model.batchnorm": BATCHNORM_MODES, "model.upsample": UPSAMPLE_KERNELS, "model.conv": CONV_KERNELS,
           "optim.adam": ADAM_KERNELS, "train.precision": PRECISIONS, "data.format": DATA_FORMATS,
           "data.input_side": ("left", "right"), "eval.overlap": ("auto", "on", "off")}
AT_LEAST_ONE = ("train.batch_size", "train.eval_every", "train.log_every", "train.checkpoints_to_keep", "train.steps_per_call",
                "data.n_train", "data.n_val", "data.n_test", "model.filters", "eval.samples")
AT_LEAST_ZERO = ("train.steps", "eval.train_subset", "eval.workers")


@dataclass
class DataConfig:
    # 'synthetic' (generated on first use into the cache) or a dataset folder.
    source: str = "synthetic"
    format: str = "auto"  # one of DATA_FORMATS; 'auto' inspects the folder
    # pix2pix side-by-side files: which half is the generator's input. The
    # public Cityscapes archive has the photo on the left, labels on the right.
    input_side: str = "right"
    image_size: int = 256
    n_train: int = 400
    n_val: int = 50
    n_test: int = 50
    # Seed of the 400/50/50 selection, apart from train.seed: runs that differ only in their
    # training seed see the same test photos, so paired tests and seed spreads compare like with like.
    split_seed: int = 0
    # A split.json of another run (or docs/results/split.json): draw exactly its images, by their paths
    # relative to the dataset folder, instead of drawing from split_seed ('' = draw). n_train/n_val/n_test
    # then follow the file.
    split_file: str = ""
    # Cache for the generated synthetic dataset ('' = $PIX2PIX_CACHE or ~/.cache/pix2pix-suite).
    cache_dir: str = ""


@dataclass
class AugConfig:
    # Random jitter as in pix2pix: upscale to size * jitter_scale (286 for 256), random crop back.
    jitter: bool = True
    jitter_scale: float = 286 / 256
    mirror: bool = True  # random left-right flip
    # Colour jitter of the target photo (brightness/contrast/saturation factors, 0 = off).
    color_jitter: float = 0.0
    # Random crop of a fraction of the image (scale range lower bound; 1.0 = off), resized back.
    crop_scale_min: float = 1.0


@dataclass
class ModelConfig:
    """What every generator shares; `model_config()` adds one section per registered generator with
    settings of its own (`model.<name>.*`), and `own` is the chosen generator's."""
    generator: str = "unet"  # a registered generator (gan/models: names())
    discriminator: str = "patchgan"  # a registered discriminator (gan/models: DISCRIMINATORS)
    filters: int = 64  # width of the first layer; every net scales from it
    # BatchNorm kernel: 'auto' = fused on one replica, synchronized on several;
    # 'fused' / 'keras' = per-replica statistics; 'synchronized' = global batch.
    batchnorm: str = "auto"
    # ResNet up blocks (nearest 2x upsample + 3x3 conv): 'subpixel' computes the same function as four
    # 2x2 convolutions on the small image (4/9 of the multiply-adds); 'keras' = UpSampling2D + Conv2D.
    upsample: str = "subpixel"
    # Stride-1 3x3 convs (residual blocks) and the PatchGAN's 4x4 stride-1 conv: 'winograd' computes
    # them as Winograd F(4x4,3x3) / F(3x3,4x4) where that pays (gan/models/winograd.py: 1/4 of the
    # multiply-adds); 'keras' = Conv2D; 'auto' = winograd unless a GPU is visible (cuDNN picks its own).
    conv: str = "auto"

    @property
    def own(self) -> Any:
        """The chosen generator's own settings (its `model.<name>` section), or None when it has none."""
        return getattr(self, self.generator, None)


_MODEL_TYPES: dict[tuple, type] = {}


def model_config(**shared: Any) -> ModelConfig:
    """A ModelConfig with a section for every registered generator that has settings of its own (a
    generator registered later, e.g. by a test, is in the configs made after it)."""
    gens = [models.generator(name) for name in models.names() if models.generator(name).settings]
    key = tuple((g.name, g.settings) for g in gens)
    if key not in _MODEL_TYPES:
        _MODEL_TYPES[key] = dataclasses.make_dataclass(
            "ModelConfig", [(g.name, g.settings, field(default_factory=g.settings)) for g in gens], bases=(ModelConfig,))
    return _MODEL_TYPES[key](**shared)


def legacy_names() -> dict[str, list[str]]:
    """Older flat model fields -> the generators' own settings they now are ('model.resnet_dropout' set
    the dropout of both the ResNet's and the hybrid's residual blocks)."""
    names: dict[str, list[str]] = {}
    for name in models.names():
        for old, new in models.generator(name).aliases.items():
            names.setdefault(f"model.{old}", []).append(f"model.{name}.{new}")
    return names


@dataclass
class OptimConfig:
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    l1_weight: float = 100.0
    # Adam's update kernel: 'fused' = one ResourceApplyAdam pass per variable, 'keras' = Keras's ops
    # (the same formula and variables; gan/optim.py).
    adam: str = "fused"


@dataclass
class TrainConfig:
    steps: int = 60_000
    batch_size: int = 1  # global batch, split over the replicas
    eval_every: int = 1_000
    seed: int = 0
    # 'auto': every GPU, else the CPU; an integer N > 1 on a CPU-only host makes
    # N logical CPU devices (how MirroredStrategy is tested without GPUs).
    devices: str = "auto"
    jit_compile: bool = False  # XLA for forward + backward (1.5-1.8x slower on CPU: jobs/bench.py --jit)
    # float32 (the study's numerics, on every device) unless asked: 'auto' = mixed_float16 (with loss
    # scaling) on GPUs of compute capability >= 7.0, else float32; or mixed_float16 / mixed_bfloat16.
    precision: str = "float32"
    log_every: int = 100  # loss scalars to TensorBoard / plain log lines
    checkpoints_to_keep: int = 2
    # Checkpoints on a clock: every this many minutes of the run (0 = at every evaluation), and always at the
    # end and on a stop signal. On a GPU an evaluation interval is seconds, and both nets with Adam's slots
    # (0.7 GB for the U-Net) at every one of them is a filesystem load, not a safety margin.
    checkpoint_minutes: float = 10.0
    # Training steps per tf.function call between evaluations and logs: fewer host round trips per step
    # (jobs/bench.py --plan measures the host's share); 1 = one call per step. Same updates either way.
    steps_per_call: int = 1


@dataclass
class EvalConfig:
    train_subset: int = 50  # fixed train images measured at each evaluation
    samples: int = 4  # rows in the input | target | output grid
    workers: int = 0  # metric worker processes; 0 = one per CPU core
    # FCN-score on the test split: a run directory of jobs/train_segmenter.py ('' = off).
    segmenter: str = ""
    # Also the FCN-score at every evaluation (train subset and val, fcn_metrics.csv); needs segmenter.
    fcn_every_eval: bool = False
    # FID/KID on the test split: a Keras weights file of InceptionV3(include_top=False, pooling='avg').
    inception_weights: str = ""
    # Which checkpoint the test split scores: 'last' (the study), or 'best_val_<metric>' - the evaluation
    # with the best validation <metric> (e.g. best_val_ssim, best_val_fcn_iou with fcn_every_eval).
    # Selected on val, reported on test; never selected on test.
    select: str = "last"
    # The metrics of an evaluation computed in worker processes while training goes on (its photos are
    # generated on the device first; rows are written in step order, identical to 'off'). 'auto': on with a
    # GPU, off on a CPU, where the workers would take the training's cores (jobs/bench.py measures both).
    overlap: str = "auto"


@dataclass
class Config(Dotted):
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=model_config)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment: str = "default"
    run_name: str = ""  # '' = the generator name

    @property
    def name(self) -> str:
        return self.run_name or self.model.generator

    def set(self, dotted: str, value: Any) -> None:
        """As Dotted.set; an older flat model name sets the generators' own settings it became."""
        for target in legacy_names().get(dotted, [dotted]):
            super().set(target, value)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Config":
        """A config from its dict (config.json, a sweep's base). The section of a generator that is not
        registered in this process is left out: a run written where a user's generator was registered
        still reads; a run *of* that generator fails validation, naming it."""
        cfg = cls()
        mine = set(dataclasses.asdict(cfg.model))
        cfg.update({k: v for k, v in flatten(raw) if not _foreign_section(k, mine)})
        return cfg

    def with_absolute_paths(self) -> "Config":
        """A copy whose relative file and folder fields are absolute (from this process's working
        directory): a Tune trial starts in its own trial folder, a SLURM job wherever the node puts it.
        Values that are not existing paths ('synthetic', 'cityscapes', '') stay as they are."""
        out = Config.from_dict(self.to_dict())
        for key in PATH_FIELDS:
            value = self.flat()[key]
            if value and not Path(value).expanduser().is_absolute() and Path(value).expanduser().exists():
                out.set(key, str(Path(value).expanduser().resolve()))
        return out

    def validate(self, metrics: Iterable[str] | None = None) -> "Config":
        """Raise ConfigError naming the first bad field. The only check of these values: the layers,
        optimizers and data readers downstream trust them. `metrics`: the image metrics registered
        (gan/evaluators/metrics.py, passed by the trainer and the sweep driver, which import it); without
        them `eval.select` is checked for its form only."""
        self._check_choices(None if metrics is None else tuple(metrics))
        self._check_ranges()
        self._check_files()
        check_folder_names(self)
        return self

    def _check_choices(self, metrics: tuple[str, ...] | None) -> None:
        m, size = self.model, self.data.image_size
        if m.generator not in models.names():
            raise ConfigError(f"--model.generator: unknown generator {m.generator!r} "
                              f"(choose from {', '.join(models.names())})")
        if m.discriminator not in models.DISCRIMINATORS:
            raise ConfigError(f"--model.discriminator: unknown discriminator {m.discriminator!r} "
                              f"(choose from {', '.join(models.DISCRIMINATORS.names())})")
        for key, allowed in CHOICES.items():
            if self.flat()[key] not in allowed:
                raise ConfigError(f"{flag(key)}: unknown value {self.flat()[key]!r} (choose from {', '.join(allowed)})")
        check_image_size("data.image_size", size)
        check = models.generator(m.generator).check
        problem = check(m, size) if check else None
        if problem:
            raise ConfigError(problem)
        if self.eval.select != "last":
            metric = self.eval.select.removeprefix("best_val_")
            fcn = FCN_METRICS if self.eval.fcn_every_eval else ()
            known = (*metrics, *fcn) if metrics is not None else None
            if (not self.eval.select.startswith("best_val_") or not metric.isidentifier() or
                    metric in FCN_METRICS and not fcn or known is not None and metric not in known):
                listed = f"metrics: {', '.join(known)}; " if known is not None else ""
                raise ConfigError(f"--eval.select: {self.eval.select!r} is not 'last' or best_val_<metric> "
                                  f"({listed}FCN metrics need --eval.fcn_every_eval)")

    def _check_ranges(self) -> None:
        flat, t = self.flat(), self.train
        for keys, minimum in ((AT_LEAST_ONE, 1), (AT_LEAST_ZERO, 0)):
            for key in keys:
                if flat[key] < minimum:
                    raise ConfigError(f"--{key}: must be >= {minimum}, got {flat[key]}")
        for key in ("optim.beta1", "optim.beta2", "aug.color_jitter"):
            if not 0.0 <= flat[key] < 1.0:
                raise ConfigError(f"--{key}: must be in [0, 1), got {flat[key]}")
        for key in ("optim.lr_g", "optim.lr_d", "optim.l1_weight"):
            if not (math.isfinite(flat[key]) and flat[key] >= 0):
                raise ConfigError(f"--{key}: must be a finite number >= 0, got {flat[key]}")
        for key in ("train.seed", "data.split_seed"):  # numpy and TensorFlow take seeds in [0, 2**32)
            if not 0 <= flat[key] < 2 ** 32:
                raise ConfigError(f"--{key}: must be an integer from 0 to 2**32 - 1, got {flat[key]}")
        if not (math.isfinite(t.checkpoint_minutes) and t.checkpoint_minutes >= 0):
            raise ConfigError(f"--train.checkpoint_minutes: must be a finite number >= 0 (0: at every evaluation), "
                              f"got {t.checkpoint_minutes}")
        if self.aug.jitter_scale < 1.0:
            raise ConfigError(f"--aug.jitter_scale: must be >= 1, got {self.aug.jitter_scale}")
        if not 0.0 < self.aug.crop_scale_min <= 1.0:
            raise ConfigError(f"--aug.crop_scale_min: must be in (0, 1], got {self.aug.crop_scale_min}")
        if t.devices != "auto" and not (t.devices.isdigit() and int(t.devices) >= 1):
            raise ConfigError(f"--train.devices: must be 'auto' or a positive integer, got {t.devices!r}")
        if t.devices.isdigit() and t.batch_size % int(t.devices):
            raise ConfigError(f"--train.batch_size: {t.batch_size} does not split over {t.devices} devices")

    def _check_files(self) -> None:
        e, d = self.eval, self.data
        if e.segmenter and not (Path(e.segmenter) / SEGMENTER_WEIGHTS).exists():
            raise ConfigError(f"--eval.segmenter {e.segmenter}: no {SEGMENTER_WEIGHTS} there "
                              "(train one with jobs/train_segmenter.py)")
        if e.fcn_every_eval and not e.segmenter:
            raise ConfigError("--eval.fcn_every_eval: needs --eval.segmenter (a jobs/train_segmenter.py run)")
        if d.split_file and not Path(d.split_file).is_file():
            raise ConfigError(f"--data.split_file {d.split_file}: no such file")
        if e.inception_weights and not Path(e.inception_weights).is_file():
            raise ConfigError(f"--eval.inception_weights {e.inception_weights}: no such file")


def _foreign_section(key: str, sections: set[str]) -> bool:
    """model.<name>.<setting> where <name> is no section of this process's ModelConfig."""
    parts = key.split(".")
    return len(parts) == 3 and parts[0] == "model" and parts[1] not in sections


def run_fields(written: dict[str, Any], generator: str | None = None) -> dict[str, Any]:
    """A run's recorded config (config.json's "config") as today's dotted fields of its generator: a field
    added since reads as its default (the run ran under it), an older flat name as the setting it now is
    (`model.resnet_blocks` -> `model.resnet.blocks`), other generators' own settings left out. What a
    resume compares and what the analysis groups by, so old run directories keep loading."""
    values = dict(flatten(written))
    for old, new in legacy_names().items():
        if old in values:
            value = values.pop(old)
            values.update({name: value for name in new if name not in values})
    merged = {**Config().flat(), **values}
    return for_generator(merged, generator or merged["model.generator"])


def for_generator(values: dict[str, Any], generator: str) -> dict[str, Any]:
    """Dotted values without other generators' own settings: what a run of `generator` is given from a
    sweep drawn for all generators (its name and identity then carry only the knobs it has)."""
    others = {f"model.{name}." for name in models.names() if name != generator}
    return {k: v for k, v in values.items() if not k.startswith(tuple(others))}


# -- presets ----------------------------------------------------------------

def paper(cfg: Config) -> Config:
    """The study's protocol (the defaults): 256px, batch 1, 60k steps, eval every 1k.

    About 9-25 minutes per generator on one A100 or H100 by the cost model (`jobs/bench.py --plan`: the
    nets' 75-379 GFLOP per step at 15 % of the dense rate, plus the host's ~8 ms per step measured on a
    CPU host); the study's 800-960 s per 1,000 steps was its own pipeline, not what the nets cost.
        python jobs/train.py --gens unet --data /data/cityscapes --preset paper
    """
    return cfg


def small(cfg: Config) -> Config:
    """CPU demo: 64px synthetic scenes, 600 steps, eval every 150; ~1-2 min per generator on 2 cores.

        python jobs/train.py --gens hybrid --preset small
    """
    cfg.data.image_size = 64
    cfg.data.n_train, cfg.data.n_val, cfg.data.n_test = 100, 20, 20
    cfg.train.steps, cfg.train.eval_every, cfg.train.log_every = 600, 150, 50
    cfg.eval.train_subset = 20
    # Narrower nets: the paper's widths only pay off at 256px and on a GPU (and the generators' own
    # settings for 'small', e.g. 6 residual blocks for the ResNet).
    cfg.model.filters = 32
    return cfg


def cityscapes_cpu(cfg: Config) -> Config:
    """The study's protocol on real Cityscapes at a budget a 2-core CPU finishes for all three generators
    in about an hour: 128 px, 2,000 steps, evaluation every 250; split 400/50/50, batch 1, the paper's
    widths and optimizers. 128 px keeps what 256 px shows (cars, poles, signs at a few pixels) at a
    quarter of the FLOPs; the ResNet's preset has 6 residual blocks, CycleGAN's choice for 128 px (9 for 256). Add the
    FCN-score at every evaluation with a segmenter trained on the real photos:

        python jobs/train_segmenter.py --data cityscapes
        python jobs/tune.py --gens all --preset cityscapes_cpu --data cityscapes \
            --cpus-per-trial 2 --eval.segmenter runs/segmenter/segmenter --eval.fcn_every_eval true
    """
    cfg.data.image_size = 128
    cfg.train.steps, cfg.train.eval_every, cfg.train.log_every = 2_000, 250, 50
    return cfg


def tiny(cfg: Config) -> Config:
    """Seconds-long runs for tests: 32px, 8 steps, eval every 4."""
    cfg.data.image_size = 32
    cfg.data.n_train, cfg.data.n_val, cfg.data.n_test = 12, 4, 4
    cfg.train.steps, cfg.train.eval_every, cfg.train.log_every = 8, 4, 2
    # One metric worker: at 32px a process pool costs more than it saves.
    cfg.eval.train_subset, cfg.eval.samples, cfg.eval.workers = 4, 2, 1
    # A checkpoint at every evaluation: the tests stop and resume runs between any two of them.
    cfg.train.checkpoint_minutes = 0.0
    cfg.model.filters = 8  # (and each generator's own shrinking, e.g. fewer residual blocks)
    return cfg


PRESETS: dict[str, Callable[[Config], Config]] = {"paper": paper, "small": small, "cityscapes_cpu": cityscapes_cpu,
                                                  "tiny": tiny}


def make_config(preset: str = "paper", overrides: dict[str, Any] | None = None) -> Config:
    """Preset (with each generator's own settings for it), then dotted overrides, then validation."""
    return from_preset(PRESETS, Config, preset, overrides, _own_presets)


def _own_presets(cfg: Config, preset: str, overrides: dict[str, Any]) -> Config:
    """Each generator's own settings for `preset`; then an older flat name given with its new one is refused."""
    _refuse_twice_named(overrides)
    for name in models.names():
        for setting, value in models.generator(name).presets.get(preset, {}).items():
            cfg.set(f"model.{name}.{setting}", value)
    return cfg


def _refuse_twice_named(overrides: dict[str, Any]) -> None:
    """An older flat name and the setting it now is, both given (`--model.resnet_blocks 3 --model.resnet.blocks
    4`): which would win is not the user's choice to guess, so neither does."""
    for old, new in legacy_names().items():
        both = [name for name in new if name in overrides]
        if old in overrides and both:
            raise ConfigError(f"--{old} and --{both[0]} name the same setting; give one (--{both[0]})")


