"""Models: output shapes at every supported size, the parameter counts their docstrings state."""

import pytest

from gan.config import ModelConfig
from gan.errors import UserError
from gan.models import GENERATORS, build_discriminator, build_generator


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_shapes(name, size):
    model = build_generator(ModelConfig(generator=name, filters=8, resnet_blocks=2, hybrid_blocks=2), size)
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, size, size, 3)


@pytest.mark.parametrize("size,patches", [(32, 2), (64, 6), (256, 30)])
def test_patchgan_patches(size, patches):
    assert build_discriminator(ModelConfig(filters=8), size).output_shape == (None, patches, patches, 1)


def test_unet_depth_follows_size():
    convs = lambda s: sum(1 for layer in build_generator(ModelConfig(filters=4), s).layers
                          if layer.name.startswith("down"))
    assert [convs(s) for s in (32, 64, 512)] == [5, 6, 9]


@pytest.mark.parametrize("name,params", [("unet", 54_425_859), ("resnet", 11_393_923), ("hybrid", 9_529_795)])
def test_parameter_counts_at_paper_settings(name, params):
    assert build_generator(ModelConfig(generator=name), 256).count_params() == params


def test_discriminator_parameter_count():
    assert build_discriminator(ModelConfig(), 256).count_params() == 2_770_433


def test_bad_generator_and_size():
    with pytest.raises(UserError, match="unknown generator"):
        build_generator(ModelConfig(generator="vgg"), 64)
    with pytest.raises(UserError, match="power of two"):
        build_generator(ModelConfig(), 48)


def test_hybrid_is_built_as_the_study_describes():
    """Initial conv, then DCGAN-style down blocks that all have conv + BN + LeakyReLU, residual blocks,
    transposed-conv up blocks, a final conv with tanh."""
    import keras
    model = build_generator(ModelConfig(generator="hybrid", filters=8, hybrid_blocks=2), 64)
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
