"""The hybrid generator, as the study describes it.

"An initial convolutional layer followed by downsampling blocks, akin to
DCGAN ... convolutional layers with batch normalization and LeakyReLU": an
initial 7x7 conv + LeakyReLU 0.2, `model.hybrid.downs` DCGAN down blocks (4x4
stride-2 conv + BN + LeakyReLU 0.2, every one), `model.hybrid.blocks`
residual blocks (dropout `model.hybrid.dropout`), transposed-conv up blocks
(4x4 stride 2 + BN + ReLU), a final 3x3 conv + tanh. 9,529,795 parameters
with 3 down blocks, 6 residual blocks, filters 64.
"""

from __future__ import annotations

from dataclasses import dataclass

from gan.models.registry import Generator, check_range


@dataclass
class Settings:
    blocks: int = 6  # residual blocks at the bottleneck
    downs: int = 3  # DCGAN-style down blocks (and as many up blocks)
    dropout: float = 0.0  # inside each residual block


def build(cfg, size: int):
    import keras
    from keras import layers

    from gan.models.layers import conv_class, down, init, norm_layer, residual_block, up
    f, norm, own = cfg.filters, norm_layer(cfg.batchnorm), cfg.own
    widths = [f * min(2 ** i, 8) for i in range(own.downs)]
    inputs = layers.Input([size, size, 3])
    x = layers.Conv2D(f, 7, padding="same", kernel_initializer=init(), name="initial_conv")(inputs)
    x = layers.LeakyReLU(0.2)(x)
    for i, width in enumerate(widths):
        x = down(norm, width, name=f"down{i}")(x)
    conv = conv_class(cfg.conv)
    for _ in range(own.blocks):
        x = residual_block(norm, x, widths[-1], own.dropout, conv)
    for i, width in enumerate(reversed(widths)):
        x = up(norm, width, name=f"up{i}")(x)
    outputs = layers.Conv2D(3, 3, padding="same", kernel_initializer=init(), activation="tanh")(x)
    return keras.Model(inputs, outputs, name="hybrid")


def check(cfg, size: int) -> str | None:
    own = cfg.own
    problem = (check_range(HYBRID, own, "blocks", 0) or check_range(HYBRID, own, "downs", 1) or
               check_range(HYBRID, own, "dropout", 0.0, 1.0, high_open=True))
    if not problem and size % (2 ** own.downs):
        return f"{HYBRID.flag('downs')}: {own.downs} down blocks cannot take {size}px images"
    return problem


HYBRID = (Generator(
    "hybrid", build, Settings, check=check, order=2, presets={"tiny": {"blocks": 2}},
    space={"blocks": {"choice": [4, 6, 9]}, "downs": {"choice": [2, 3]}, "dropout": {"choice": [0.0, 0.3, 0.5]}},
    aliases={"hybrid_blocks": "blocks", "hybrid_downs": "downs", "resnet_dropout": "dropout"},
    summary="the study's hybrid: DCGAN down blocks, residual blocks, transposed-conv up blocks"))
