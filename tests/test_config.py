"""Config: the paper's defaults, presets, dotted overrides, validation."""

import pytest

from gan.cli import parse_overrides
from gan.config import Config, make_config
from gan.dotted import ConfigError
from gan.errors import UserError


def test_defaults_are_the_paper_protocol():
    cfg = make_config()
    assert cfg.data.image_size == 256 and cfg.train.batch_size == 1
    assert cfg.train.steps == 60_000 and cfg.train.eval_every == 1_000
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.beta1) == (2e-4, 2e-4, 0.5)
    assert cfg.optim.l1_weight == 100
    assert (cfg.data.n_train, cfg.data.n_val, cfg.data.n_test) == (400, 50, 50)


def test_dotted_overrides_convert_types():
    cfg = make_config("small", {"optim.lr_g": "1e-4", "aug.mirror": "false", "train.steps": "2_000",
                                "model.generator": "resnet", "model.resnet.dropout": 0.5})
    assert cfg.optim.lr_g == 1e-4 and cfg.aug.mirror is False and cfg.train.steps == 2000
    assert cfg.model.generator == "resnet" and cfg.model.own.dropout == 0.5 == cfg.model.resnet.dropout
    assert cfg.data.image_size == 64  # from the preset, not overridden
    assert cfg.model.resnet.blocks == 6  # the ResNet's own setting for the 'small' preset


def test_older_flat_model_names_read_as_the_generators_own_settings():
    """Flags and config.json of runs written before the generators owned their settings keep working."""
    old = {"model": {"generator": "hybrid", "dropout": 0.2, "resnet_blocks": 7, "resnet_dropout": 0.3,
                     "hybrid_blocks": 4, "hybrid_downs": 2, "filters": 16}}
    cfg = Config.from_dict(old)
    m = cfg.model
    assert (m.unet.dropout, m.resnet.blocks, m.resnet.dropout, m.hybrid.blocks, m.hybrid.downs, m.hybrid.dropout,
            m.filters) == (0.2, 7, 0.3, 4, 2, 0.3, 16)
    assert make_config("tiny", {"model.resnet_blocks": 3}).model.resnet.blocks == 3
    assert "model.resnet_blocks" not in cfg.flat() and cfg.flat()["model.hybrid.downs"] == 2


def test_a_section_of_a_generator_not_registered_here_is_left_out_and_its_runs_named():
    raw = make_config("tiny").to_dict()
    raw["model"]["elsewhere"] = {"depth": 3}
    assert "elsewhere" not in Config.from_dict(raw).to_dict()["model"]
    raw["model"]["generator"] = "elsewhere"
    with pytest.raises(ConfigError, match="--model.generator: unknown generator 'elsewhere'"):
        Config.from_dict(raw).validate()


def test_round_trip_through_dict():
    cfg = make_config("tiny", {"optim.l1_weight": 50})
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert cfg.flat()["optim.l1_weight"] == 50.0


def test_parse_overrides_forms():
    assert parse_overrides(["--a.b", "1", "--c.d=x"]) == {"a.b": "1", "c.d": "x"}
    with pytest.raises(UserError, match="needs a value"):
        parse_overrides(["--a.b"])
    with pytest.raises(UserError, match="unknown argument"):
        parse_overrides(["--nodot", "1"])


@pytest.mark.parametrize("key,value,message", [
    ("optim.nope", "1", "unknown config field"),
    ("train.steps", "abc", "expected int"),
    ("train.steps", "-1", "must be >= 0"),
    ("data.image_size", "100", "not a power of two"),
    ("data.image_size", "1024", "not a power of two"),
    ("model.generator", "vgg", "unknown generator"),
    ("aug.mirror", "maybe", "expected bool"),
    ("model.dropout", "1.5", "must be in [0, 1)"),
    ("model.unet.dropout", "-0.5", "--model.unet.dropout: must be in [0, 1), got -0.5"),
    ("model.unet.depth", "3", "unknown config field"),
    ("train.devices", "two", "'auto' or a positive integer"),
    ("optim", "1", "is a group"),
    ("model.batchnorm", "group", "unknown value 'group'"),
    ("train.precision", "fp8", "unknown value 'fp8'"),
    ("eval.fcn_every_eval", "true", "needs --eval.segmenter"),
])
def test_bad_values_name_the_flag(key, value, message):
    with pytest.raises(ConfigError) as e:
        make_config("paper", {key: value})
    assert f"--{key.split('.')[0]}" in str(e.value) and message in str(e.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="--preset"):
        make_config("huge")


def test_paper_preset_is_float32_everywhere():
    """The study trained in float32; mixed precision only when asked (train.precision auto/mixed_*)."""
    from gan.config import make_config
    for preset in ("paper", "small", "tiny"):
        assert make_config(preset).train.precision == "float32"
    assert make_config("paper").data.split_seed == 0


def test_paths_leave_the_shell_absolute(tmp_path, monkeypatch):
    """A Tune trial runs in its own trial folder and a SLURM job wherever the node starts it: relative
    paths given on the command line are made absolute before the config travels (names stay names)."""
    (tmp_path / "runs" / "segmenter" / "segmenter").mkdir(parents=True)
    (tmp_path / "runs" / "segmenter" / "segmenter" / "segmenter.weights.h5").write_bytes(b"")
    (tmp_path / "split.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    cfg = make_config("tiny", {"eval.segmenter": "runs/segmenter/segmenter", "data.split_file": "split.json"})
    travelling = cfg.with_absolute_paths()
    assert travelling.eval.segmenter == str(tmp_path / "runs" / "segmenter" / "segmenter")
    assert travelling.data.split_file == str(tmp_path / "split.json")
    assert travelling.data.source == "synthetic" and cfg.eval.segmenter == "runs/segmenter/segmenter"
    from cluster.tune import travelling as to_trials  # what make_tuner and restore_tuner hand every trial
    base, out = to_trials(cfg, "runs", "x")
    assert base["eval"]["segmenter"] == travelling.eval.segmenter and out == str(tmp_path / "runs")
    assert base["experiment"] == "x"
