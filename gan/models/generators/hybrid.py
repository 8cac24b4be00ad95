"""The hybrid generator, as the study describes it.

"An initial convolutional layer followed by downsampling blocks, akin to
DCGAN ... convolutional layers with batch normalization and LeakyReLU": an
initial 7x7 conv + LeakyReLU 0.2, `model.hybrid_downs` DCGAN down blocks (4x4
stride-2 conv + BN + LeakyReLU 0.2, every one), `model.hybrid_blocks`
residual blocks, transposed-conv up blocks (4x4 stride 2 + BN + ReLU), a
final 3x3 conv + tanh. 9,529,795 parameters with 3 down blocks, 6 residual
blocks, filters 64.
"""

from __future__ import annotations

from gan.models import Generator, register


def build(cfg, size: int):
    import keras
    from keras import layers

    from gan.models.layers import conv_class, down, init, norm_layer, residual_block, up
    f, norm = cfg.filters, norm_layer(cfg.batchnorm)
    widths = [f * min(2 ** i, 8) for i in range(cfg.hybrid_downs)]
    inputs = layers.Input([size, size, 3])
    x = layers.Conv2D(f, 7, padding="same", kernel_initializer=init(), name="initial_conv")(inputs)
    x = layers.LeakyReLU(0.2)(x)
    for i, width in enumerate(widths):
        x = down(norm, width, name=f"down{i}")(x)
    conv = conv_class(cfg.conv)
    for _ in range(cfg.hybrid_blocks):
        x = residual_block(norm, x, widths[-1], cfg.resnet_dropout, conv)
    for i, width in enumerate(reversed(widths)):
        x = up(norm, width, name=f"up{i}")(x)
    outputs = layers.Conv2D(3, 3, padding="same", kernel_initializer=init(), activation="tanh")(x)
    return keras.Model(inputs, outputs, name="hybrid")


def check(cfg, size: int) -> str | None:
    if size % (2 ** cfg.hybrid_downs):
        return f"--model.hybrid_downs: {cfg.hybrid_downs} down blocks cannot take {size}px images"
    return None


register(Generator("hybrid", build, check=check, order=2, tiny={"hybrid_blocks": 2},
                   summary="the study's hybrid: DCGAN down blocks, residual blocks, transposed-conv up blocks"))
