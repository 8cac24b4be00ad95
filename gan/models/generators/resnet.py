"""The ResNet generator (CycleGAN-style), conv + BN + ReLU residual blocks.

c7s1-f, two stride-2 conv down blocks, `model.resnet.blocks` residual blocks
(conv+BN+ReLU, optional dropout `model.resnet.dropout`, conv+BN, identity
skip), two nearest-upsample + conv up blocks (`model.upsample`), c7s1-3 +
tanh. 11,393,923 parameters with 9 blocks, filters 64 (any size).
"""

from __future__ import annotations

from dataclasses import dataclass

from gan.models.registry import Generator, check_range


@dataclass
class Settings:
    blocks: int = 9  # residual blocks: 9 at 256 px (CycleGAN), 6 at 128 px
    dropout: float = 0.0  # inside each residual block, between its two convs


def build(cfg, size: int):
    import keras
    from keras import layers

    from gan.models.layers import conv_bn_relu, conv_class, init, norm_layer, residual_block, upsample_conv_bn_relu
    f, norm, own = cfg.filters, norm_layer(cfg.batchnorm), cfg.own
    inputs = layers.Input([size, size, 3])
    x = conv_bn_relu(norm, inputs, f, 7)
    x = conv_bn_relu(norm, x, 2 * f, 3, strides=2)
    x = conv_bn_relu(norm, x, 4 * f, 3, strides=2)
    conv = conv_class(cfg.conv)
    for _ in range(own.blocks):
        x = residual_block(norm, x, 4 * f, own.dropout, conv)
    for width in (2 * f, f):
        x = upsample_conv_bn_relu(norm, x, width, cfg.upsample)
    outputs = layers.Conv2D(3, 7, padding="same", kernel_initializer=init(), activation="tanh")(x)
    return keras.Model(inputs, outputs, name="resnet")


def check(cfg, size: int) -> str | None:
    return (check_range(RESNET, cfg.own, "blocks", 0) or
            check_range(RESNET, cfg.own, "dropout", 0.0, 1.0, high_open=True))


RESNET = (Generator(
    "resnet", build, Settings, check=check, order=1,
    presets={"tiny": {"blocks": 2}, "small": {"blocks": 6}, "cityscapes_cpu": {"blocks": 6}},
    space={"blocks": {"choice": [6, 9]}, "dropout": {"choice": [0.0, 0.3, 0.5]}},
    aliases={"resnet_blocks": "blocks", "resnet_dropout": "dropout"},
    summary="ResNet: two down convs, model.resnet.blocks residual blocks, upsample + conv"))
