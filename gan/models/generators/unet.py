"""The pix2pix / TensorFlow-tutorial U-Net.

Depth follows the image size (log2(size) down blocks, so the bottleneck is
1x1); skip connections between mirrored blocks; dropout `model.unet.dropout`
(0.5) on the first three up blocks, as pix2pix. 54,425,859 parameters at
256 px, filters 64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gan.models.registry import Generator, check_range


@dataclass
class Settings:
    dropout: float = 0.5  # on the first three up blocks (pix2pix); 0 makes the net deterministic


def build(cfg, size: int):
    import keras
    from keras import layers

    from gan.models.layers import down, init, norm_layer, up
    f, norm = cfg.filters, norm_layer(cfg.batchnorm)
    depth = int(math.log2(size))
    widths = [f, 2 * f, 4 * f] + [8 * f] * (depth - 3)
    inputs = layers.Input([size, size, 3])
    x, skips = inputs, []
    for i, width in enumerate(widths):
        x = down(norm, width, batchnorm=i > 0, name=f"down{i}")(x)
        skips.append(x)
    for i, (width, skip) in enumerate(zip(reversed(widths[:-1]), reversed(skips[:-1]))):
        x = up(norm, width, dropout=cfg.own.dropout if i < 3 else 0.0, name=f"up{i}")(x)
        x = layers.Concatenate()([x, skip])
    outputs = layers.Conv2DTranspose(3, 4, strides=2, padding="same", kernel_initializer=init(),
                                     activation="tanh")(x)
    return keras.Model(inputs, outputs, name="unet")


def check(cfg, size: int) -> str | None:
    return check_range(UNET, cfg.own, "dropout", 0.0, 1.0, high_open=True)


UNET = (Generator("unet", build, Settings, check=check, order=0, aliases={"dropout": "dropout"},
                          space={"dropout": {"choice": [0.0, 0.3, 0.5]}},
                          summary="pix2pix U-Net: skip connections, dropout in the decoder (model.unet.dropout)"))
