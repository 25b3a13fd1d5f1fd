"""Super mobile ResNet (spec compression §3.2–3.3): masked supernet == sliced sub-network, no retracing."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.errors import ConfigError
from psr.models.mobile_resnet import (
    CHANNEL_CANDIDATES,
    MobileResnetGenerator,
    SuperMobileResnetGenerator,
    channel_candidates,
)
from psr.models.profile import mobile_resnet_profile

FILTERS = 8
NUM_BLOCKS = 3
SIDE = 32
EPS = float(np.finfo(np.float32).eps)
CONV_LAYERS = 3 + 4 * NUM_BLOCKS + 3
# Largest reduction of any conv: final 7×7 over 8 channels (392 terms).
MAX_TERMS = 49 * FILTERS
# Each conv's float32 sum differs between the masked (wide) and sliced (narrow) kernels only by
# summation order: ~eps·sqrt(n) of the unit-scale (instance-normalised) activations; the errors of
# the layers are independent and add in quadrature, tanh does not amplify them. ≈ 1.0e-5 here.
FORWARD_TOLERANCE = math.sqrt(CONV_LAYERS) * EPS * math.sqrt(MAX_TERMS)
# The backward pass runs each layer's sums twice (input and kernel gradients), relative to the
# largest gradient entry of the variable.
GRADIENT_TOLERANCE = 2 * FORWARD_TOLERANCE


def random_configs(count, seed):
    rng = np.random.default_rng(seed)
    candidates = (8, 6, 4, 2)
    return [tuple(int(v) for v in rng.choice(candidates, size=8)) for _ in range(count)]


@pytest.fixture(scope="module")
def supernet():
    keras.utils.set_random_seed(7)
    net = SuperMobileResnetGenerator(filters=FILTERS, num_blocks=NUM_BLOCKS)
    # Trained biases are not zero; make them so here, so that the masks of biases are exercised.
    rng = np.random.default_rng(3)
    for weight in net.trainable_weights:
        if weight.path.endswith("bias"):
            weight.assign(rng.normal(0.0, 0.1, weight.shape).astype("float32"))
    return net


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).uniform(-1.2, 1.2, (2, SIDE, SIDE, 3)).astype("float32")


def test_candidate_lists_of_the_spec():
    assert channel_candidates("channels-64-cycleGAN") == (64, 48, 32, 24, 16)
    assert channel_candidates("channels-64-pix2pix") == (64, 56, 48, 40, 32, 24, 16)
    assert set(CHANNEL_CANDIDATES) == {"channels-64-cycleGAN", "channels-64-pix2pix"}
    with pytest.raises(ConfigError, match="channels-64-cycleGAN"):
        channel_candidates("channels-48")


@pytest.mark.parametrize("config", [(FILTERS,) * 8, (2,) * 8] + random_configs(3, seed=11))
def test_masked_supernet_equals_sliced_subnetwork(supernet, images, config):
    supernet.set_channel_config(config)
    sub = supernet.sliced_subnetwork(config)
    masked_image, masked_features = supernet.translate_and_features(images)
    sliced_image, sliced_features = sub.translate_and_features(images)
    assert np.abs(np.asarray(masked_image) - np.asarray(sliced_image)).max() <= FORWARD_TOLERANCE
    stream = 4 * config[2]
    assert len(masked_features) == len(sliced_features) == 4
    for wide, narrow in zip(masked_features, sliced_features):
        wide, narrow = np.asarray(wide), np.asarray(narrow)
        assert wide.shape[-1] == 4 * FILTERS and narrow.shape == wide.shape[:-1] + (stream,)
        # The residual stream sums up to NUM_BLOCKS + 1 unit-scale IN outputs, each with the forward error,
        # and lacks the ~0.4 attenuation of the output conv's N(0, 0.02) weights (0.02·sqrt(392)): 10×.
        assert np.abs(wide[..., :stream] - narrow).max() <= FORWARD_TOLERANCE * (NUM_BLOCKS + 1) / 0.4
        assert np.all(wide[..., stream:] == 0.0)  # inactive channels are exactly zero


def test_sliced_weights_are_leading_slices(supernet):
    config = (6, 4, 2, 8, 4, 2, 6, 4)
    sub = supernet.sliced_subnetwork(config)
    by_path = {w.path.split("/", 1)[1]: np.asarray(w) for w in supernet.trainable_weights}
    kernel = np.asarray(sub.get_layer("up1_conv").kernel)
    # Transposed conv kernel (kh, kw, out, in): 2·c6 = 12 outputs from R = 8 inputs.
    assert kernel.shape == (3, 3, 12, 8)
    np.testing.assert_array_equal(kernel, by_path["up1_conv/kernel"][:, :, :12, :8])
    depthwise = np.asarray(sub.get_layer("block0").depthwise2.kernel)
    assert depthwise.shape == (3, 3, 32, 1)  # h = 4·c3 = 32
    np.testing.assert_array_equal(depthwise, by_path["block0/block0_dw2/kernel"][:, :, :32, :])
    np.testing.assert_array_equal(np.asarray(sub.get_layer("down1_conv").bias), by_path["down1_conv/bias"][:8])


def test_gradients_equal_sliced_and_vanish_outside(supernet, images):
    config = (4, 6, 2, 8, 4, 2, 6, 4)
    supernet.set_channel_config(config)
    sub = supernet.sliced_subnetwork(config)
    weights = np.random.default_rng(9).normal(size=(2, SIDE, SIDE, 3)).astype("float32")
    with tf.GradientTape(persistent=True) as tape:
        masked_loss = tf.reduce_sum(supernet(images) * weights)
        sliced_loss = tf.reduce_sum(sub(images) * weights)
    masked = tape.gradient(masked_loss, supernet.trainable_weights)
    sliced = tape.gradient(sliced_loss, sub.trainable_weights)
    for variable, wide, narrow in zip(supernet.trainable_weights, masked, sliced):
        wide, narrow = np.asarray(wide), np.asarray(narrow)
        leading = tuple(slice(0, n) for n in narrow.shape)
        outside = wide.copy()
        outside[leading] = 0.0
        assert np.all(outside == 0.0), variable.path  # unused weights get exactly zero gradient
        if variable.path.endswith("bias") and "final_conv" not in variable.path:
            continue  # a bias followed by IN has zero gradient analytically; both sides hold rounding noise
        scale = np.abs(narrow).max()
        assert np.abs(wide[leading] - narrow).max() <= GRADIENT_TOLERANCE * scale, variable.path


def test_one_trace_serves_every_config(supernet, images):
    traces = []

    @tf.function
    def translate(x):
        traces.append(1)  # Python side effect: runs once per trace
        return supernet(x)

    outputs = []
    for config in random_configs(3, seed=21) + [(FILTERS,) * 8]:
        supernet.set_channel_config(config)
        traced = np.asarray(translate(tf.constant(images)))
        eager = np.asarray(supernet.sliced_subnetwork(config)(images))
        assert np.abs(traced - eager).max() <= FORWARD_TOLERANCE
        outputs.append(traced)
    assert len(traces) == 1
    assert np.abs(outputs[0] - outputs[-1]).max() > 1e-3  # the variable really changed the network


def test_config_can_change_inside_a_traced_step(supernet, images):
    @tf.function
    def translate_at(config, x):
        supernet.channel_config.assign(config)
        return supernet(x)

    config = (2, 4, 6, 8, 2, 4, 6, 8)
    got = np.asarray(translate_at(tf.constant(config, tf.int32), tf.constant(images)))
    want = np.asarray(supernet.sliced_subnetwork(config)(images))
    assert np.abs(got - want).max() <= FORWARD_TOLERANCE


def test_input_is_clamped(supernet, images):
    supernet.set_channel_config((FILTERS,) * 8)
    np.testing.assert_array_equal(np.asarray(supernet(images)), np.asarray(supernet(np.clip(images, -1, 1))))


def test_param_count_matches_the_profile():
    # Independent oracle for psr.models.profile: Keras' own count of the built fixed network.
    for config in [(16, 16, 32, 16, 16, 64, 16, 24), (2, 4, 6, 8, 2, 4, 6, 8)]:
        model = MobileResnetGenerator(config, num_blocks=9)
        assert model.count_params() == mobile_resnet_profile(config).params


def test_macs_match_the_built_layers():
    config = (4, 6, 2, 8, 4, 2, 6, 4)
    # The plain layers: the fast kernels run the thin 7×7 convs on their weights without calling them.
    model = MobileResnetGenerator(config, num_blocks=NUM_BLOCKS, fast_kernels=False)
    # Record every conv's real output size in a forward pass of a 32×32 image.
    sides = {}
    for layer in model._conv_layers():
        def recording(inputs, _call=layer.call, _name=layer.name):
            outputs = _call(inputs)
            sides[_name] = outputs.shape[1] * outputs.shape[2]
            return outputs
        layer.call = recording
    assert tuple(model(np.zeros((1, SIDE, SIDE, 3), "float32")).shape) == (1, SIDE, SIDE, 3)
    total = 0
    for layer in model._conv_layers():
        kh, kw, a, b = layer.kernel.shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # (kh, kw, C, 1): one input per output
            total += sides[layer.name] * a * kh * kw
        else:  # conv (kh, kw, in, out), transposed conv (kh, kw, out, in): out · in either way
            total += sides[layer.name] * a * b * kh * kw
    assert len(sides) == CONV_LAYERS
    assert total == mobile_resnet_profile(config, num_blocks=NUM_BLOCKS, image_size=SIDE).macs


def test_config_roundtrip_and_keras_file(tmp_path, supernet, images):
    config = (6, 4, 2, 8, 4, 2, 6, 4)
    sub = supernet.sliced_subnetwork(config)
    path = tmp_path / "sub.keras"
    sub.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MobileResnetGenerator) and loaded.config == config
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(sub(images)))
    rebuilt = SuperMobileResnetGenerator.from_config(supernet.get_config())
    assert (rebuilt.filters, rebuilt.num_blocks) == (FILTERS, NUM_BLOCKS)
    assert len(rebuilt.weights) == len(supernet.weights)


def test_bad_configs_are_refused(supernet):
    with pytest.raises(ConfigError, match="wider than the supernet"):
        supernet.set_channel_config((16,) * 8)
    with pytest.raises(ConfigError, match="8 positive integers"):
        supernet.sliced_subnetwork((8, 8))
    with pytest.raises(ValueError, match="multiple of 3"):
        SuperMobileResnetGenerator(filters=4, num_blocks=4)


def test_sampler_draws_uniform_configs_inside_a_traced_step(supernet, images):
    from psr.models.mobile_resnet import ChannelConfigSampler

    sampler = ChannelConfigSampler((8, 6, 4, 2), seed=3)
    assert (sampler.largest, sampler.smallest) == ((8,) * 8, (2,) * 8)
    traces = []

    @tf.function
    def step(x):
        traces.append(1)
        config = sampler()
        supernet.channel_config.assign(config)
        return config, supernet(x)

    config, image = step(tf.constant(images))
    config = tuple(int(v) for v in np.asarray(config))
    want = np.asarray(supernet.sliced_subnetwork(config)(images))
    assert np.abs(np.asarray(image) - want).max() <= FORWARD_TOLERANCE
    draw = tf.function(sampler.__call__)  # graph calls: fast, and each draws anew
    draws = np.array([np.asarray(draw()) for _ in range(500)])
    assert len(traces) == 1 and set(np.unique(draws)) <= {8, 6, 4, 2}
    n = draws.size
    for width in (8, 6, 4, 2):
        assert abs(np.mean(draws == width) - 0.25) <= 5 * np.sqrt(0.25 * 0.75 / n)  # 5 binomial std
    # Lists of different lengths per entry: each entry only takes its own values.
    mixed = ChannelConfigSampler([[8], [6, 8], [6, 8], [8], [8], [8], [8], [8]], seed=1)
    draw_mixed = tf.function(mixed.__call__)
    values = np.array([np.asarray(draw_mixed()) for _ in range(50)])
    assert set(values[:, 0]) == {8} and set(values[:, 1]) == {6, 8}
    with pytest.raises(ConfigError, match="8 non-empty lists"):
        ChannelConfigSampler([[8], [6]])
