"""psr.models.fast_inference (issue #14): the fast formulations compute the plain layers' values.

Oracles: NumPy re-statements (a direct loop convolution in float64, np.pad "reflect", the instance-norm
formula in float64) and the plain-layer student with the same weights.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from psr.export import SIGNATURE_FLOAT, export_generator
from psr.models import fast_inference
from psr.models.mobile_resnet import MobileResnetGenerator

EPS = float(np.finfo(np.float32).eps)


def numpy_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Valid stride-1 correlation in float64, and Σ|x·w| per output (the scale of its rounding error)."""
    k = kernel.shape[0]
    batch, height, width, _ = x.shape
    out = np.zeros((batch, height - k + 1, width - k + 1, kernel.shape[3]))
    magnitude = np.zeros_like(out)
    for i in range(k):
        for j in range(k):
            window = x[:, i : i + out.shape[1], j : j + out.shape[2], :].astype(np.float64)
            out += window @ kernel[i, j].astype(np.float64)
            magnitude += np.abs(window) @ np.abs(kernel[i, j]).astype(np.float64)
    return out + bias, magnitude + np.abs(bias)


@pytest.mark.parametrize("shape, kernel_size, c_out", [
    ((1, 38, 38, 24), 7, 3),   # the student's RGB output conv (even output side)
    ((2, 13, 9, 3), 7, 16),    # the stem, odd output sides
    ((1, 10, 11, 5), 3, 2),
    ((2, 9, 8, 2), 4, 3),      # even kernel
])
def test_space_to_depth_conv_equals_the_direct_conv(shape, kernel_size, c_out):
    rng = np.random.default_rng(sum(shape) + kernel_size)
    x = rng.standard_normal(shape).astype("float32")
    kernel = rng.standard_normal((kernel_size, kernel_size, shape[3], c_out)).astype("float32")
    bias = rng.standard_normal(c_out).astype("float32")
    expected, magnitude = numpy_conv(x, kernel, bias)
    got = fast_inference.space_to_depth_conv2d(tf.constant(x), tf.constant(kernel), tf.constant(bias)).numpy()
    assert got.shape == expected.shape
    # Each output is a float32 sum of n = k²·C_in + 1 products: error ≲ eps·sqrt(n)·Σ|x·w| (random rounding).
    terms = kernel_size**2 * shape[3] + 1
    assert np.all(np.abs(got - expected) <= 4 * EPS * math.sqrt(terms) * magnitude)


def test_space_to_depth_conv_without_bias_and_in_a_graph_of_unknown_size():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((7, 7, 4, 3)).astype("float32")
    run = tf.function(lambda x: fast_inference.space_to_depth_conv2d(x, tf.constant(kernel)),
                      input_signature=[tf.TensorSpec([None, None, None, 4], tf.float32)])
    for side in (7, 12, 15):
        x = rng.standard_normal((1, side, side + 1, 4)).astype("float32")
        expected, magnitude = numpy_conv(x, kernel, np.zeros(3))
        got = run(x).numpy()
        assert got.shape == expected.shape
        assert np.all(np.abs(got - expected) <= 4 * EPS * math.sqrt(49 * 4) * magnitude)


@pytest.mark.parametrize("padding", [0, 1, 3])
def test_reflection_pad_is_numpy_reflect(padding):
    x = np.random.default_rng(padding).standard_normal((2, 5, 7, 3)).astype("float32")
    expected = np.pad(x, [(0, 0), (padding, padding), (padding, padding), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(fast_inference.reflection_pad(tf.constant(x), padding).numpy(), expected)


def numpy_instance_norm(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)


def test_instance_norm_for_one_image_many_and_an_unknown_batch():
    rng = np.random.default_rng(2)
    # An offset mean and a spread scale: the two-pass statistics keep full relative precision.
    x = (rng.standard_normal((3, 16, 16, 5)) * np.array([0.1, 1, 3, 10, 0.5]) + 4.0).astype("float32")
    unknown = tf.function(fast_inference.instance_norm, input_signature=[tf.TensorSpec([None, 16, 16, 5], tf.float32)])
    # Sums over 256 positions of unit-scale values, then one division: a few eps·sqrt(256) at most.
    tolerance = 8 * EPS * math.sqrt(256)
    for batch in (x[:1], x):
        expected = numpy_instance_norm(batch)
        assert np.abs(fast_inference.instance_norm(tf.constant(batch)).numpy() - expected).max() <= tolerance
        assert np.abs(unknown(batch).numpy() - expected).max() <= tolerance


@pytest.fixture(scope="module")
def student_pair():
    config = (4, 6, 4, 2, 4, 6, 4, 8)  # stem 4 and output 3 wide: both 7×7 convs take the space-to-depth path
    plain = MobileResnetGenerator(config, num_blocks=3, fast_kernels=False)
    rng = np.random.default_rng(4)
    plain.set_weights([rng.normal(0.0, 0.3, w.shape).astype("float32") for w in plain.get_weights()])
    fast = MobileResnetGenerator(config, num_blocks=3)
    fast.set_weights(plain.get_weights())
    return plain, fast


def test_fast_student_equals_the_plain_layers(student_pair):
    plain, fast = student_pair
    assert fast.fast_kernels and fast.get_config()["fast_kernels"] is True
    images = np.random.default_rng(6).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    # 18 conv layers (3 + 4·3 + 3), each a sum of at most 49·8 unit-scale terms (the weights' 0.3
    # scale keeps activations near unit scale after every instance norm); errors add in quadrature.
    tolerance = 4 * EPS * math.sqrt(18) * math.sqrt(49 * 8)
    for batch in (images[:1], images):
        plain_image, plain_features = plain.translate_and_features(batch)
        fast_image, fast_features = fast.translate_and_features(batch)
        assert np.abs(np.asarray(fast_image) - np.asarray(plain_image)).max() <= tolerance
        for a, b in zip(plain_features, fast_features):
            # The residual stream adds up 4 unit-scale IN outputs without the tanh's damping.
            assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 4 * tolerance


@pytest.mark.parametrize("per_image", [False, True])
def test_exported_fast_student_serves_the_keras_values(student_pair, tmp_path, per_image):
    plain, fast = student_pair
    path = export_generator(fast, tmp_path / "export", per_image=per_image)
    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE_FLOAT]
    tolerance = 4 * EPS * math.sqrt(18) * math.sqrt(49 * 8)
    # The signature's batch is unknown when traced: batched, both instance-norm branches run; per image,
    # the loop runs the one-image graph on every image of the batch.
    for batch in (1, 3):
        images = np.random.default_rng(batch).uniform(-1, 1, (batch, 32, 28, 3)).astype("float32")
        served = signature(images=tf.constant(images))["images"].numpy()
        assert served.shape == images.shape
        assert np.abs(served - np.asarray(plain(images))).max() <= tolerance
