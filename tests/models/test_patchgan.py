"""Tests of the PatchGAN discriminator: spec §4.4 shapes, a NumPy forward, config."""

import keras
import numpy as np
import numpy_net_oracles as oracle
import pytest

from psr.models.patchgan import PatchGANDiscriminator

# Spec §4.4 (ndf 64, n_layers 3, antialiased), 256x256x3 input: (name, H, W, C) per list entry.
CUT_D_TABLE_256 = [
    ("model_0_conv", 255, 255, 64),
    ("model_1_lrelu", 255, 255, 64),
    ("model_2_blurdown", 128, 128, 64),
    ("model_3_conv", 127, 127, 128),
    ("model_4_norm", 127, 127, 128),
    ("model_5_lrelu", 127, 127, 128),
    ("model_6_blurdown", 64, 64, 128),
    ("model_7_conv", 63, 63, 256),
    ("model_8_norm", 63, 63, 256),
    ("model_9_lrelu", 63, 63, 256),
    ("model_10_blurdown", 32, 32, 256),
    ("model_11_conv", 31, 31, 512),
    ("model_12_norm", 31, 31, 512),
    ("model_13_lrelu", 31, 31, 512),
    ("model_14_conv", 30, 30, 1),
]


def random_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape).astype("float32")


def numpy_discriminator(model: PatchGANDiscriminator, x):
    """Forward pass written from CUT's NLayerDiscriminator, reading psr's conv weights in order."""
    convs = [[np.asarray(w, np.float64) for w in layer.weights] for layer in model.sequence if layer.weights]
    stride = 1 if model.antialias else 2
    h = oracle.leaky_relu(oracle.conv2d(x, *convs[0], stride=stride, zero_padding=1))
    if model.antialias:
        h = oracle.blur_down(h)
    for layer_index in range(1, model.num_layers):
        h = oracle.conv2d(h, *convs[layer_index], stride=stride, zero_padding=1)
        h = oracle.leaky_relu(oracle.instance_norm(h))
        if model.antialias:
            h = oracle.blur_down(h)
    h = oracle.leaky_relu(oracle.instance_norm(oracle.conv2d(h, *convs[-2], zero_padding=1)))
    return oracle.conv2d(h, *convs[-1], zero_padding=1)


def test_every_entry_of_the_full_network_at_256():
    discriminator = PatchGANDiscriminator()
    h = keras.Input((256, 256, 3))
    assert len(discriminator.sequence) == len(CUT_D_TABLE_256)
    for layer, (name, height, width, channels) in zip(discriminator.sequence, CUT_D_TABLE_256):
        h = layer(h)
        assert layer.name == name
        assert tuple(h.shape) == (None, height, width, channels), name


@pytest.mark.parametrize("antialias", [True, False])
def test_scores_are_30x30x1_for_256_input(antialias):
    discriminator = PatchGANDiscriminator(filters=8, antialias=antialias)
    assert discriminator(random_images((2, 256, 256, 3))).shape == (2, 30, 30, 1)


@pytest.mark.parametrize("antialias, num_layers", [(True, 3), (False, 3), (True, 2)])
def test_matches_numpy_restatement(antialias, num_layers):
    discriminator = PatchGANDiscriminator(filters=4, num_layers=num_layers, antialias=antialias)
    rng = np.random.default_rng(1)
    for weight in discriminator.weights:
        if weight.path.endswith("bias"):
            weight.assign(rng.normal(scale=0.1, size=weight.shape).astype("float32"))
    x = random_images((2, 32, 28, 3))
    out = np.asarray(discriminator(x))
    expected = numpy_discriminator(discriminator, x)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-5 * max(1.0, np.abs(expected).max()))


def test_weights_init_and_names():
    discriminator = PatchGANDiscriminator(filters=16)
    assert len(discriminator.weights) == 2 * 5  # five convs with bias, IN without affine weights
    kernel = np.asarray(discriminator.get_layer("model_7_conv").kernel)
    assert kernel.shape == (4, 4, 32, 64)
    expected_std = 0.02 * np.sqrt(2.0 / (16 * 32 + 16 * 64))
    assert abs(kernel.std() / expected_std - 1.0) < 0.03
    np.testing.assert_array_equal(np.asarray(discriminator.get_layer("model_7_conv").bias), 0.0)
    assert discriminator.torch_names() == {
        "model_0_conv": "model.0",
        "model_3_conv": "model.3",
        "model_7_conv": "model.7",
        "model_11_conv": "model.11",
        "model_14_conv": "model.14",
    }


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="Received: num_layers=0"):
        PatchGANDiscriminator(num_layers=0)


def test_config_roundtrip_keeps_outputs():
    kwargs = dict(input_channels=2, filters=4, num_layers=2, antialias=False)
    discriminator = PatchGANDiscriminator(name="d_b", **kwargs)
    config = discriminator.get_config()
    assert {key: config[key] for key in kwargs} == kwargs
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(discriminator))
    assert isinstance(restored, PatchGANDiscriminator) and restored.name == "d_b"
    restored.set_weights(discriminator.get_weights())
    x = random_images((1, 32, 32, 2))
    np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(discriminator(x)), atol=1e-6)
