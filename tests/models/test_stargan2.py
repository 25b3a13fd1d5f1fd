"""Tests of the StarGAN v2 / Hneg_SRC networks against NumPy re-statements and spec §2's numbers.

The oracles below are written from the PyTorch definitions of spec multimodal.md §2.1
(float64 NumPy), not from psr's code. Tolerances: float32 rounding of a dot product of
n terms is about eps·sqrt(n)·(size of the terms); each block stacks a few such
products (plus instance norms, which divide by a std of order 1 for these inputs), so
the bound used is `depth · 8 · eps32 · sqrt(n) · scale`, scale = the largest reference
magnitude (at least 1).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.models.stargan2 import (
    AdaIN,
    AdaINResBlock,
    DomainTrunk,
    DownBlock,
    MappingNetwork,
    MultiTaskDiscriminator,
    PreActResBlock,
    StarGAN2Generator,
    StyleEncoder,
    UpBlock,
)
from tests.models.numpy_net_oracles import conv2d, instance_norm, leaky_relu

EPS32 = np.finfo(np.float32).eps


def tolerance(reference, fan_in, depth):
    scale = max(1.0, float(np.abs(reference).max()))
    return depth * 8 * EPS32 * math.sqrt(fan_in) * scale


def randomize(layer, seed):
    """Random biases and norm scales / shifts (kernels keep their random init), so each weight matters."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        shape = tuple(variable.shape)
        if len(shape) != 1:
            continue
        offset = 1.0 if variable.name == "gamma" else 0.0
        variable.assign((offset + 0.3 * rng.standard_normal(shape)).astype(np.float32))


def images(batch, size, channels, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, size, size, channels)).astype("float32")


