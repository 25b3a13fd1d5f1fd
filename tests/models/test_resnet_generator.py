"""Tests of the CUT ResNet generator: the spec §4.1 layer table, a NumPy forward, config."""

import keras
import numpy as np
import numpy_net_oracles as oracle
import pytest

from psr.models.resnet_generator import ResnetBlock, ResnetGenerator

# Spec §4.1, 256x256x3 input, ngf 64, 9 blocks: (index, op kind, H, W, C) for every list entry.
CUT_TABLE_256 = (
    [(0, "pad", 262, 262, 3), (1, "conv", 256, 256, 64), (2, "norm", 256, 256, 64), (3, "relu", 256, 256, 64)]
    + [(4, "conv", 256, 256, 128), (5, "norm", 256, 256, 128), (6, "relu", 256, 256, 128)]
    + [(7, "blurdown", 128, 128, 128), (8, "conv", 128, 128, 256), (9, "norm", 128, 128, 256)]
    + [(10, "relu", 128, 128, 256), (11, "blurdown", 64, 64, 256)]
    + [(i, "block", 64, 64, 256) for i in range(12, 21)]
    + [(21, "blurup", 128, 128, 256), (22, "conv", 128, 128, 128), (23, "norm", 128, 128, 128)]
    + [(24, "relu", 128, 128, 128), (25, "blurup", 256, 256, 128), (26, "conv", 256, 256, 64)]
    + [(27, "norm", 256, 256, 64), (28, "relu", 256, 256, 64), (29, "pad", 262, 262, 64)]
    + [(30, "conv", 256, 256, 3), (31, "tanh", 256, 256, 3)]
)

# CycleGAN's layout (no_antialias + no_antialias_up), same input and sizes.
CYCLEGAN_TABLE_256 = (
    [(0, "pad", 262, 262, 3), (1, "conv", 256, 256, 64), (2, "norm", 256, 256, 64), (3, "relu", 256, 256, 64)]
    + [(4, "conv", 128, 128, 128), (5, "norm", 128, 128, 128), (6, "relu", 128, 128, 128)]
    + [(7, "conv", 64, 64, 256), (8, "norm", 64, 64, 256), (9, "relu", 64, 64, 256)]
    + [(i, "block", 64, 64, 256) for i in range(10, 19)]
    + [(19, "convtranspose", 128, 128, 128), (20, "norm", 128, 128, 128), (21, "relu", 128, 128, 128)]
    + [(22, "convtranspose", 256, 256, 64), (23, "norm", 256, 256, 64), (24, "relu", 256, 256, 64)]
    + [(25, "pad", 262, 262, 64), (26, "conv", 256, 256, 3), (27, "tanh", 256, 256, 3)]
)


def random_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape).astype("float32")


def weights_of(layer):
    return [np.asarray(w, np.float64) for w in layer.weights]


