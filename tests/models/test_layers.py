"""Tests of psr.models.layers against NumPy re-statements of the PyTorch ops."""

import keras
import numpy as np
import numpy_net_oracles as oracle
import pytest
import tensorflow as tf

from psr.models.layers import (
    BlurDownsample,
    BlurUpsample,
    PatchSampler,
    ReflectionPadding2D,
    TorchConv2DTranspose,
    ZeroPaddedConv2D,
    conv_kernel_initializer,
    gather_patches,
    instance_norm,
)


def random_images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def jit(fn):
    return tf.function(fn, jit_compile=True)


def roundtrip(layer):
    """Rebuilds a layer through the Keras serialisation registry."""
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))


# === ReflectionPadding2D ===


class TestReflectionPadding2D:
    @pytest.mark.parametrize("padding", [1, 3])
    def test_equals_numpy_reflect_pad_eager_and_jit(self, padding):
        x = random_images((2, 7, 5, 3))
        layer = ReflectionPadding2D(padding)
        expected = np.pad(x, [(0, 0), (padding, padding), (padding, padding), (0, 0)], mode="reflect")
        np.testing.assert_array_equal(np.asarray(layer(x)), expected)
        np.testing.assert_array_equal(np.asarray(jit(layer)(x)), expected)

    def test_output_shape_keeps_unknown_sizes(self):
        layer = ReflectionPadding2D(3)
        assert layer.compute_output_shape((None, 256, None, 3)) == (None, 262, None, 3)

    def test_negative_padding_raises(self):
        with pytest.raises(ValueError, match="Received: padding=-1"):
            ReflectionPadding2D(-1)

    def test_config_roundtrip(self):
        restored = roundtrip(ReflectionPadding2D(2, name="pad"))
        assert isinstance(restored, ReflectionPadding2D)
        assert restored.padding == 2 and restored.name == "pad"


# === Instance norm ===


def test_instance_norm_matches_numpy_and_has_no_weights():
    x = 5.0 + 3.0 * random_images((2, 6, 4, 5))
    layer = instance_norm("norm")
    np.testing.assert_allclose(np.asarray(layer(x)), oracle.instance_norm(x), atol=1e-4)
    assert layer.weights == []
    assert layer.epsilon == 1e-5


# === Blur down / up ===


class TestBlurDownsample:
    @pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 6)])
    def test_matches_numpy_definition(self, size):
        x = random_images((2, *size, 3))
        expected = oracle.blur_down(x)
        layer = BlurDownsample()
        np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)
        np.testing.assert_allclose(np.asarray(jit(layer)(x)), expected, atol=1e-5)

    @pytest.mark.parametrize("size, expected", [(256, 128), (255, 128), (127, 64), (63, 32), (2, 1)])
    def test_output_size_is_floor_half_plus_one(self, size, expected):
        layer = BlurDownsample()
        assert layer(np.zeros((1, size, size, 1), "float32")).shape == (1, expected, expected, 1)
        assert layer.compute_output_shape((None, size, size, 1)) == (None, expected, expected, 1)

    def test_constant_image_stays_constant_and_nothing_is_trainable(self):
        layer = BlurDownsample()
        out = layer(np.full((1, 6, 6, 2), 0.5, "float32"))
        np.testing.assert_allclose(np.asarray(out), 0.5, atol=1e-6)
        assert layer.weights == []


class TestBlurUpsample:
    @pytest.mark.parametrize("size", [(4, 4), (3, 5), (1, 2)])
    def test_matches_original_transposed_conv_definition(self, size):
        x = random_images((2, *size, 3))
        expected = oracle.blur_up(x)
        assert expected.shape == (2, 2 * size[0], 2 * size[1], 3)
        layer = BlurUpsample()
        np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)
        np.testing.assert_allclose(np.asarray(jit(layer)(x)), expected, atol=1e-5)

    def test_equals_half_pixel_bilinear_resize(self):
        x = random_images((1, 6, 5, 2))
        resized = tf.image.resize(x, (12, 10), method="bilinear", antialias=False)
        np.testing.assert_allclose(np.asarray(BlurUpsample()(x)), resized.numpy(), atol=1e-5)

    def test_works_with_unknown_spatial_size_in_a_graph(self):
        layer = BlurUpsample()
        traced = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 2))])
        x = random_images((1, 3, 4, 2))
        np.testing.assert_allclose(traced(x).numpy(), oracle.blur_up(x), atol=1e-5)
        assert layer.compute_output_shape((None, None, 7, 2)) == (None, None, 14, 2)