def avg_pool(x):
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample_nearest(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def np_affine_in(x, norm):
    return instance_norm(x) * np.asarray(norm.gamma, np.float64) + np.asarray(norm.beta, np.float64)


def np_conv(x, conv):
    bias = np.asarray(conv.bias) if conv.use_bias else None
    return conv2d(x, np.asarray(conv.kernel), bias, stride=conv.strides[0], zero_padding=conv.zero_padding)


def np_dense(x, dense):
    return np.asarray(x, np.float64) @ np.asarray(dense.kernel, np.float64) + np.asarray(dense.bias, np.float64)


def np_adain(x, s, adain):
    h = np_dense(s, adain.fc)
    c = adain.channels
    gamma, beta = h[:, None, None, :c], h[:, None, None, c:]
    return (1.0 + gamma) * instance_norm(x) + beta


def np_resblock(x, block, normalize, downsample, learned_shortcut):
    shortcut = np_conv(x, block.conv1x1) if learned_shortcut else np.asarray(x, np.float64)
    if downsample:
        shortcut = avg_pool(shortcut)
    r = np_affine_in(x, block.norm1) if normalize else np.asarray(x, np.float64)
    r = np_conv(leaky_relu(r), block.conv1)
    if downsample:
        r = avg_pool(r)
    if normalize:
        r = np_affine_in(r, block.norm2)
    r = np_conv(leaky_relu(r), block.conv2)
    return (shortcut + r) / math.sqrt(2)


# === Parameter counts (spec §2) ===


@pytest.mark.parametrize("num_domains, mapping, encoder, discriminator", [
    (4, 4_079_872, 20_982_592, 20_853_316),
    (5, 4_900_672, 21_015_424, 20_853_829),
])
def test_parameter_counts_equal_spec_at_256(num_domains, mapping, encoder, discriminator):
    assert MappingNetwork(num_domains=num_domains).count_params() == mapping
    assert StyleEncoder(num_domains=num_domains).count_params() == encoder
    assert MultiTaskDiscriminator(num_domains=num_domains).count_params() == discriminator


def test_generator_parameter_count_equals_spec_at_256():
    generator = StarGAN2Generator()
    assert generator.count_params() == 10_739_459
    assert generator.feature_channels == [256] * 5


# === Initialisation (spec §2.7) ===


def test_kernels_are_untruncated_he_normal_and_biases_zero():
    mapping = MappingNetwork(latent_dim=16, style_dim=64, num_domains=1, hidden=512, shared_layers=2, head_layers=1)
    kernel = np.asarray(mapping.shared[1].kernel)  # 512 x 512, fan_in 512
    std = math.sqrt(2.0 / 512)
    assert abs(kernel.std() / std - 1.0) < 0.01  # 262,144 draws: relative s.e. of the std ~0.14%
    # An untruncated normal puts 4.55% of its mass beyond 2 std; a truncated one (HeNormal) none.
    beyond = np.mean(np.abs(kernel) > 2 * std)
    assert 0.04 < beyond < 0.051
    assert np.all(np.asarray(mapping.shared[1].bias) == 0)
    block = PreActResBlock(32, 64, normalize=True)
    conv_std = np.asarray(block.conv1.kernel).std()
    assert abs(conv_std / math.sqrt(2.0 / (9 * 32)) - 1.0) < 0.03  # 9,216 draws
    assert np.all(np.asarray(block.norm1.gamma) == 1) and np.all(np.asarray(block.norm1.beta) == 0)


# === Blocks against NumPy ===


def test_adain_matches_numpy():
    layer = AdaIN(6, style_dim=5)
    randomize(layer, 1)
    x, s = images(2, 8, 6, seed=2) * 3 + 1, np.random.default_rng(3).standard_normal((2, 5)).astype("float32")
    expected = np_adain(x, s, layer)
    np.testing.assert_allclose(np.asarray(layer(x, s)), expected, atol=tolerance(expected, 5, 3))
    # gamma = first C outputs, beta = last C: a pure shift in the bias moves only beta.
    layer.fc.kernel.assign(np.zeros((5, 12), np.float32))
    layer.fc.bias.assign(np.r_[np.zeros(6), np.arange(6)].astype(np.float32))
    np.testing.assert_allclose(np.asarray(layer(x, s)), instance_norm(x) + np.arange(6), atol=1e-5)


@pytest.mark.parametrize("in_channels, out_channels, normalize, downsample", [
    (8, 8, True, False),     # G encoder: identity shortcut
    (8, 16, False, True),    # E / D trunk: learned 1x1 shortcut, then pooling
    (8, 16, True, True),
    (16, 16, False, True),   # capped width: identity shortcut, pooled
])
def test_preact_resblock_matches_numpy(in_channels, out_channels, normalize, downsample):
    block = PreActResBlock(in_channels, out_channels, normalize=normalize, downsample=downsample)
    randomize(block, 4)
    assert (block.conv1x1 is not None) == (in_channels != out_channels)
    if block.conv1x1 is not None:
        assert not block.conv1x1.use_bias
    x = images(2, 8, in_channels, seed=5)
    expected = np_resblock(x, block, normalize, downsample, in_channels != out_channels)
    out = np.asarray(block(x))
    assert out.shape == expected.shape == (2, 4 if downsample else 8, 4 if downsample else 8, out_channels)
    np.testing.assert_allclose(out, expected, atol=tolerance(expected, 9 * in_channels, 4))


def test_down_block_matches_numpy():
    block = DownBlock(6, 12)
    randomize(block, 6)
    x = images(2, 8, 6, seed=7)
    expected = np_conv(leaky_relu(np_affine_in(x, block.norm1)), block.conv1)
    assert expected.shape == (2, 4, 4, 12)
    np.testing.assert_allclose(np.asarray(block(x)), expected, atol=tolerance(expected, 16 * 6, 2))


def test_up_block_matches_numpy_and_ignores_style():
    block = UpBlock(12, 6)
    randomize(block, 8)
    x = images(2, 4, 12, seed=9)
    expected = np_conv(leaky_relu(np_affine_in(upsample_nearest(x), block.norm1)), block.conv1)
    assert expected.shape == (2, 8, 8, 6)
    np.testing.assert_allclose(np.asarray(block(x)), expected, atol=tolerance(expected, 9 * 12, 2))
    assert not block.uses_style


def test_style_up_block_uses_adain():
    block = UpBlock(12, 6, style_dim=5)
    randomize(block, 10)
    x, s = images(2, 4, 12, seed=11), np.random.default_rng(12).standard_normal((2, 5)).astype("float32")
    expected = np_conv(leaky_relu(np_adain(upsample_nearest(x), s, block.norm1)), block.conv1)
    np.testing.assert_allclose(np.asarray(block(x, s)), expected, atol=tolerance(expected, 9 * 12, 3))
    with pytest.raises(ValueError, match="needs `styles`"):
        block(x)


def test_adain_resblock_matches_numpy():
    block = AdaINResBlock(8, style_dim=5)
    randomize(block, 13)
    x, s = images(2, 8, 8, seed=14), np.random.default_rng(15).standard_normal((2, 5)).astype("float32")
    r = np_conv(leaky_relu(np_adain(x, s, block.norm1)), block.conv1)
    r = np_conv(leaky_relu(np_adain(r, s, block.norm2)), block.conv2)
    expected = (r + x) / math.sqrt(2)
    np.testing.assert_allclose(np.asarray(block(x, s)), expected, atol=tolerance(expected, 9 * 8, 5))


# === Shapes (spec §2.2 table, §2.5 table, at 32x32 with filters 8) ===


def test_generator_layer_shapes_follow_spec_table():
    g = StarGAN2Generator(image_size=32, style_dim=16, filters=8, max_filters=32)
    x = images(2, 32, 3)
    s = np.zeros((2, 16), np.float32)
    h = g.from_rgb(x)
    assert h.shape == (2, 32, 32, 8)
    shapes = []
    for block in g.down_blocks + g.res_blocks:
        h = block(h)
        shapes.append(tuple(h.shape))
    assert shapes == [(2, 16, 16, 16), (2, 8, 8, 32)] + [(2, 8, 8, 32)] * 4
    for block in g.adain_blocks:
        h = block(h, s)
        assert h.shape == (2, 8, 8, 32)
    shapes = []
    for block in g.up_blocks:
        h = block(h)
        shapes.append(tuple(h.shape))
    assert shapes == [(2, 16, 16, 16), (2, 32, 32, 8)]
    assert g(x, s).shape == (2, 32, 32, 3)
    assert g.feature_channels == [32] * 5


def test_generator_width_cap_and_official_default_width():
    assert StarGAN2Generator(image_size=256, filters=None).from_rgb.filters == 64
    g = StarGAN2Generator(image_size=32, style_dim=4, filters=16, max_filters=24, num_res=1, num_adain=1)
    assert [b.out_channels for b in g.down_blocks] == [24, 24]
    assert g.feature_channels == [24, 24]


def test_trunk_shapes_reach_4x4_then_1x1():
    trunk = DomainTrunk(image_size=32, filters=8, max_filters=32)
    assert len(trunk.blocks) == 3  # log2(32) - 2
    h = trunk.first_conv(images(2, 32, 3))
    shapes = []
    for block in trunk.blocks:
        h = block(h)
        shapes.append(tuple(h.shape))
    assert shapes == [(2, 16, 16, 16), (2, 8, 8, 32), (2, 4, 4, 32)]
    assert trunk(images(2, 32, 3)).shape == (2, 32)
    with pytest.raises(ValueError, match="built for 32x32"):
        trunk(images(1, 64, 3))


# === Per-domain heads ===


def test_style_encoder_and_discriminator_select_the_domain_head():
    x, domains = images(3, 32, 3, seed=16), np.array([2, 0, 2], np.int32)
    encoder = StyleEncoder(32, style_dim=6, num_domains=3, filters=8, max_filters=32)
    randomize(encoder, 17)
    h = np.asarray(encoder.trunk(x), np.float64)
    expected = np.stack([np_dense(h[b : b + 1], encoder.heads[d])[0] for b, d in enumerate(domains)])
    np.testing.assert_allclose(np.asarray(encoder(x, domains)), expected, atol=tolerance(expected, 32, 1))

    discriminator = MultiTaskDiscriminator(32, num_domains=3, filters=8, max_filters=32)
    randomize(discriminator, 18)
    h = np.asarray(discriminator.trunk(x), np.float64)
    w = np.asarray(discriminator.head.kernel, np.float64)[0, 0]
    all_logits = h @ w + np.asarray(discriminator.head.bias, np.float64)
    expected = all_logits[np.arange(3), domains]
    out = np.asarray(discriminator(x, domains))
    assert out.shape == (3,)
    np.testing.assert_allclose(out, expected, atol=tolerance(expected, 32, 1))


def np_mapping(z, domains, mapping):
    h = np.asarray(z, np.float64)
    for layer in mapping.shared:
        h = np.maximum(np_dense(h, layer), 0)
    rows = []
    for b, d in enumerate(domains):
        x = h[b : b + 1]
        for layer in mapping.heads[d][:-1]:
            x = np.maximum(np_dense(x, layer), 0)
        rows.append(np_dense(x, mapping.heads[d][-1])[0])
    return np.stack(rows)


def test_mapping_network_matches_numpy():
    mapping = MappingNetwork(latent_dim=8, style_dim=6, num_domains=3, hidden=32)
    randomize(mapping, 19)
    z, domains = np.random.default_rng(20).standard_normal((4, 8)).astype("float32"), np.array([1, 0, 2, 1])
    expected = np_mapping(z, domains, mapping)
    out = np.asarray(mapping(z, domains))
    np.testing.assert_allclose(out, expected, atol=tolerance(expected, 32, 8))


def test_only_the_selected_mapping_head_gets_gradient():
    mapping = MappingNetwork(latent_dim=8, style_dim=6, num_domains=3, hidden=32)
    z = tf.constant(np.random.default_rng(21).standard_normal((2, 8)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(tf.square(mapping(z, tf.constant([1, 1]))))
    variables = [v for head in mapping.heads for layer in head for v in layer.trainable_variables]
    grads = tape.gradient(loss, variables)
    per_head = len(variables) // 3
    for domain in range(3):
        norms = [0.0 if g is None else float(tf.norm(tf.convert_to_tensor(g)))
                 for g in grads[domain * per_head : (domain + 1) * per_head]]
        if domain == 1:
            assert all(n > 0 for n in norms)
        else:
            assert all(n == 0 for n in norms)
    assert all(float(tf.norm(g)) > 0 for g in tape.gradient(loss, mapping.shared[0].trainable_variables))


# === Generator API ===


def test_encode_then_decode_equals_call():
    g = StarGAN2Generator(image_size=32, style_dim=16, filters=8, max_filters=32)
    randomize(g, 22)
    x = images(2, 32, 3, seed=23)
    s = np.random.default_rng(24).standard_normal((2, 16)).astype("float32")
    features = g.encode(x)
    assert len(features) == 5 and [f.shape[-1] for f in features] == g.feature_channels
    np.testing.assert_array_equal(np.asarray(g.decode(features[-1], s)), np.asarray(g(x, s)))
    # The encoder does not depend on the style; the output does.
    other = np.random.default_rng(25).standard_normal((2, 16)).astype("float32")
    assert np.abs(np.asarray(g(x, s)) - np.asarray(g(x, other))).max() > 1e-3


def test_generator_under_tf_function_matches_eager():
    g = StarGAN2Generator(image_size=32, style_dim=16, filters=8, max_filters=32, style_upsampling=True)
    x = images(2, 32, 3, seed=26)
    s = np.random.default_rng(27).standard_normal((2, 16)).astype("float32")
    traced = tf.function(lambda a, b: g(a, b, training=True))
    np.testing.assert_allclose(np.asarray(traced(x, s)), np.asarray(g(x, s)), atol=1e-5)


def test_discriminator_r1_second_order_gradient_matches_finite_differences():
    """R1 needs d/dW of |dD/dx|^2 (spec §9.8); checked in float64 against central differences."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        discriminator = MultiTaskDiscriminator(8, num_domains=2, filters=2, max_filters=4)
        randomize(discriminator, 29)
        x = tf.constant(np.random.default_rng(30).standard_normal((2, 8, 8, 3)))
        domains = tf.constant([1, 0])
        kernel = discriminator.trunk.blocks[0].conv1.kernel
        assert kernel.dtype == "float64"

        def r1():
            with tf.GradientTape() as inner:
                inner.watch(x)
                logits = discriminator(x, domains)
            return 0.5 * tf.reduce_sum(tf.square(inner.gradient(logits, x)))

        with tf.GradientTape() as outer:
            penalty = r1()
        analytic = np.asarray(outer.gradient(penalty, kernel))
        step = 1e-5
        for index in [(0, 0, 0, 0), (1, 2, 1, 0), (2, 1, 0, 1)]:
            original = np.asarray(kernel)
            for sign, store in ((1, "plus"), (-1, "minus")):
                changed = original.copy()
                changed[index] += sign * step
                kernel.assign(changed)
                if store == "plus":
                    plus = float(r1())
                else:
                    minus = float(r1())
            kernel.assign(original)
            numeric = (plus - minus) / (2 * step)
            # Central differences in float64: truncation ~step^2, rounding ~1e-16 / step.
            assert abs(analytic[index] - numeric) <= 1e-6 * max(1.0, abs(numeric))
    finally:
        keras.config.set_dtype_policy(previous)


def test_generator_and_discriminator_compile_with_xla():
    g = StarGAN2Generator(image_size=32, style_dim=8, filters=4, max_filters=16, num_res=1, num_adain=1)
    d = MultiTaskDiscriminator(32, num_domains=2, filters=4, max_filters=16)
    x, s, y = images(2, 32, 3, seed=31), np.ones((2, 8), np.float32), np.array([1, 0])
    compiled = tf.function(lambda a, b, c: (g(a, b), d(a, c)), jit_compile=True)
    out_g, out_d = compiled(x, s, y)
    np.testing.assert_allclose(np.asarray(out_g), np.asarray(g(x, s)), atol=1e-4)
    np.testing.assert_allclose(np.asarray(out_d), np.asarray(d(x, y)), atol=1e-4)


# === Config round trip ===


@pytest.mark.parametrize("make", [
    lambda: StarGAN2Generator(image_size=32, style_dim=16, filters=8, max_filters=32, num_res=2, num_adain=3,
                              style_upsampling=True),
    lambda: MappingNetwork(latent_dim=8, style_dim=6, num_domains=3, hidden=32, shared_layers=2, head_layers=3),
    lambda: StyleEncoder(32, style_dim=6, num_domains=3, filters=8, max_filters=32),
    lambda: MultiTaskDiscriminator(32, num_domains=3, filters=8, max_filters=32),
])
def test_get_config_round_trip(make):
    model = make()
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights]
    clone.set_weights(model.get_weights())
    x = images(2, 32, 3, seed=28)
    if isinstance(model, StarGAN2Generator):
        args = (x, np.ones((2, 16), np.float32))
    elif isinstance(model, MappingNetwork):
        args = (np.ones((2, 8), np.float32), np.array([0, 2]))
    else:
        args = (x, np.array([0, 2]))
    np.testing.assert_array_equal(np.asarray(clone(*args)), np.asarray(model(*args)))


@pytest.mark.parametrize("layer", [
    AdaIN(4, 3), PreActResBlock(4, 8, normalize=True, downsample=True), DownBlock(4, 8), UpBlock(8, 4, 3),
    AdaINResBlock(4, 3), DomainTrunk(16, 4, 8),
])
def test_layer_get_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in layer.weights]


def test_keras_file_round_trip(tmp_path):
    g = StarGAN2Generator(image_size=32, style_dim=4, filters=4, max_filters=8, num_res=1, num_adain=1)
    path = tmp_path / "g.weights.h5"
    g.save_weights(path)
    clone = StarGAN2Generator(image_size=32, style_dim=4, filters=4, max_filters=8, num_res=1, num_adain=1)
    clone.load_weights(path)
    x, s = images(1, 32, 3), np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(np.asarray(clone(x, s)), np.asarray(g(x, s)))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        StyleEncoder(image_size=48, filters=8)
    with pytest.raises(ValueError, match="num_res"):
        StarGAN2Generator(image_size=32, filters=8, num_res=-1)
    with pytest.raises(ValueError, match="num_domains"):
        MappingNetwork(num_domains=0)
