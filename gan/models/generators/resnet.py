"""The ResNet generator (CycleGAN-style), conv + BN + ReLU residual blocks.

c7s1-f, two stride-2 conv down blocks, `model.resnet_blocks` residual blocks
(conv+BN+ReLU, optional dropout `model.resnet_dropout`, conv+BN, identity
skip), two nearest-upsample + conv up blocks (`model.upsample`), c7s1-3 +
tanh. 11,393,923 parameters with 9 blocks, filters 64 (any size).
"""

from __future__ import annotations

from gan.models import Generator, register


def build(cfg, size: int):
    import keras
    from keras import layers

    from gan.models.layers import conv_bn_relu, conv_class, init, norm_layer, residual_block, upsample_conv_bn_relu
    f, norm = cfg.filters, norm_layer(cfg.batchnorm)
    inputs = layers.Input([size, size, 3])
    x = conv_bn_relu(norm, inputs, f, 7)
    x = conv_bn_relu(norm, x, 2 * f, 3, strides=2)
    x = conv_bn_relu(norm, x, 4 * f, 3, strides=2)
    conv = conv_class(cfg.conv)
    for _ in range(cfg.resnet_blocks):
        x = residual_block(norm, x, 4 * f, cfg.resnet_dropout, conv)
    for width in (2 * f, f):
        x = upsample_conv_bn_relu(norm, x, width, cfg.upsample)
    outputs = layers.Conv2D(3, 7, padding="same", kernel_initializer=init(), activation="tanh")(x)
    return keras.Model(inputs, outputs, name="resnet")


register(Generator("resnet", build, order=1, tiny={"resnet_blocks": 2},
                   summary="ResNet: two down convs, model.resnet_blocks residual blocks, upsample + conv"))
