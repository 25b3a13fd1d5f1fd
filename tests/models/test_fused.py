"""Tests of the fused conv units: the convolution kernels against a NumPy re-statement, and
units / the fused ResNet generator against plain Keras autodiff."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.models import fused
from psr.models.layers import (
    BlurDownsample,
    InstanceNormalization,
    ReflectionPadding2D,
    ZeroPaddedConv2D,
)
from psr.models.resnet_generator import ResnetGenerator


# === NumPy oracle: stride-1 correlation with `p` zeros on every side, and its gradients ===


def np_conv(x, w, p):
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, wd = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    out = np.zeros(x.shape[:1] + (h, wd, w.shape[3]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("bhwc,co->bhwo", xp[:, i : i + h, j : j + wd], w[i, j])
    return out


def np_conv_grads(x, w, p, g):
    """d/dx and d/dw of sum(np_conv(x, w, p) * g)."""
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, wd = g.shape[1], g.shape[2]
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(k):
        for j in range(k):
            dw[i, j] = np.einsum("bhwc,bhwo->co", xp[:, i : i + h, j : j + wd], g)
            dxp[:, i : i + h, j : j + wd] += np.einsum("bhwo,co->bhwc", g, w[i, j])
    return dxp[:, p : xp.shape[1] - p, p : xp.shape[2] - p], dw


def zero_gradient_noise(scale: float, summed_terms: int) -> float:
    """Float32 noise of a gradient that is mathematically zero (a bias in front of an instance norm).

    Such a gradient is a sum over the `summed_terms` = B·H·W positions of terms that cancel exactly; in
    float32 the sum keeps a residue of about eps·sqrt(n) times the terms' size, which is bounded by the
    largest gradient of the network (`scale`). Different kernels (oneDNN on/off) sum in different orders, so
    the two sides' residues are independent: allow 8× that. A real gradient difference is O(scale).
    """
    return 8.0 * float(np.finfo(np.float32).eps) * np.sqrt(summed_terms) * scale


def assert_close(actual, expected, rtol=2e-5):
    actual = np.asarray(actual, np.float64)
    scale = np.abs(expected).max()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=rtol * scale, rtol=0)


# (height, width, kernel, C_in, C_out, zero padding): each row takes another CPU formulation.
CONV_CASES = {
    "small-map": (9, 11, 3, 5, 6, 1),  # TensorFlow's kernels
    "large-narrowing": (64, 64, 3, 6, 5, 1),  # flat kernel gradient, input gradient as a forward conv
    "large-widening": (64, 65, 3, 5, 8, 0),  # flat kernel gradient, native input gradient
    "thin-output-padded": (20, 17, 7, 6, 3, 3),  # matmul + shifted sums (the 7x7 conv to RGB)
    "thin-output": (12, 10, 7, 6, 3, 0),
    "thin-input-large": (64, 64, 7, 3, 8, 3),  # 3 input channels: native kernel gradient
}


@pytest.mark.parametrize("cpu", [True, False], ids=["cpu-kernels", "native-kernels"])
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv_kernels_match_numpy(case, cpu):
    height, width, k, c_in, c_out, p = CONV_CASES[case]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, height, width, c_in))
    w = rng.normal(size=(k, k, c_in, c_out))
    expected = np_conv(x, w, p)
    g = rng.normal(size=expected.shape)
    expected_dx, expected_dw = np_conv_grads(x, w, p, g)

    # Static shapes, as in a training step, so the size-dependent choices are the real ones.
    @tf.function
    def run(x, w, g):
        return (
            fused.conv_forward(x, w, p),
            fused.conv_input_gradient(g, w, tf.shape(x), p, cpu),
            fused.conv_kernel_gradient(x, g, w, p, cpu),
        )

    out, dx, dw = run(tf.constant(x, tf.float32), tf.constant(w, tf.float32), tf.constant(g, tf.float32))
    assert_close(out, expected)
    assert_close(dx, expected_dx)
    assert_close(dw, expected_dw)


def test_large_map_rule_needs_static_sizes():
    assert fused._is_large(tf.zeros((1, 64, 64, 1)))
    assert not fused._is_large(tf.zeros((1, 63, 64, 1)))
    assert not fused._is_large(keras.KerasTensor((None, None, None, 3)))


# === Units against plain autodiff ===


def gradients_of(fn, x, variables):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        # A non-linear read-out, so every output position gets its own upstream gradient.
        loss = tf.reduce_sum(tf.sin(3.0 * y))
    return y, tape.gradient(loss, [x] + list(variables))


def compare_with_plain(unit_fn, plain_fn, x, variables, compiled):
    if compiled:
        unit_fn, plain_fn = tf.function(unit_fn), tf.function(plain_fn)
    y_unit, grads_unit = gradients_of(unit_fn, x, variables)
    y_plain, grads_plain = gradients_of(plain_fn, x, variables)
    assert_close(y_unit, np.asarray(y_plain, np.float64))
    for a, b in zip(grads_unit, grads_plain):
        assert a is not None
        assert_close(a, np.asarray(b, np.float64), rtol=5e-5)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize(
    "conv_args",
    [
        dict(filters=8, kernel_size=3, padding="same"),
        dict(filters=3, kernel_size=7, padding="valid"),
        dict(filters=8, kernel_size=3, padding="valid", use_bias=False),
    ],
    ids=["same-3x3", "thin-7x7", "no-bias"],
)
def test_conv_unit_equals_plain_layers(conv_args, compiled):
    prefix = [InstanceNormalization(), keras.layers.ReLU(), ReflectionPadding2D(1)]
    conv = keras.layers.Conv2D(**conv_args, bias_initializer="random_normal")
    x = tf.random.normal((2, 64, 64, 6), seed=1)
    conv.build((2, 66, 66, 6))

    def plain(x):
        for layer in prefix:
            x = layer(x)
        return conv(x)

    compare_with_plain(lambda x: fused.conv_unit(x, prefix, conv), plain, x, conv.trainable_weights, compiled)


def test_conv_unit_zero_padded_conv_with_blur_prefix():
    prefix = [InstanceNormalization(), keras.layers.ReLU(), BlurDownsample()]
    conv = ZeroPaddedConv2D(5, 4, zero_padding=1, bias_initializer="random_normal")
    conv.build((2, 9, 8, 4))
    x = tf.random.normal((2, 17, 15, 4), seed=2)
    assert fused.conv_zero_padding(conv) == 1

    def plain(x):
        for layer in prefix:
            x = layer(x)
        return conv(x)

    compare_with_plain(lambda x: fused.conv_unit(x, prefix, conv), plain, x, conv.trainable_weights, True)


@pytest.mark.parametrize(
    "conv",
    [
        keras.layers.Conv2D(4, 3, strides=2),
        keras.layers.Conv2D(4, 3, dilation_rate=2),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Conv2D(4, 2, padding="same"),
    ],
    ids=["strided", "dilated", "activation", "even-same"],
)
def test_unsupported_convs_run_as_plain_layers(conv):
    assert fused.conv_zero_padding(conv) is None
    conv.build((1, 10, 10, 3))
    x = tf.random.normal((1, 10, 10, 3), seed=3)
    np.testing.assert_allclose(fused.conv_unit(x, [], conv), conv(x), atol=1e-6)


def test_symbolic_inputs_give_shapes():
    conv = keras.layers.Conv2D(4, 3, padding="same")
    outputs = fused.conv_unit(keras.Input((12, 10, 3)), [ReflectionPadding2D(2)], conv)
    assert tuple(outputs.shape) == (None, 16, 14, 4)  # padded by 2, then a "same" conv


def test_recompute_unit_equals_plain_layers():
    layers = [InstanceNormalization(), keras.layers.ReLU(), BlurDownsample()]

    def plain(x):
        for layer in layers:
            x = layer(x)
        return x

    x = tf.random.normal((2, 16, 13, 3), seed=4)
    compare_with_plain(lambda x: fused.recompute_unit(x, layers), plain, x, [], True)


# === The fused ResNet generator ===


def generator_pair(**kwargs):
    plain = ResnetGenerator(fused=False, **kwargs)
    fused_generator = ResnetGenerator(fused=True, **kwargs)
    rng = np.random.default_rng(5)
    for source, target in zip(plain.weights, fused_generator.weights):
        # Non-zero biases and larger weights than the init, so every path carries signal.
        value = np.asarray(source) + rng.normal(0.0, 0.05, source.shape)
        source.assign(value)
        target.assign(value)
    return plain, fused_generator


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_fused_generator_equals_plain_generator(compiled):
    plain, fused_generator = generator_pair(filters=4, num_blocks=2)
    x = tf.random.uniform((2, 24, 27, 3), -1.0, 1.0, seed=6)
    layer_ids = [0, 3, 4, 8, 12, 13, 19]  # a norm, a ReLU, convs, blocks, a blur-up

    def step(generator):
        with tf.GradientTape() as tape:
            tape.watch(x)
            fake, keys = generator.translate_and_encode(x, layer_ids)
            queries = generator.encode(fake, [0, 4, 8, 12])
            loss = tf.reduce_sum(tf.sin(3.0 * fake)) + sum(tf.reduce_sum(tf.cos(f)) for f in keys + queries)
        return [fake] + keys + queries, tape.gradient(loss, [x] + generator.trainable_weights)

    if compiled:
        step = tf.function(step)
    outputs_plain, grads_plain = step(plain)
    outputs_fused, grads_fused = step(fused_generator)
    for a, b in zip(outputs_fused, outputs_plain):
        assert_close(a, np.asarray(b, np.float64))
    # Per tensor to 5e-5 of its own scale; biases in front of an instance norm have a zero
    # gradient that both compute as float noise, hence the noise floor.
    scale = max(float(np.abs(g).max()) for g in grads_plain)
    floor = zero_gradient_noise(scale, int(np.prod(x.shape[:3])))
    names = ["input"] + [w.path for w in plain.trainable_weights]
    for name, a, b in zip(names, grads_fused, grads_plain):
        b = np.asarray(b, np.float64)
        atol = max(5e-5 * np.abs(b).max(), floor)
        np.testing.assert_allclose(np.asarray(a, np.float64), b, atol=atol, rtol=0, err_msg=name)
    np.testing.assert_allclose(fused_generator(x), plain(x), atol=1e-5)


def test_fused_flag_is_in_the_config_and_round_trips():
    generator = ResnetGenerator(filters=4, num_blocks=1, fused=False)
    config = generator.get_config()
    assert config["fused"] is False
    rebuilt = ResnetGenerator.from_config(config)
    assert rebuilt.fused is False and not any(block.fused for block in rebuilt.sequence[12:13])
    assert ResnetGenerator(filters=4, num_blocks=1).fused is True


def test_config_switch_reaches_the_generator():
    from psr.builders import build_discriminator, build_generator
    from psr.config import DiscriminatorConfig, GeneratorConfig

    auto = fused.fused_units_pay()
    assert build_generator(GeneratorConfig(filters=4, num_blocks=1)).fused is auto
    assert build_generator(GeneratorConfig(filters=4, num_blocks=1, fused=True)).fused is True
    assert build_generator(GeneratorConfig(filters=4, num_blocks=1, fused=False)).fused is False
    assert build_discriminator(DiscriminatorConfig(filters=4, num_layers=1)).fused is auto
    assert build_discriminator(DiscriminatorConfig(filters=4, num_layers=1, fused=False)).fused is False


def test_fused_auto_resolves_as_the_table_says():
    # CPU (no GPU in the test machines): fused only for float32 without oneDNN.
    assert fused.fused_units_pay("float32", onednn=False) is True
    assert fused.fused_units_pay("float32", onednn=True) is False
    assert fused.fused_units_pay("mixed_bfloat16", onednn=False) is False
    assert fused.fused_units_pay("mixed_bfloat16", onednn=True) is False
    assert fused.fused_units_pay("mixed_float16", onednn=False) is False
    # This process: oneDNN as TF_ENABLE_ONEDNN_OPTS (or the CPU's default) set it.
    expected = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if expected in ("0", "1"):
        assert fused.onednn_enabled() is (expected == "1")
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        assert fused.resolve_fused("auto") is False and fused.resolve_fused(True) is True
    finally:
        keras.config.set_dtype_policy(previous)


def test_forcing_the_fused_units_where_they_measured_slower_gives_a_notice():
    from psr.config import config_from_dict
    from psr.experiment import forced_fused_notices

    key = "model.generator.fused"
    # Only an explicit true on a oneDNN CPU (this test machine has no GPU).
    assert fused.forced_fused_notice(key, True, "float32", onednn=False) is None
    assert fused.forced_fused_notice(key, "auto", "mixed_bfloat16", onednn=True) is None
    assert fused.forced_fused_notice(key, False, "mixed_bfloat16", onednn=True) is None
    assert "15-20 % slower" in fused.forced_fused_notice(key, True, "float32", onednn=True)
    notice = fused.forced_fused_notice(key, True, "mixed_bfloat16", onednn=True)
    assert notice.startswith(f"{key}: true with oneDNN CPU kernels under mixed precision") and "about 8x" in notice
    # Every network section with a `fused` setting, as the run prints them.
    cfg = config_from_dict({"model": {"generator": {"fused": True}, "discriminator": {"fused": True}},
                            "train": {"mixed_precision": True}})
    notices = forced_fused_notices(cfg.model, cfg.train)
    if fused.onednn_enabled():
        assert [n.split(":")[0] for n in notices] == ["model.generator.fused", "model.discriminator.fused"]
    else:
        assert notices == []


def test_fused_setting_is_checked_in_the_config():
    from psr.config import config_from_dict
    from psr.errors import ConfigError

    assert config_from_dict({"model": {"generator": {"fused": "auto"}}}).model.generator.fused == "auto"
    assert config_from_dict({"model": {"discriminator": {"fused": False}}}).model.discriminator.fused is False
    with pytest.raises(ConfigError, match="model.generator.fused: expected true, false or auto, got 'yes'"):
        config_from_dict({"model": {"generator": {"fused": "yes"}}})


def test_fused_generator_gradients_compile_with_xla():
    plain, fused_generator = generator_pair(filters=4, num_blocks=1)
    x = tf.random.uniform((1, 16, 16, 3), -1.0, 1.0, seed=7)

    def grads(generator):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(3.0 * generator(x)))
        return tape.gradient(loss, generator.trainable_weights)

    compiled = tf.function(grads, jit_compile=True)(fused_generator)
    expected = grads(plain)
    scale = max(float(np.abs(g).max()) for g in expected)
    floor = zero_gradient_noise(scale, int(np.prod(x.shape[:3])))  # the zero bias gradients
    for a, b in zip(compiled, expected):
        np.testing.assert_allclose(a, b, atol=max(1e-4 * float(np.abs(b).max()), floor), rtol=0)


def test_fused_patchgan_equals_plain_including_r1_second_order():
    from psr.models.patchgan import PatchGANDiscriminator

    plain = PatchGANDiscriminator(filters=4, num_layers=2, fused=False)
    fused_d = PatchGANDiscriminator(filters=4, num_layers=2, fused=True)
    rng = np.random.default_rng(8)
    for source, target in zip(plain.weights, fused_d.weights):
        value = np.asarray(source) + rng.normal(0.0, 0.05, source.shape)
        source.assign(value)
        target.assign(value)
    x = tf.random.uniform((2, 32, 30, 3), -1.0, 1.0, seed=9)

    @tf.function
    def r1_step(discriminator):
        # R1 needs the gradient of a gradient: the units' backward must itself be differentiable.
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                scores = discriminator(x)
                readout = tf.reduce_sum(tf.sin(3.0 * scores))
            input_grad = inner.gradient(readout, x)
            loss = tf.reduce_sum(tf.square(scores)) + tf.reduce_sum(tf.square(input_grad))
        return [scores, input_grad], outer.gradient(loss, discriminator.trainable_weights)

    values_plain, grads_plain = r1_step(plain)
    values_fused, grads_fused = r1_step(fused_d)
    for a, b in zip(values_fused, values_plain):
        assert_close(a, np.asarray(b, np.float64))
    scale = max(float(np.abs(g).max()) for g in grads_plain)
    floor = zero_gradient_noise(scale, int(np.prod(x.shape[:3])))  # biases in front of instance norms
    for weight, a, b in zip(plain.trainable_weights, grads_fused, grads_plain):
        b = np.asarray(b, np.float64)
        atol = max(5e-5 * np.abs(b).max(), floor)
        np.testing.assert_allclose(np.asarray(a, np.float64), b, atol=atol, rtol=0, err_msg=weight.path)
