"""The shared discriminator: the TensorFlow tutorial's 70x70 PatchGAN on (input, target) pairs.

30x30 logits at 256 px; 2,770,433 parameters with filters 64. Its 4x4 stride-1
conv follows `model.conv` (Winograd F(3x3, 4x4) where that pays).
"""

from __future__ import annotations

from gan.models.registry import Discriminator


def patchgan(filters: int, size: int, batchnorm: str = "auto", conv: str = "keras"):
    import keras
    from keras import layers

    from gan.models.layers import conv_class, down, init, norm_layer
    f, norm = filters, norm_layer(batchnorm)
    inp = layers.Input([size, size, 3], name="input_image")
    tar = layers.Input([size, size, 3], name="target_image")
    x = layers.Concatenate()([inp, tar])
    x = down(norm, f, batchnorm=False)(x)
    x = down(norm, 2 * f)(x)
    x = down(norm, 4 * f)(x)
    x = layers.ZeroPadding2D()(x)
    x = conv_class(conv)(8 * f, 4, strides=1, kernel_initializer=init(), use_bias=False)(x)
    x = layers.LeakyReLU(0.2)(norm()(x))
    x = layers.ZeroPadding2D()(x)
    logits = layers.Conv2D(1, 4, strides=1, kernel_initializer=init())(x)
    return keras.Model([inp, tar], logits, name="patchgan")


PATCHGAN = Discriminator("patchgan", lambda cfg, size: patchgan(cfg.filters, size, cfg.batchnorm, cfg.conv),
                         summary="the 70x70 PatchGAN (pix2pix): 30x30 logits at 256 px", order=0)