# === PyTorch-padded convolutions ===


class TestZeroPaddedConv2D:
    @pytest.mark.parametrize("size, kernel_size, stride", [(8, 3, 2), (7, 3, 2), (9, 4, 1), (8, 4, 2)])
    def test_matches_pytorch_symmetric_padding(self, size, kernel_size, stride):
        x = random_images((2, size, size + 1, 3))
        layer = ZeroPaddedConv2D(4, kernel_size, strides=stride, zero_padding=1, bias_initializer="random_normal")
        out = np.asarray(layer(x))
        kernel, bias = (np.asarray(w) for w in layer.weights)
        expected = oracle.conv2d(x, kernel, bias, stride=stride, zero_padding=1)
        np.testing.assert_allclose(out, expected, atol=1e-5)
        assert layer.compute_output_shape(x.shape) == expected.shape

    def test_config_roundtrip(self):
        layer = ZeroPaddedConv2D(5, 4, strides=2, zero_padding=2, name="conv")
        restored = roundtrip(layer)
        assert isinstance(restored, ZeroPaddedConv2D)
        assert (restored.filters, restored.kernel_size, restored.strides) == (5, (4, 4), (2, 2))
        assert restored.zero_padding == 2 and restored.padding == "valid"


class TestTorchConv2DTranspose:
    @pytest.mark.parametrize(
        "size, kernel_size, stride, padding, output_padding", [(4, 3, 2, 1, 1), (5, 3, 2, 1, 0), (3, 4, 2, 1, 0)]
    )
    def test_matches_pytorch_definition(self, size, kernel_size, stride, padding, output_padding):
        x = random_images((2, size, size + 2, 3))
        layer = TorchConv2DTranspose(
            4,
            kernel_size,
            strides=stride,
            torch_padding=padding,
            torch_output_padding=output_padding,
            bias_initializer="random_normal",
        )
        out = np.asarray(layer(x))
        kernel, bias = (np.asarray(w) for w in layer.weights)
        expected = oracle.conv_transpose2d(x, kernel, bias, stride, padding, output_padding)
        np.testing.assert_allclose(out, expected, atol=1e-5)
        assert layer.compute_output_shape(x.shape) == expected.shape

    def test_cyclegan_upsampling_doubles_the_size(self):
        layer = TorchConv2DTranspose(2, 3, strides=2, torch_padding=1, torch_output_padding=1)
        assert layer(np.zeros((1, 5, 7, 3), "float32")).shape == (1, 10, 14, 2)

    def test_output_padding_larger_than_padding_raises(self):
        with pytest.raises(ValueError, match="torch_output_padding=2"):
            TorchConv2DTranspose(2, 3, torch_padding=1, torch_output_padding=2)

    def test_config_roundtrip(self):
        restored = roundtrip(TorchConv2DTranspose(3, 3, strides=2, torch_padding=1, torch_output_padding=0))
        assert isinstance(restored, TorchConv2DTranspose)
        assert (restored.torch_padding, restored.torch_output_padding) == (1, 0)


# === Initialisation ===


@pytest.mark.parametrize("shape", [(3, 3, 64, 32), (512, 256)])
def test_kernel_init_is_untruncated_xavier_normal_with_gain_002(shape):
    values = np.asarray(conv_kernel_initializer()(shape)).ravel()
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    expected_std = 0.02 * np.sqrt(2.0 / (fan_in + fan_out))
    # With >= 18k samples the sample std is within ~1.5% (3 sigma) of the truth.
    assert abs(values.std() / expected_std - 1.0) < 0.03
    assert abs(values.mean()) < 4 * expected_std / np.sqrt(values.size)
    # Keras' truncated normal (GlorotNormal) stops at ~2.3 target std; an
    # untruncated normal puts 1.24% of its samples beyond 2.5 std.
    beyond = np.mean(np.abs(values) > 2.5 * expected_std)
    assert 0.006 < beyond < 0.019


