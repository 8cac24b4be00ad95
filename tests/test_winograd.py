"""Winograd convolution (gan/models/winograd.py, layers.WinogradConv2D) against TensorFlow's direct conv."""

import numpy as np
import pytest

from gan.models import winograd
from gan.models.winograd import transforms


@pytest.mark.parametrize("m,r", [(2, 3), (4, 3), (2, 4), (3, 4), (4, 2)])
def test_transforms_compute_correlation_exactly(m, r):
    at, g, bt = transforms(m, r)
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, k = rng.normal(size=m + r - 1), rng.normal(size=r)
        expected = [d[i:i + r] @ k for i in range(m)]
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("r,m,height,width", [(3, 4, 10, 7), (3, 4, 18, 18), (4, 3, 9, 12), (4, 2, 9, 12), (3, 2, 6, 5)])
def test_conv2d_valid_matches_direct_conv(r, m, height, width):
    """Outputs and both gradients, on sizes that do and do not fill the last tile."""
    import tensorflow as tf

    from gan.models.winograd import conv2d_valid
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, height, width, 5)).astype("float32"))
    kernel = tf.constant(rng.normal(size=(r, r, 5, 6)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        expected, got = tf.nn.conv2d(x, kernel, 1, "VALID"), conv2d_valid(x, kernel, m)
        losses = [tf.reduce_sum(tf.sin(y)) for y in (expected, got)]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4 * float(tf.reduce_max(tf.abs(expected))))
    for a, b in zip(tape.gradient(losses[0], [x, kernel]), tape.gradient(losses[1], [x, kernel])):
        np.testing.assert_allclose(b, a, atol=1e-4 * float(tf.reduce_max(tf.abs(a))))


@pytest.mark.parametrize("size,padding", [(3, "same"), (4, "same"), (4, "valid"), (3, "valid")])
def test_winograd_layer_is_conv2d(size, padding, winograd_everywhere):
    """Same weights, same outputs as Keras's Conv2D (bias included), with an unknown batch size."""
    import keras
    import tensorflow as tf
    from keras import layers

    from gan.models.layers import WinogradConv2D
    reference = layers.Conv2D(8, size, padding=padding, bias_initializer="random_normal")
    winograd = WinogradConv2D(8, size, padding=padding)
    inputs = keras.Input((13, 11, 4))
    model_ref, model_win = keras.Model(inputs, reference(inputs)), keras.Model(inputs, winograd(inputs))
    winograd.set_weights(reference.get_weights())
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 13, 11, 4)).astype("float32"))
    expected = model_ref(x)
    np.testing.assert_allclose(model_win(x), expected, atol=1e-4 * float(tf.reduce_max(tf.abs(expected))))


def test_winograd_layer_falls_back_to_direct_conv_in_bfloat16(winograd_everywhere):
    """Under mixed precision the transforms would lose too much: the direct conv runs instead."""
    import tensorflow as tf
    from keras import layers

    from gan.models.layers import WinogradConv2D
    reference = layers.Conv2D(8, 3, padding="same", dtype="mixed_bfloat16")
    winograd = WinogradConv2D(8, 3, padding="same", dtype="mixed_bfloat16")
    x = tf.constant(np.random.default_rng(3).normal(size=(1, 8, 8, 4)).astype("float32"))
    reference.build(x.shape)
    winograd.build(x.shape)
    winograd.set_weights(reference.get_weights())
    np.testing.assert_array_equal(winograd(x).numpy(), reference(x).numpy())


def test_auto_is_winograd_without_a_gpu_and_keras_with_one():
    import tensorflow as tf
    from keras import layers

    from gan.models.layers import WinogradConv2D, conv_class
    expected = layers.Conv2D if tf.config.list_logical_devices("GPU") else WinogradConv2D
    assert conv_class("auto") is expected and conv_class("keras") is layers.Conv2D


@pytest.mark.parametrize("height,channels,expected", [(64, 256, True), (32, 256, True), (32, 128, True),
                                                      (16, 256, False), (64, 64, False), (None, 256, False)])
def test_small_convs_keep_the_direct_conv(height, channels, expected):
    """Below 24 output rows or columns, or 128 channels, the transforms cost more than they save."""
    assert winograd.worthwhile(height, height, channels, channels, 3) is expected


def test_exported_generator_with_winograd_convs(tmp_path, winograd_everywhere):
    """The SavedModel of a generator whose residual convs run as Winograd serves the same photos."""
    import tensorflow as tf

    from gan.config import make_config
    from gan.inference import Generator, export_saved_model
    cfg = make_config("tiny", {"model.generator": "resnet", "model.conv": "winograd"})
    generator = Generator(cfg)
    assert any(type(layer).__name__ == "WinogradConv2D" for layer in generator.model._flatten_layers())
    labels = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    export_saved_model(generator, 32, tmp_path / "model")
    served = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"](labels=tf.constant(labels))
    np.testing.assert_allclose(served["photos"].numpy().astype(int), generator(labels).astype(int), atol=1)
