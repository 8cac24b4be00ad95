"""The Keras layers and blocks the networks share (the registry and the nets are beside this file).

- `FusedBatchNorm`: Keras BatchNormalization whose training pass is TensorFlow's
  fused kernel (FusedBatchNormV3: one pass forward and backward instead of
  Keras 3's moments + elementwise ops). `norm_layer` picks it on one replica
  and `synchronized=True` on several, so the batch statistics are those of the
  global batch and N replicas train exactly like one device. Both keep the
  same four variables, so checkpoints move freely between them.
- `UpsampleConv2D` (`model.upsample subpixel`): nearest 2x upsample + 3x3 conv
  computed on the small image.
- `WinogradConv2D` (`model.conv`): stride-1 convs as Winograd F(m, r)
  (`winograd.py`): fewer multiply-adds, same variables and function as Conv2D.
- the pix2pix down / up blocks, conv + BN + ReLU, the residual block.

All convolutions start from N(0, 0.02) as in pix2pix. The switches arrive
validated (`Config.validate`); these layers trust them.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers



def init():
    return keras.initializers.RandomNormal(0.0, 0.02)


class FusedBatchNorm(layers.BatchNormalization):
    """Keras BatchNormalization whose training pass is TensorFlow's fused kernel.

    Same variables, same forward values (biased batch variance, as Keras) and
    same moving-average update; only the kernel differs. Statistics are per
    replica, so `norm_layer` uses it only when there is one.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf
        x = tf.cast(inputs, "float32")  # as Keras: statistics in float32 under mixed precision
        empty = tf.constant([], tf.float32)
        y, mean, unbiased_var, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma, offset=self.beta, mean=empty, variance=empty, epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = unbiased_var * tf.maximum(n - 1.0, 0.0) / n  # the kernel reports n/(n-1) x Keras's
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


class UpsampleConv2D(layers.Conv2D):
    """Nearest 2x upsampling followed by this 3x3 'same' convolution, computed on the small image.

    Each output phase (even/odd row x even/odd column) of upsample-then-conv
    reads a 2x2 window of the small image, with the 3x3 kernel's taps summed
    where two of them fall on the same small pixel. So the layer pads the small
    image by one, runs one 2x2 convolution with 4 x filters outputs (the four
    phases' kernels, derived from the 3x3 kernel at every call) and interleaves
    the phases with depth_to_space: 16/36 of the multiply-adds of convolving
    the upsampled image, same variable, same values (to float rounding; a test
    checks outputs and gradients against UpSampling2D + Conv2D).
    """

    # Taps per phase along one axis: phase 0 reads (i-1, i) with weights (w0, w1 + w2),
    # phase 1 reads (i, i+1) with weights (w0 + w1, w2).
    _PHASE_TAPS = ((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1))

    def __init__(self, filters: int, **kwargs):
        super().__init__(filters, 3, padding="same", **kwargs)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return n, None if h is None else 2 * h, None if w is None else 2 * w, self.filters

    def call(self, inputs):
        import tensorflow as tf
        kernel = tf.convert_to_tensor(self.kernel)
        taps = tf.constant(self._PHASE_TAPS, kernel.dtype)
        c_in, c_out = kernel.shape[2], self.filters
        phase_kernels = tf.reshape(tf.einsum("ayk,bxl,klio->yxiabo", taps, taps, kernel), [2, 2, c_in, 4 * c_out])
        y = tf.nn.conv2d(tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]]), phase_kernels, 1, "VALID")
        h, w = tf.shape(inputs)[1], tf.shape(inputs)[2]
        phases = [y[:, a:a + h, b:b + w, (2 * a + b) * c_out:(2 * a + b + 1) * c_out] for a in (0, 1) for b in (0, 1)]
        outputs = tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        return outputs if self.activation is None else self.activation(outputs)