# === Patch sampling ===


class TestPatchSampler:
    def features(self):
        return [random_images((3, 8, 8, 4)), random_images((3, 4, 4, 2)), random_images((3, 2, 3, 5))]

    def test_ids_are_unique_in_range_and_min_of_k_and_positions(self):
        sampler = PatchSampler(num_patches=10)
        ids = [np.asarray(i) for i in sampler(self.features())]
        assert [len(i) for i in ids] == [10, 10, 6]
        for layer_ids, positions in zip(ids, [64, 16, 6]):
            assert layer_ids.dtype == np.int32
            assert len(set(layer_ids.tolist())) == len(layer_ids)
            assert layer_ids.min() >= 0 and layer_ids.max() < positions
        # All positions of the small map, in some order.
        assert sorted(ids[2].tolist()) == list(range(6))

    def test_fresh_ids_every_call_eager_and_jit(self):
        sampler = PatchSampler(num_patches=16)
        features = self.features()[:1]
        eager = [np.asarray(sampler(features)[0]) for _ in range(3)]
        compiled_fn = jit(sampler)
        compiled = [compiled_fn(features)[0].numpy() for _ in range(3)]
        draws = eager + compiled
        for ids in compiled:
            assert len(set(ids.tolist())) == 16 and ids.max() < 64
        distinct = {tuple(ids.tolist()) for ids in draws}
        assert len(distinct) == len(draws)

    def test_positions_are_drawn_uniformly(self):
        sampler = PatchSampler(num_patches=4)
        draw = jit(lambda f: sampler(f)[0])
        feature = [random_images((1, 4, 4, 1))]
        counts = np.zeros(16)
        for _ in range(400):
            counts[draw(feature).numpy()] += 1
        # Each position is picked with probability 1/4: mean 100, std ~8.7.
        assert counts.min() > 65 and counts.max() < 135

    def test_same_seed_gives_same_ids(self):
        features = self.features()
        first = [np.asarray(i) for i in PatchSampler(8, seed=3)(features)]
        second = [np.asarray(i) for i in PatchSampler(8, seed=3)(features)]
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)

    def test_unknown_spatial_size_in_a_graph(self):
        sampler = PatchSampler(num_patches=5)
        traced = tf.function(lambda x: sampler([x])[0], input_signature=[tf.TensorSpec((None, None, None, 2))])
        small = traced(random_images((2, 1, 3, 2))).numpy()
        large = traced(random_images((2, 4, 4, 2))).numpy()
        assert sorted(small.tolist()) == [0, 1, 2]
        assert len(set(large.tolist())) == 5 and large.max() < 16

    def test_invalid_num_patches_raises(self):
        with pytest.raises(ValueError, match="Received: num_patches=0"):
            PatchSampler(num_patches=0)

    def test_config_roundtrip(self):
        restored = roundtrip(PatchSampler(num_patches=32, seed=7))
        assert (restored.num_patches, restored.seed) == (32, 7)


def test_gather_patches_uses_row_major_positions_and_the_same_ids_for_every_image():
    feature = random_images((2, 3, 4, 5))
    ids = np.array([11, 0, 5], "int32")
    out = np.asarray(gather_patches(feature, ids))
    assert out.shape == (2, 3, 5)
    for b in range(2):
        for n, position in enumerate(ids):
            h, w = divmod(int(position), 4)
            np.testing.assert_array_equal(out[b, n], feature[b, h, w])


def test_leaky_relu_select_equals_the_op_in_value_and_gradient():
    import tensorflow as tf

    from psr.models.layers import LeakyReLU, leaky_relu

    x = tf.constant([-2.0, -0.5, 0.0, 0.5, 3.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, reference = leaky_relu(x, 0.2), tf.nn.leaky_relu(x, 0.2)
    np.testing.assert_array_equal(ours.numpy(), reference.numpy())
    np.testing.assert_array_equal(tape.gradient(ours, x).numpy(), tape.gradient(reference, x).numpy())  # 0.2 at 0
    layer = LeakyReLU(negative_slope=0.2)
    np.testing.assert_array_equal(layer(x).numpy(), reference.numpy())
    assert LeakyReLU.from_config(layer.get_config()).negative_slope == 0.2
