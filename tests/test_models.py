"""Models: output shapes at every supported size, the parameter counts their docstrings state."""

import pytest

import importlib
import re

from gan.errors import UserError
from gan.config import make_config
from gan.models import build_discriminator, build_generator, generator, names


def model_cfg(settings: dict | None = None, **shared):
    """A validated model config: shared fields as keywords, generators' own settings by their dotted
    names under `model.` ({"resnet.blocks": 2})."""
    overrides = {f"model.{k}": v for k, v in {**shared, **(settings or {})}.items()}
    return make_config("paper", overrides).model


def tiny_own(name: str) -> dict:
    """The generator's own settings of the `tiny` preset, by their dotted names under `model.`."""
    return {f"{name}.{k}": v for k, v in generator(name).presets.get("tiny", {}).items()}


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("name", names())
def test_generator_shapes(name, size):
    model = build_generator(model_cfg(tiny_own(name), generator=name, filters=8), size)
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, size, size, 3)


@pytest.mark.parametrize("size,patches", [(32, 2), (64, 6), (256, 30)])
def test_patchgan_patches(size, patches):
    assert build_discriminator(model_cfg(filters=8), size).output_shape == (None, patches, patches, 1)


def test_unet_depth_follows_size():
    convs = lambda s: sum(1 for layer in build_generator(model_cfg(filters=4), s).layers
                          if layer.name.startswith("down"))
    assert [convs(s) for s in (32, 64, 512)] == [5, 6, 9]


@pytest.mark.parametrize("name", names())
def test_parameter_counts_at_paper_settings(name):
    """Each generator's module docstring states its parameter count at the paper's settings."""
    doc = importlib.import_module(generator(name).build.__module__).__doc__ or ""
    stated = re.search(r"([\d,]+) parameters", doc)
    assert stated, f"{name}: its module docstring states no parameter count"
    assert build_generator(model_cfg(generator=name), 256).count_params() == int(stated.group(1).replace(",", ""))


def test_discriminator_parameter_count():
    assert build_discriminator(model_cfg(), 256).count_params() == 2_770_433


def test_bad_generator_and_size_are_refused_by_the_config_alone():
    """One validation: the config names the flag; the builders trust what it passed."""
    with pytest.raises(UserError, match="--model.generator: unknown generator 'vgg'"):
        make_config("tiny", {"model.generator": "vgg"})
    with pytest.raises(UserError, match="--data.image_size: 48 is not a power of two"):
        make_config("tiny", {"data.image_size": 48})
    with pytest.raises(UserError, match="--model.hybrid.downs: 6 down blocks cannot take 32px"):
        make_config("tiny", {"model.generator": "hybrid", "model.hybrid.downs": 6})


def test_hybrid_is_built_as_the_study_describes():
    """Initial conv, then DCGAN-style down blocks that all have conv + BN + LeakyReLU, residual blocks,
    transposed-conv up blocks, a final conv with tanh."""
    import keras
    model = build_generator(model_cfg({"hybrid.blocks": 2}, generator="hybrid", filters=8), 64)
    assert model.layers[1].name == "initial_conv" and isinstance(model.layers[1], keras.layers.Conv2D)
    downs = [layer for layer in model.layers if layer.name.startswith("down")]
    assert len(downs) == 3
    for block in downs:
        kinds = [type(layer).__mro__[1].__name__ if type(layer).__name__ == "FusedBatchNorm" else
                 type(layer).__name__ for layer in block.layers]
        assert kinds == ["Conv2D", "BatchNormalization", "LeakyReLU"], (block.name, kinds)
    ups = [layer for layer in model.layers if layer.name.startswith("up")]
    assert len(ups) == 3 and all(isinstance(b.layers[0], keras.layers.Conv2DTranspose) for b in ups)
    assert isinstance(model.layers[-1], keras.layers.Conv2D) and model.layers[-1].activation.__name__ == "tanh"


def test_subpixel_upsample_conv_is_upsample_then_conv():
    """UpsampleConv2D computes UpSampling2D(2) + Conv2D(3x3, same): outputs and both gradients."""
    import numpy as np
    import tensorflow as tf
    from keras import layers

    from gan.models.layers import UpsampleConv2D
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 6, 10, 5)).astype("float32"))
    reference, subpixel = layers.Conv2D(7, 3, padding="same", bias_initializer="random_normal"), UpsampleConv2D(7)
    reference.build((None, 12, 20, 5))
    subpixel.build(x.shape)
    subpixel.set_weights(reference.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        expected, got = reference(layers.UpSampling2D(2)(x)), subpixel(x)
        losses = [tf.reduce_sum(tf.sin(y)) for y in (expected, got)]
    assert got.shape == (2, 12, 20, 7)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for a, b in zip(tape.gradient(losses[0], [x, reference.kernel]), tape.gradient(losses[1], [x, subpixel.kernel])):
        np.testing.assert_allclose(b, a, atol=1e-4 * float(tf.reduce_max(tf.abs(a))))


def test_resnet_checkpoints_move_between_upsample_kernels(tmp_path):
    """A ResNet saved with model.upsample keras restores into subpixel and computes the same images."""
    import numpy as np
    import tensorflow as tf
    cfgs = [model_cfg({"resnet.blocks": 1}, generator="resnet", filters=4, upsample=u) for u in ("keras", "subpixel")]
    keras_net, subpixel_net = (build_generator(c, 32) for c in cfgs)
    path = tf.train.Checkpoint(g=keras_net).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(g=subpixel_net).restore(path).assert_existing_objects_matched()
    x = tf.constant(np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype("float32"))
    np.testing.assert_allclose(subpixel_net(x), keras_net(x), atol=1e-5)


@pytest.mark.parametrize("gen", names())
def test_checkpoints_move_between_conv_kernels(tmp_path, gen, winograd_everywhere):
    """Generator and discriminator saved with model.conv keras restore into winograd: same outputs."""
    import numpy as np
    import tensorflow as tf
    cfgs = [model_cfg(tiny_own(gen), generator=gen, filters=4, conv=c) for c in ("keras", "winograd")]
    nets = [(build_generator(c, 32), build_discriminator(c, 32)) for c in cfgs]
    path = tf.train.Checkpoint(g=nets[0][0], d=nets[0][1]).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(g=nets[1][0], d=nets[1][1]).restore(path).assert_existing_objects_matched()
    x = tf.constant(np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype("float32"))
    (g_keras, d_keras), (g_win, d_win) = nets
    np.testing.assert_allclose(g_win(x), g_keras(x), atol=1e-5)
    np.testing.assert_allclose(d_win([x, x]), d_keras([x, x]), atol=1e-4)