class WinogradConv2D(layers.Conv2D):
    """Conv2D, stride 1, computed as Winograd F(m x m, r x r) (`gan/winograd.py`).

    Same variables and function as Conv2D (to ~1e-5 relative in float32; a
    test checks outputs and gradients), so checkpoints move between the two.
    Runs the direct conv where Winograd does not pay (`winograd.worthwhile`:
    small images, few channels) and when computing in float16/bfloat16,
    where Winograd's transforms would lose too much precision.
    """

    def __init__(self, filters: int, kernel_size: int, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if self.strides != (1, 1) or self.dilation_rate != (1, 1) or self.kernel_size[0] != self.kernel_size[1]:
            raise ValueError("WinogradConv2D: square kernels, stride 1, no dilation")

    def convolution_op(self, inputs, kernel):
        from gan.models.winograd import TILE_FOR_KERNEL, conv2d_valid, worthwhile
        r, (_, h, w, c_in) = self.kernel_size[0], inputs.shape
        if self.padding == "valid":
            h, w = None if h is None else h - r + 1, None if w is None else w - r + 1
        if self.compute_dtype != "float32" or not worthwhile(h, w, c_in, self.filters, r):
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf
        if self.padding == "same":  # TensorFlow's SAME at stride 1: the odd pixel of padding goes after
            inputs = tf.pad(inputs, [[0, 0], [(r - 1) // 2, r // 2], [(r - 1) // 2, r // 2], [0, 0]])
        return conv2d_valid(inputs, tf.convert_to_tensor(kernel), TILE_FOR_KERNEL[r])


def conv_class(kernel: str) -> type[layers.Conv2D]:
    """The layer class for stride-1 convs under `model.conv` ('auto': winograd unless a GPU is visible)."""
    if kernel == "auto":
        import tensorflow as tf
        kernel = "keras" if tf.config.list_logical_devices("GPU") else "winograd"
    return WinogradConv2D if kernel == "winograd" else layers.Conv2D


def norm_layer(mode: str) -> Callable[[], layers.Layer]:
    """The BatchNormalization factory for `model.batchnorm`.

    auto: fused when the current distribution strategy has one replica,
    synchronized when it has several. fused / keras: per-replica statistics
    (keras = the plain layer, as in the textbook pix2pix).
    """
    if mode == "auto":
        import tensorflow as tf
        mode = "fused" if tf.distribute.get_strategy().num_replicas_in_sync == 1 else "synchronized"
    return {"fused": FusedBatchNorm, "keras": layers.BatchNormalization,
            "synchronized": lambda: layers.BatchNormalization(synchronized=True)}[mode]


def down(norm, filters: int, size: int = 4, batchnorm: bool = True, name: str | None = None) -> keras.Sequential:
    """Conv stride 2 -> [BN] -> LeakyReLU(0.2): the pix2pix / DCGAN down block."""
    block = keras.Sequential(name=name)
    block.add(layers.Conv2D(filters, size, strides=2, padding="same", kernel_initializer=init(), use_bias=False))
    if batchnorm:
        block.add(norm())
    block.add(layers.LeakyReLU(0.2))
    return block


def up(norm, filters: int, size: int = 4, dropout: float = 0.0, name: str | None = None) -> keras.Sequential:
    """Transposed conv stride 2 -> BN -> [Dropout] -> ReLU: the pix2pix up block."""
    block = keras.Sequential(name=name)
    block.add(layers.Conv2DTranspose(filters, size, strides=2, padding="same", kernel_initializer=init(),
                                     use_bias=False))
    block.add(norm())
    if dropout:
        block.add(layers.Dropout(dropout))
    block.add(layers.ReLU())
    return block


def conv_bn_relu(norm, x, filters: int, size: int, strides: int = 1, conv=layers.Conv2D):
    x = conv(filters, size, strides=strides, padding="same", kernel_initializer=init(), use_bias=False)(x)
    return layers.ReLU()(norm()(x))


def upsample_conv_bn_relu(norm, x, filters: int, kernel: str):
    """Nearest 2x upsample + 3x3 conv + BN + ReLU; `kernel` 'subpixel' (UpsampleConv2D) or 'keras'."""
    if kernel == "keras":
        return conv_bn_relu(norm, layers.UpSampling2D(2)(x), filters, 3)
    # Identity holds UpSampling2D's place, so checkpoints move between the two kernels.
    x = UpsampleConv2D(filters, kernel_initializer=init(), use_bias=False)(layers.Identity()(x))
    return layers.ReLU()(norm()(x))


def residual_block(norm, x, filters: int, dropout: float = 0.0, conv=layers.Conv2D):
    """conv3 + BN + ReLU [+ Dropout] + conv3 + BN, added to the input; `conv` the 3x3 conv's class."""
    y = conv_bn_relu(norm, x, filters, 3, conv=conv)
    if dropout:
        y = layers.Dropout(dropout)(y)
    y = conv(filters, 3, padding="same", kernel_initializer=init(), use_bias=False)(y)
    return layers.Add()([x, norm()(y)])
