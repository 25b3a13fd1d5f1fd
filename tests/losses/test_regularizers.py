"""Tests of the R1 gradient penalty: analytic oracle, finite differences, second order."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.losses.regularizers import r1_penalty
from psr.models.stylegan2 import StyleGAN2Discriminator


class LinearDiscriminator(keras.Model):
    """D(y) = sum(w * y) + b per image: the input gradient is w, the penalty sum(w^2)."""

    def __init__(self, w, b):
        super().__init__(dtype="float64")
        self.w = tf.constant(w, tf.float64)
        self.b = tf.constant(b, tf.float64)

    def call(self, y, training=False):
        return tf.reduce_sum(self.w * y, axis=[1, 2, 3])[:, None] + self.b


def small_nonlinear_discriminator(seed=0):
    """conv -> tanh -> conv (stride 2) -> leaky ReLU -> dense, float64."""

    def init(offset):
        return keras.initializers.RandomNormal(stddev=0.5, seed=seed + offset)

    return keras.Sequential(
        [
            keras.Input((6, 6, 2), dtype="float64"),
            keras.layers.Conv2D(3, 3, padding="same", activation="tanh", kernel_initializer=init(0),
                                bias_initializer=init(1), dtype="float64"),
            keras.layers.Conv2D(4, 3, strides=2, kernel_initializer=init(2), bias_initializer=init(3),
                                dtype="float64"),
            keras.layers.LeakyReLU(0.2, dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(1, kernel_initializer=init(4), dtype="float64"),
        ]
    )


def tiny_stylegan2_discriminator():
    discriminator = StyleGAN2Discriminator(filters=1, crop_size=8, dtype="float64")
    rng = np.random.default_rng(3)
    for variable in discriminator.weights:
        if variable.path.endswith("bias"):
            variable.assign(rng.normal(scale=0.3, size=variable.shape))
    return discriminator


def input_gradient_by_finite_differences(discriminator, image, eps=1e-6):
    """Central differences of D(image) for every pixel, all perturbations in one batch."""
    size = image.size
    directions = np.eye(size).reshape((size,) + image.shape) * eps
    batch = np.concatenate([image[None] + directions, image[None] - directions])
    scores = np.asarray(discriminator(batch), np.float64)[:, 0]
    return ((scores[:size] - scores[size:]) / (2 * eps)).reshape(image.shape)


def mean_penalty(discriminator, real):
    penalty, _ = r1_penalty(discriminator, real)
    return float(tf.reduce_mean(penalty))


class TestR1Penalty:
    def test_linear_discriminator_matches_analytic_value(self):
        rng = np.random.default_rng(0)
        w = rng.normal(size=(5, 4, 3))
        real = rng.normal(size=(3, 5, 4, 3))
        penalty, scores = r1_penalty(LinearDiscriminator(w, 0.7), real)
        np.testing.assert_allclose(np.asarray(penalty), np.full(3, np.sum(w**2)), rtol=1e-12)
        np.testing.assert_allclose(
            np.asarray(scores)[:, 0], np.sum(w * real, axis=(1, 2, 3)) + 0.7, rtol=1e-12
        )
        assert tuple(penalty.shape) == (3,)

    def test_hand_computed_value(self):
        # w = [1, -2, 2] over 1x1x3 images: sum w^2 = 9 for every sample.
        penalty, _ = r1_penalty(LinearDiscriminator(np.array([1.0, -2.0, 2.0]).reshape(1, 1, 3), 0.0),
                                np.zeros((2, 1, 1, 3)))
        np.testing.assert_allclose(np.asarray(penalty), [9.0, 9.0])

    def test_nonlinear_discriminator_matches_finite_differences(self):
        discriminator = small_nonlinear_discriminator()
        real = np.random.default_rng(1).normal(size=(2, 6, 6, 2))
        penalty, scores = r1_penalty(discriminator, real)
        for b in range(2):
            gradient = input_gradient_by_finite_differences(discriminator, real[b])
            assert float(penalty[b]) == pytest.approx(np.sum(gradient**2), rel=1e-6)
        np.testing.assert_allclose(np.asarray(scores), np.asarray(discriminator(real)), rtol=1e-12)

    def test_stylegan2_discriminator_matches_finite_differences(self):
        discriminator = tiny_stylegan2_discriminator()
        real = np.random.default_rng(2).uniform(-1, 1, size=(2, 8, 8, 3))
        penalty, _ = r1_penalty(discriminator, real)
        for b in range(2):
            gradient = input_gradient_by_finite_differences(discriminator, real[b])
            assert float(penalty[b]) == pytest.approx(np.sum(gradient**2), rel=1e-6)

    def test_batch_equals_separate_samples(self):
        discriminator = small_nonlinear_discriminator()
        real = np.random.default_rng(4).normal(size=(3, 6, 6, 2))
        together, _ = r1_penalty(discriminator, real)
        separate = [float(r1_penalty(discriminator, real[i : i + 1])[0][0]) for i in range(3)]
        np.testing.assert_allclose(np.asarray(together), separate, rtol=1e-12)

    def test_input_independent_discriminator_gives_zero_not_none(self):
        constant = keras.Sequential(
            [keras.Input((4, 4, 3)), keras.layers.Lambda(lambda y: tf.ones_like(y[:, :1, 0, 0]))]
        )
        penalty, _ = r1_penalty(constant, np.ones((2, 4, 4, 3), "float32"))
        np.testing.assert_array_equal(np.asarray(penalty), [0.0, 0.0])

    def test_weight_gradient_matches_finite_differences_second_order(self):
        # d mean_b(penalty_b) / d theta is a second derivative of D: nested tapes vs central
        # differences of the (first-order) penalty, in float64, on a norm-free StyleGAN2 D.
        discriminator = tiny_stylegan2_discriminator()
        real = tf.constant(np.random.default_rng(5).uniform(-1, 1, size=(2, 8, 8, 3)))
        variables = discriminator.trainable_variables

        @tf.function
        def analytic():
            with tf.GradientTape() as weight_tape:
                penalty, _ = r1_penalty(discriminator, real)
                loss = tf.reduce_mean(penalty)
            return weight_tape.gradient(loss, variables)

        gradients = analytic()
        checked = 0
        rng = np.random.default_rng(6)
        eps = 1e-6
        for index in (0, len(variables) // 2, len(variables) - 4, len(variables) - 2):
            variable, gradient = variables[index], np.asarray(gradients[index])
            values = np.asarray(variable)
            for _ in range(2):
                position = tuple(rng.integers(0, n) for n in values.shape)
                shifted = values.copy()
                shifted[position] += eps
                variable.assign(shifted)
                plus = mean_penalty(discriminator, real)
                shifted[position] -= 2 * eps
                variable.assign(shifted)
                minus = mean_penalty(discriminator, real)
                variable.assign(values)
                numeric = (plus - minus) / (2 * eps)
                assert gradient[position] == pytest.approx(numeric, rel=1e-5, abs=1e-8), variable.path
                checked += 1
        assert checked == 8

    def test_same_value_inside_tf_function(self):
        discriminator = small_nonlinear_discriminator()
        real = tf.constant(np.random.default_rng(7).normal(size=(2, 6, 6, 2)))
        eager, _ = r1_penalty(discriminator, real)
        traced, _ = tf.function(lambda y: r1_penalty(discriminator, y))(real)
        np.testing.assert_allclose(np.asarray(traced), np.asarray(eager), rtol=1e-12)