def randomise_biases(model, seed=1):
    """Biases start at zero; give them values so the oracle checks they are used."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.endswith("bias"):
            weight.assign(rng.normal(scale=0.1, size=weight.shape).astype("float32"))


def numpy_generator(model: ResnetGenerator, x):
    """Forward pass written from CUT's ResnetGenerator, reading psr's weights by name."""

    def conv(name, h, **kwargs):
        return oracle.conv2d(h, *weights_of(layers[name]), **kwargs)

    layers = {}
    for layer in model.sequence:
        layers[layer.name] = layer
        if isinstance(layer, ResnetBlock):
            layers[layer.conv1.name], layers[layer.conv2.name] = layer.conv1, layer.conv2
    names = [layer.name for layer in model.sequence]
    index = {name.split("_", 2)[1]: name for name in names}

    h = oracle.reflect_pad(x, 3)
    h = oracle.relu(oracle.instance_norm(conv(index["1"], h)))
    position = 4
    for _ in range(2):
        if model.antialias:
            h = oracle.relu(oracle.instance_norm(conv(index[str(position)], h, zero_padding=1)))
            h = oracle.blur_down(h)
            position += 4
        else:
            h = oracle.relu(oracle.instance_norm(conv(index[str(position)], h, stride=2, zero_padding=1)))
            position += 3
    for _ in range(model.num_blocks):
        block = index[str(position)]
        r = oracle.relu(oracle.instance_norm(conv(f"{block}_conv1", oracle.reflect_pad(h, 1))))
        r = oracle.instance_norm(conv(f"{block}_conv2", oracle.reflect_pad(r, 1)))
        h = h + r
        position += 1
    for _ in range(2):
        if model.antialias_up:
            h = oracle.blur_up(h)
            h = oracle.relu(oracle.instance_norm(conv(index[str(position + 1)], h, zero_padding=1)))
            position += 4
        else:
            kernel, bias = weights_of(layers[index[str(position)]])
            h = oracle.conv_transpose2d(h, kernel, bias, stride=2, padding=1, output_padding=1)
            h = oracle.relu(oracle.instance_norm(h))
            position += 3
    h = conv(index[str(position + 1)], oracle.reflect_pad(h, 3))
    return np.tanh(h)


class TestLayerTable:
    @pytest.mark.parametrize(
        "kwargs, table",
        [({}, CUT_TABLE_256), ({"antialias": False, "antialias_up": False}, CYCLEGAN_TABLE_256)],
        ids=["cut", "cyclegan"],
    )
    def test_every_entry_of_the_full_network_at_256(self, kwargs, table):
        # Symbolic call: shapes of the real 64-filter, 9-block network without computing anything.
        generator = ResnetGenerator(**kwargs)
        assert len(generator.sequence) == len(table)
        outputs = generator.encode(keras.Input((256, 256, 3)), layer_ids=range(len(table)))
        for (index, kind, height, width, channels), layer, output in zip(table, generator.sequence, outputs):
            assert layer.name == f"model_{index}_{kind}"
            assert tuple(output.shape) == (None, height, width, channels), layer.name

    def test_small_network_computes_the_table_shapes_eagerly(self):
        generator = ResnetGenerator(filters=8, num_blocks=9)
        outputs = generator.encode(random_images((1, 256, 256, 3)), layer_ids=range(32))
        for (index, _, height, width, channels), output in zip(CUT_TABLE_256, outputs):
            expected_channels = channels if index in (0, 30, 31) else channels // 8
            assert output.shape == (1, height, width, expected_channels), index

    def test_nce_features_channels_and_resolutions(self):
        generator = ResnetGenerator()
        assert generator.feature_channels() == [3, 128, 256, 256, 256]
        features = generator.encode(keras.Input((256, 256, 3)))
        assert [tuple(f.shape) for f in features] == [
            (None, 262, 262, 3),
            (None, 256, 256, 128),
            (None, 128, 128, 256),
            (None, 64, 64, 256),
            (None, 64, 64, 256),
        ]
        assert ResnetGenerator(filters=8, num_blocks=5).feature_channels() == [3, 16, 32, 32, 32]
        # With fewer blocks, index 16 falls in the decoder (16 = IN after the first upsampling conv).
        assert ResnetGenerator(filters=8, num_blocks=2).feature_channels() == [3, 16, 32, 32, 16]

    def test_odd_size_input(self):
        generator = ResnetGenerator(filters=4, num_blocks=1)
        x = random_images((1, 255, 255, 3))
        padded, conv4, down7, conv8, down11 = generator.encode(x, layer_ids=(0, 4, 7, 8, 11))
        assert padded.shape[1:3] == (261, 261) and conv4.shape[1:3] == (255, 255)
        assert down7.shape[1:3] == (128, 128) and conv8.shape[1:3] == (128, 128)
        assert down11.shape[1:3] == (64, 64)
        assert generator(x).shape == (1, 256, 256, 3)


class TestForward:
    @pytest.mark.parametrize(
        "kwargs",
        [{}, {"antialias": False, "antialias_up": False}, {"antialias": True, "antialias_up": False}],
        ids=["cut", "cyclegan", "mixed"],
    )
    def test_matches_numpy_restatement(self, kwargs):
        generator = ResnetGenerator(filters=4, num_blocks=2, **kwargs)
        randomise_biases(generator)
        x = random_images((2, 12, 16, 3))
        out = np.asarray(generator(x))
        expected = numpy_generator(generator, x)
        # The 0.02-gain init leaves tiny activations; compare relative to their scale.
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, atol=1e-5 * max(1.0, np.abs(expected).max()))

    def test_nce_features_are_the_padded_input_and_pre_norm_convs(self):
        generator = ResnetGenerator(filters=4, num_blocks=2)
        randomise_biases(generator)
        x = random_images((1, 16, 16, 3))
        padded, after_relu, conv4, block1 = generator.encode(x, layer_ids=(0, 3, 4, 12))
        np.testing.assert_array_equal(np.asarray(padded), oracle.reflect_pad(x, 3).astype("float32"))
        kernel, bias = weights_of(generator.sequence[4])
        expected_conv4 = oracle.conv2d(np.asarray(after_relu), kernel, bias, zero_padding=1)
        np.testing.assert_allclose(np.asarray(conv4), expected_conv4, atol=1e-6)
        # Pre-norm: the conv output is not standardised per channel.
        assert np.abs(np.asarray(conv4).mean(axis=(1, 2)) - bias).max() < 1.0
        assert np.abs(np.asarray(conv4).std(axis=(1, 2)) - 1.0).min() > 0.5
        assert block1.shape == (1, 4, 4, 16)

    def test_encode_returns_outputs_in_requested_order_and_call_is_the_last_entry(self):
        generator = ResnetGenerator(filters=4, num_blocks=1)
        x = random_images((1, 8, 8, 3))
        last, first = generator.encode(x, layer_ids=(len(generator.sequence) - 1, 0))
        np.testing.assert_allclose(np.asarray(last), np.asarray(generator(x)), atol=1e-6)
        assert first.shape == (1, 14, 14, 3)
        assert np.abs(np.asarray(last)).max() <= 1.0

    def test_bad_layer_ids_raise(self):
        generator = ResnetGenerator(filters=4, num_blocks=1)
        with pytest.raises(ValueError, match="Received: layer_ids"):
            generator.encode(random_images((1, 8, 8, 3)), layer_ids=(0, 99))

    def test_block_adds_residual_without_final_relu(self):
        block = ResnetBlock(4, name="block")
        block.build((None, None, None, 4))
        x = random_images((1, 5, 6, 4))
        r = oracle.relu(oracle.instance_norm(oracle.conv2d(oracle.reflect_pad(x, 1), *weights_of(block.conv1))))
        r = oracle.instance_norm(oracle.conv2d(oracle.reflect_pad(r, 1), *weights_of(block.conv2)))
        np.testing.assert_allclose(np.asarray(block(x)), x + r, atol=1e-5)


class TestWeights:
    def test_only_convs_hold_weights_init_and_zero_bias(self):
        generator = ResnetGenerator(filters=16, num_blocks=1)
        # 3 encoder convs + 2 block convs + 2 decoder convs + last conv; IN has no affine weights.
        assert len(generator.weights) == 2 * 8
        for weight in generator.weights:
            if weight.path.endswith("bias"):
                np.testing.assert_array_equal(np.asarray(weight), 0.0)
        kernel = np.asarray(generator.sequence[12].conv1.kernel)
        assert kernel.shape == (3, 3, 64, 64)
        expected_std = 0.02 * np.sqrt(2.0 / (9 * 64 + 9 * 64))
        assert abs(kernel.std() / expected_std - 1.0) < 0.03

    def test_transposed_conv_init(self):
        generator = ResnetGenerator(filters=32, num_blocks=0, antialias=False, antialias_up=False)
        kernel = np.asarray(generator.get_layer("model_10_convtranspose").kernel)
        assert kernel.shape == (3, 3, 64, 128)
        expected_std = 0.02 * np.sqrt(2.0 / (9 * 64 + 9 * 128))
        assert abs(kernel.std() / expected_std - 1.0) < 0.03

    def test_torch_names(self):
        names = ResnetGenerator(filters=4, num_blocks=9).torch_names()
        assert names["model_1_conv"] == "model.1"
        assert names["model_7_blurdown"] == "model.7"
        assert names["model_12_block_conv1"] == "model.12.conv_block.1"
        assert names["model_20_block_conv2"] == "model.20.conv_block.5"
        assert names["model_21_blurup"] == "model.21" and names["model_30_conv"] == "model.30"
        assert len(names) == 5 + 18 + 4 + 1
        cyclegan = ResnetGenerator(filters=4, num_blocks=9, antialias=False, antialias_up=False)
        assert cyclegan.torch_names()["model_19_convtranspose"] == "model.19"
        assert set(cyclegan.torch_layers()) == {
            *(f"model.{i}" for i in (1, 4, 7, 19, 22, 26)),
            *(f"model.{i}.conv_block.{j}" for i in range(10, 19) for j in (1, 5)),
        }


class TestConfig:
    def test_invalid_arguments_raise(self):
        with pytest.raises(ValueError, match="Received: filters=0"):
            ResnetGenerator(filters=0)
        with pytest.raises(ValueError, match="Received: num_blocks=-1"):
            ResnetGenerator(num_blocks=-1)

    def test_config_roundtrip_keeps_outputs(self, tmp_path):
        kwargs = dict(input_channels=1, output_channels=2, filters=4, num_blocks=1, antialias=False, antialias_up=True)
        generator = ResnetGenerator(name="g_ab", **kwargs)
        config = generator.get_config()
        assert {key: config[key] for key in kwargs} == kwargs
        restored = ResnetGenerator.from_config(config)
        restored.set_weights(generator.get_weights())
        x = random_images((1, 8, 12, 1))
        np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(generator(x)), atol=1e-6)
        assert restored.name == "g_ab"

        path = tmp_path / "generator.keras"
        generator.save(path)
        loaded = keras.saving.load_model(path)
        assert isinstance(loaded, ResnetGenerator) and loaded.get_config() == config
        np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(generator(x)), atol=1e-6)
