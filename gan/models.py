"""The three generators and the shared PatchGAN discriminator (Keras 3).

- `unet`: the pix2pix / TensorFlow-tutorial U-Net. Depth follows the image
  size (log2(size) down blocks, so the bottleneck is 1x1); dropout 0.5 on the
  first three up blocks. 54,425,859 parameters at 256px, filters 64.
- `resnet`: c7s1-f, two stride-2 conv down blocks, `resnet_blocks` residual
  blocks (conv+BN+ReLU, optional dropout, conv+BN, identity skip), two
  nearest-upsample + conv up blocks, c7s1-3 + tanh (CycleGAN-style).
  11,393,923 parameters with 9 blocks, filters 64 (any size).
- `hybrid`: DCGAN-style down blocks (4x4 stride-2 conv + BN + LeakyReLU 0.2),
  `hybrid_blocks` residual blocks, transposed-conv up blocks (4x4 stride 2 +
  BN + ReLU), final 3x3 conv + tanh. 9,457,603 parameters with 3 down
  blocks, 6 residual blocks, filters 64.
- `patchgan`: the tutorial's 70x70 PatchGAN on (input, target) pairs:
  30x30 logits at 256px. 2,770,433 parameters, filters 64.

All convolutions start from N(0, 0.02) as in pix2pix. BatchNormalization is
`synchronized=True`: under MirroredStrategy the batch statistics are those of
the global batch, so N replicas train exactly like one device with the same
global batch.
"""

from __future__ import annotations

import math
from typing import Callable

import keras
from keras import layers

from gan.config import ModelConfig
from gan.errors import UserError


def _init():
    return keras.initializers.RandomNormal(0.0, 0.02)


def _norm():
    return layers.BatchNormalization(synchronized=True)


def down(filters: int, size: int = 4, batchnorm: bool = True, name: str | None = None) -> keras.Sequential:
    """Conv stride 2 -> [BN] -> LeakyReLU(0.2): the pix2pix / DCGAN down block."""
    block = keras.Sequential(name=name)
    block.add(layers.Conv2D(filters, size, strides=2, padding="same", kernel_initializer=_init(), use_bias=False))
    if batchnorm:
        block.add(_norm())
    block.add(layers.LeakyReLU(0.2))
    return block


def up(filters: int, size: int = 4, dropout: float = 0.0, name: str | None = None) -> keras.Sequential:
    """Transposed conv stride 2 -> BN -> [Dropout] -> ReLU: the pix2pix up block."""
    block = keras.Sequential(name=name)
    block.add(layers.Conv2DTranspose(filters, size, strides=2, padding="same", kernel_initializer=_init(),
                                     use_bias=False))
    block.add(_norm())
    if dropout:
        block.add(layers.Dropout(dropout))
    block.add(layers.ReLU())
    return block


def conv_bn_relu(x, filters: int, size: int, strides: int = 1):
    x = layers.Conv2D(filters, size, strides=strides, padding="same", kernel_initializer=_init(), use_bias=False)(x)
    return layers.ReLU()(_norm()(x))


def residual_block(x, filters: int, dropout: float = 0.0):
    """conv3 + BN + ReLU [+ Dropout] + conv3 + BN, added to the input."""
    y = conv_bn_relu(x, filters, 3)
    if dropout:
        y = layers.Dropout(dropout)(y)
    y = layers.Conv2D(filters, 3, padding="same", kernel_initializer=_init(), use_bias=False)(y)
    return layers.Add()([x, _norm()(y)])


def unet(cfg: ModelConfig, size: int) -> keras.Model:
    f = cfg.filters
    depth = int(math.log2(size))
    widths = [f, 2 * f, 4 * f] + [8 * f] * (depth - 3)
    inputs = layers.Input([size, size, 3])
    x, skips = inputs, []
    for i, width in enumerate(widths):
        x = down(width, batchnorm=i > 0, name=f"down{i}")(x)
        skips.append(x)
    for i, (width, skip) in enumerate(zip(reversed(widths[:-1]), reversed(skips[:-1]))):
        x = up(width, dropout=cfg.dropout if i < 3 else 0.0, name=f"up{i}")(x)
        x = layers.Concatenate()([x, skip])
    outputs = layers.Conv2DTranspose(3, 4, strides=2, padding="same", kernel_initializer=_init(),
                                     activation="tanh")(x)
    return keras.Model(inputs, outputs, name="unet")


def resnet(cfg: ModelConfig, size: int) -> keras.Model:
    f = cfg.filters
    inputs = layers.Input([size, size, 3])
    x = conv_bn_relu(inputs, f, 7)
    x = conv_bn_relu(x, 2 * f, 3, strides=2)
    x = conv_bn_relu(x, 4 * f, 3, strides=2)
    for _ in range(cfg.resnet_blocks):
        x = residual_block(x, 4 * f, cfg.resnet_dropout)
    for width in (2 * f, f):
        x = conv_bn_relu(layers.UpSampling2D(2)(x), width, 3)
    outputs = layers.Conv2D(3, 7, padding="same", kernel_initializer=_init(), activation="tanh")(x)
    return keras.Model(inputs, outputs, name="resnet")


def hybrid(cfg: ModelConfig, size: int) -> keras.Model:
    f = cfg.filters
    widths = [f * min(2 ** i, 8) for i in range(cfg.hybrid_downs)]
    inputs = layers.Input([size, size, 3])
    x = inputs
    for i, width in enumerate(widths):
        x = down(width, batchnorm=i > 0, name=f"down{i}")(x)  # DCGAN: no BN on the first block
    for _ in range(cfg.hybrid_blocks):
        x = residual_block(x, widths[-1], cfg.resnet_dropout)
    for i, width in enumerate(reversed(widths)):
        x = up(width, name=f"up{i}")(x)
    outputs = layers.Conv2D(3, 3, padding="same", kernel_initializer=_init(), activation="tanh")(x)
    return keras.Model(inputs, outputs, name="hybrid")


def patchgan(filters: int, size: int) -> keras.Model:
    f = filters
    inp = layers.Input([size, size, 3], name="input_image")
    tar = layers.Input([size, size, 3], name="target_image")
    x = layers.Concatenate()([inp, tar])
    x = down(f, batchnorm=False)(x)
    x = down(2 * f)(x)
    x = down(4 * f)(x)
    x = layers.ZeroPadding2D()(x)
    x = layers.Conv2D(8 * f, 4, strides=1, kernel_initializer=_init(), use_bias=False)(x)
    x = layers.LeakyReLU(0.2)(_norm()(x))
    x = layers.ZeroPadding2D()(x)
    logits = layers.Conv2D(1, 4, strides=1, kernel_initializer=_init())(x)
    return keras.Model([inp, tar], logits, name="patchgan")


GENERATORS: dict[str, Callable[[ModelConfig, int], keras.Model]] = {
    "unet": unet, "resnet": resnet, "hybrid": hybrid}


def build_generator(cfg: ModelConfig, size: int) -> keras.Model:
    if cfg.generator not in GENERATORS:
        raise UserError(f"--gen: unknown generator {cfg.generator!r} (choose from {', '.join(GENERATORS)})")
    if size < 32 or size > 512 or size & (size - 1):
        raise UserError(f"--data.image_size: {size} is not a power of two from 32 to 512")
    return GENERATORS[cfg.generator](cfg, size)


def build_discriminator(cfg: ModelConfig, size: int) -> keras.Model:
    return patchgan(cfg.filters, size)
