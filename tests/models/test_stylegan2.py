"""Tests of the SinCUT StyleGAN2 networks against NumPy re-statements of upstream's blocks.

The oracles below are written from upstream CUT `models/stylegan_networks.py`
(rosinality's StyleGAN2 blocks): `upfirdn2d` blur, `EqualConv2d`,
`ModulatedConv2d` (upsample, style all ones), `ConvLayer`, `ResBlock`, the
encoder/decoder and the discriminator, in NHWC with float64 arithmetic.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.models.stylegan2 import (
    SINCUT_NCE_LAYERS,
    Blur,
    ConvLayer,
    EqualConv2D,
    EqualLinear,
    FusedLeakyReLU,
    ResBlock,
    ScaledLeakyReLU,
    StyledConvUpsample,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    discriminator_channels,
    generator_channels,
)

# === NumPy oracles ===


def np_conv2d(x, kernel, stride=1, pad=0):
    """Cross-correlation (PyTorch conv2d), zero padding. x [B,H,W,Ci], kernel [kh,kw,Ci,Co]."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for a in range(kh):
        for b in range(kw):
            window = x[:, a : a + stride * (out_h - 1) + 1 : stride, b : b + stride * (out_w - 1) + 1 : stride]
            out += window @ np.asarray(kernel[a, b], np.float64)
    return out


def np_blur(x, pad0, pad1, gain=1.0, taps=(1, 3, 3, 1)):
    """upfirdn2d(up=1, down=1, pad=(pad0, pad1)): zero pad, then true convolution per channel."""
    taps = np.asarray(taps, np.float64)
    kernel = np.outer(taps, taps)
    kernel = kernel / kernel.sum() * gain
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad0, pad1), (pad0, pad1), (0, 0)))
    k = len(taps)
    out_h, out_w = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    for y in range(out_h):
        for z in range(out_w):
            patch = x[:, y : y + k, z : z + k, :]
            # Convolution: the kernel is flipped relative to the patch.
            out[:, y, z, :] = np.einsum("bijc,ij->bc", patch, kernel[::-1, ::-1])
    return out


def np_conv_transpose_stride2(x, kernel):
    """PyTorch conv_transpose2d(stride 2, padding 0). kernel [kh, kw, out, in] (torch [in, out, kh, kw])."""
    batch, height, width, _ = x.shape
    kh, kw, out_channels, _ = kernel.shape
    out = np.zeros((batch, 2 * (height - 1) + kh, 2 * (width - 1) + kw, out_channels))
    for i in range(height):
        for j in range(width):
            # Every input pixel scatters the whole kernel at (2i, 2j).
            out[:, 2 * i : 2 * i + kh, 2 * j : 2 * j + kw, :] += np.einsum("bc,hwoc->bhwo", x[:, i, j, :], kernel)
    return out


def np_fused_lrelu(x, bias):
    h = x + bias
    return np.where(h >= 0, h, 0.2 * h) * math.sqrt(2.0)


def weight(layer, name):
    for variable in layer.weights:
        if variable.path.split("/")[-1] == name:
            return np.asarray(variable, np.float64)
    raise KeyError(name)


def np_conv_layer(layer: ConvLayer, x):
    kernel = weight(layer.conv, "kernel")
    k = kernel.shape[0]
    scale = 1.0 / math.sqrt(kernel.shape[2] * k * k)
    if layer.downsample:
        p = 2 + (k - 1)
        x = np_blur(x, (p + 1) // 2, p // 2)
        out = np_conv2d(x, kernel * scale, stride=2)
    else:
        out = np_conv2d(x, kernel * scale, pad=k // 2)
    if layer.conv.use_bias:
        out = out + weight(layer.conv, "bias")
    if layer.activate and layer.bias:
        out = np_fused_lrelu(out, weight(layer.activation, "bias"))
    elif layer.activate:
        out = np_fused_lrelu(out, 0.0)
    return out


def np_res_block(block: ResBlock, x):
    out = np_conv_layer(block.conv2, np_conv_layer(block.conv1, x))
    skip = x if block.skip is None else np_conv_layer(block.skip, x)
    return (out + skip) / math.sqrt(2.0)


def np_styled_conv(layer: StyledConvUpsample, x):
    """Upstream ModulatedConv2d(upsample=True, style=None) + blur + (zero-strength) noise + FusedLReLU."""
    kernel = weight(layer, "kernel")  # [k, k, out, in]
    k, _, _, in_channels = kernel.shape
    w = kernel / math.sqrt(in_channels * k * k)  # style = 1
    demod = 1.0 / np.sqrt((w**2).sum(axis=(0, 1, 3)) + 1e-8)  # per output channel
    w = w * demod[None, None, :, None]
    out = np_conv_transpose_stride2(x, w)
    p = 2 - (k - 1)
    out = np_blur(out, (p + 1) // 2 + 1, p // 2 + 1, gain=4.0)
    return np_fused_lrelu(out, weight(layer.activation, "bias"))


def np_generator(model: StyleGAN2Generator, x):
    h = np.asarray(x, np.float64)
    for layer in model.encoder_layers[1:]:
        h = np_conv_layer(layer, h) if isinstance(layer, ConvLayer) else np_res_block(layer, h)
    for layer in model.decoder_layers:
        if isinstance(layer, ResBlock):
            h = np_res_block(layer, h)
        elif isinstance(layer, StyledConvUpsample):
            h = np_styled_conv(layer, h)
        else:
            h = np_conv_layer(layer, h)
    return h


def np_discriminator(model: StyleGAN2Discriminator, x):
    h = np.asarray(x, np.float64)
    for layer in model.conv_layers:
        h = np_conv_layer(layer, h) if isinstance(layer, ConvLayer) else np_res_block(layer, h)
    h = np_conv_layer(model.final_conv, h)
    # PyTorch flattens NCHW: channel-major.
    flat = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)
    w1 = weight(model.final_linear, "kernel")
    h = np_fused_lrelu(flat @ (w1 / math.sqrt(w1.shape[0])), weight(model.final_activation, "bias"))
    w2 = weight(model.final_score, "kernel")
    return h @ (w2 / math.sqrt(w2.shape[0])) + weight(model.final_score, "bias")


def randomise_biases(model, seed=1, scale=0.1):
    """Biases (and noise strengths) start at zero; give them values so the oracles check them."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.path.endswith("bias"):
            variable.assign(rng.normal(scale=scale, size=variable.shape).astype(variable.dtype))


def images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape).astype("float32")


# === Upstream parameter counts (derived from stylegan_networks.py by hand) ===


def conv_layer_params(cin, cout, k, activate=True, bias=True):
    # EqualConv2d weight, + bias in the conv (bias and not activate) or in FusedLeakyReLU.
    return cin * cout * k * k + (cout if bias else 0)


def res_block_params(cin, cout, downsample):
    skip = cin * cout if (cin != cout or downsample) else 0
    return conv_layer_params(cin, cin, 3) + conv_layer_params(cin, cout, 3) + skip


def upstream_generator_params(ngf=10, n_blocks=6):
    c64, c32 = round(256 * ngf / 32), min(512, round(512 * ngf / 32))
    encoder = conv_layer_params(3, c64, 1) + res_block_params(c64, c32, True)
    encoder += (n_blocks // 2) * res_block_params(c32, c32, False)
    decoder = (n_blocks // 2) * res_block_params(c32, c32, False)
    decoder += c64 * c32 * 9 + 1 + c64  # StyledConv: weight, noise weight, FusedLeakyReLU bias
    decoder += conv_layer_params(c64, 3, 1)
    return encoder + decoder


def upstream_discriminator_params(ndf=8):
    m = ndf / 64
    ch = {64: int(256 * m), 32: min(384, int(512 * m)), 16: min(384, int(1024 * m)),
          8: min(384, int(2048 * m)), 4: min(384, int(4096 * m))}
    total = conv_layer_params(3, ch[64], 1)
    for res in (64, 32, 16, 8):
        total += res_block_params(ch[res], ch[res // 2], True)
    total += conv_layer_params(ch[4], ch[4], 3)
    total += ch[4] * 16 * ch[4] + ch[4]  # EqualLinear(6144 -> 384) with fused_lrelu bias
    total += ch[4] + 1  # EqualLinear(384 -> 1)
    return total


class TestChannelsAndShapes:
    def test_channel_tables_follow_spec(self):
        # Spec §4.6: ngf 10 -> 80 at 64x64, 160 at 32x32; ndf 8 -> 32, 64, 128, 256, 384.
        assert generator_channels(10)[64] == 80
        assert generator_channels(10)[32] == 160
        table = discriminator_channels(8)
        assert [table[r] for r in (64, 32, 16, 8, 4)] == [32, 64, 128, 256, 384]

    def test_generator_keeps_64_crop_size(self):
        generator = StyleGAN2Generator()
        out = generator(images((2, 64, 64, 3)))
        assert tuple(out.shape) == (2, 64, 64, 3)

    def test_generator_is_fully_convolutional(self):
        generator = StyleGAN2Generator(filters=2)
        assert tuple(generator(images((1, 300, 250, 3))).shape) == (1, 300, 250, 3)
        traced = tf.function(generator, input_signature=[tf.TensorSpec([None, None, None, 3])])
        assert tuple(traced(images((2, 20, 36, 3))).shape) == (2, 20, 36, 3)

    def test_generator_runs_on_full_monet_resolution(self):
        # Upstream's test image: 1200x966 rounded to a multiple of 4 -> 1200x968.
        generator = StyleGAN2Generator(filters=1)
        out = generator(np.zeros((1, 968, 1200, 3), "float32"))
        assert tuple(out.shape) == (1, 968, 1200, 3)
        assert np.all(np.isfinite(out))

    def test_generator_rejects_sizes_it_cannot_keep(self):
        generator = StyleGAN2Generator(filters=2, num_downsampling=2)
        with pytest.raises(ValueError, match="divisible by 4"):
            generator(images((1, 30, 32, 3)))

    def test_output_is_not_squashed(self):
        # No tanh: with large biases on the last activation, outputs leave [-1, 1].
        generator = StyleGAN2Generator(filters=2)
        generator.decoder_layers[-1].activation.bias.assign(np.full((3,), 5.0, "float32"))
        assert float(np.max(generator(images((1, 16, 16, 3))))) > 1.0

    def test_encode_shapes_and_channels(self):
        generator = StyleGAN2Generator()
        x = images((1, 64, 64, 3))
        features = generator.encode(x, SINCUT_NCE_LAYERS)
        assert [tuple(f.shape) for f in features] == [(1, 64, 64, 3), (1, 32, 32, 160), (1, 32, 32, 160)]
        assert generator.feature_channels(SINCUT_NCE_LAYERS) == [3, 160, 160]
        assert generator.feature_channels([1, 5]) == [80, 160]
        np.testing.assert_array_equal(np.asarray(features[0]), x)

    def test_encode_is_the_first_half_of_call(self):
        generator = StyleGAN2Generator(filters=2)
        x = images((1, 16, 16, 3))
        (bottleneck,) = generator.encode(x, [len(generator.encoder_layers) - 1])
        decoded = bottleneck
        for layer in generator.decoder_layers:
            decoded = layer(decoded)
        np.testing.assert_allclose(np.asarray(decoded), np.asarray(generator(x)), rtol=1e-6, atol=1e-6)

    def test_encode_rejects_bad_layer_ids(self):
        generator = StyleGAN2Generator(filters=2)
        with pytest.raises(ValueError, match="layer_ids"):
            generator.encode(images((1, 8, 8, 3)), [0, 6])
        with pytest.raises(ValueError, match="layer_ids"):
            generator.feature_channels([])

    def test_discriminator_gives_one_score_per_image(self):
        discriminator = StyleGAN2Discriminator()
        assert tuple(discriminator(images((3, 64, 64, 3))).shape) == (3, 1)

    def test_discriminator_rejects_other_sizes(self):
        discriminator = StyleGAN2Discriminator(filters=1, crop_size=16)
        with pytest.raises(ValueError, match="16x16x3"):
            discriminator(images((1, 32, 32, 3)))
        with pytest.raises(ValueError, match="power of two"):
            StyleGAN2Discriminator(crop_size=48)

    def test_parameter_counts_match_upstream_architecture(self):
        # Hand totals: G 3,068,404 (ngf 10, 6 blocks); D 5,885,473 (ndf 8, 64x64).
        assert upstream_generator_params() == 3_068_404
        assert upstream_discriminator_params() == 5_885_473
        assert StyleGAN2Generator().count_params() == upstream_generator_params()
        assert StyleGAN2Discriminator().count_params() == upstream_discriminator_params()


class TestBuildingBlocks:
    def test_blur_matches_numpy_with_zero_padding(self):
        x = images((2, 9, 7, 3), seed=3)
        for padding, gain in (((2, 2), 1.0), ((1, 1), 4.0), ((2, 1), 1.0)):
            expected = np_blur(x, *padding, gain=gain)
            out = np.asarray(Blur(padding=padding, gain=gain)(x))
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

    def test_blur_zero_padding_darkens_borders(self):
        # Hand numbers: kernel [1,3,3,1]^2 / 64, a ones image, pad (2, 2): the corner
        # output sees only the kernel's bottom-right 2x2 = (3+1)^2/64 = 0.25.
        out = np.asarray(Blur(padding=(2, 2))(np.ones((1, 6, 6, 1), "float32")))[0, :, :, 0]
        assert out.shape == (7, 7)
        assert out[0, 0] == pytest.approx(16 / 64)
        assert out[3, 3] == pytest.approx(1.0)
        assert out[0, 3] == pytest.approx(4 / 8)

    def test_equal_conv_uses_runtime_scale(self):
        layer = EqualConv2D(5, 3, strides=2, padding=1)
        x = images((2, 8, 8, 4), seed=4)
        layer.build(x.shape)
        layer.bias.assign(np.arange(5, dtype="float32") / 10)
        kernel = np.asarray(layer.kernel, np.float64)
        expected = np_conv2d(x, kernel / math.sqrt(4 * 9), stride=2, pad=1) + np.arange(5) / 10
        np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)
        assert layer.scale == pytest.approx(1 / 6)

    def test_equalised_weights_are_standard_normal_and_biases_zero(self):
        generator = StyleGAN2Generator()
        kernels = np.concatenate(
            [np.ravel(w) for w in generator.weights if w.path.endswith("kernel")]
        )
        assert abs(kernels.mean()) < 0.01
        assert kernels.std() == pytest.approx(1.0, abs=0.01)
        others = [np.asarray(w) for w in generator.weights if not w.path.endswith("kernel")]
        assert all(np.all(w == 0) for w in others)  # biases and the noise strength

    def test_equal_linear_uses_runtime_scale(self):
        layer = EqualLinear(3)
        x = images((4, 16), seed=5)
        layer.build(x.shape)
        layer.bias.assign(np.array([0.1, -0.2, 0.3], "float32"))
        expected = x @ (np.asarray(layer.kernel) / 4.0) + np.array([0.1, -0.2, 0.3])
        np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-6)
        assert not EqualLinear(3, use_bias=False).get_config()["use_bias"]

    def test_fused_and_scaled_leaky_relu(self):
        x = np.array([[-2.0, -0.5, 0.0, 1.5]], "float32")
        layer = FusedLeakyReLU(4)
        layer.build(x.shape)
        layer.bias.assign(np.array([1.0, 0.0, -1.0, 0.5], "float32"))
        # Hand numbers: h = [-1, -0.5, -1, 2] -> [-0.2, -0.1, -0.2, 2] * sqrt(2).
        expected = np.array([[-0.2, -0.1, -0.2, 2.0]]) * math.sqrt(2)
        np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-6)
        np.testing.assert_allclose(
            np.asarray(ScaledLeakyReLU()(x)), np.array([[-0.4, -0.1, 0.0, 1.5]]) * math.sqrt(2), rtol=1e-6
        )

    def test_conv_layer_variants_match_numpy(self):
        x = images((2, 8, 10, 4), seed=6)
        variants = [
            {"kernel_size": 3},
            {"kernel_size": 1},
            {"kernel_size": 3, "downsample": True},
            {"kernel_size": 1, "downsample": True, "activate": False, "bias": False},
            {"kernel_size": 3, "activate": False, "bias": True},
            {"kernel_size": 3, "activate": True, "bias": False},
        ]
        for kwargs in variants:
            layer = ConvLayer(4, 6, **kwargs)
            layer.build(x.shape)
            randomise_biases(layer)
            out = np.asarray(layer(x))
            np.testing.assert_allclose(out, np_conv_layer(layer, x), rtol=1e-4, atol=1e-5, err_msg=str(kwargs))
            assert out.shape[1:3] == ((4, 5) if kwargs.get("downsample") else (8, 10))
        # Bias placement (upstream): the conv has one only when not activated.
        assert not ConvLayer(4, 6, 3).conv.use_bias
        assert ConvLayer(4, 6, 3, activate=False).conv.use_bias

    def test_res_blocks_match_numpy(self):
        x = images((1, 8, 8, 4), seed=7)
        for block in (ResBlock(4, 6, downsample=True), ResBlock(4, 4, downsample=False), ResBlock(4, 6, False)):
            block.build(x.shape)
            randomise_biases(block)
            np.testing.assert_allclose(np.asarray(block(x)), np_res_block(block, x), rtol=1e-4, atol=1e-5)
        assert ResBlock(4, 4, downsample=False).skip is None
        assert ResBlock(4, 4, downsample=True).skip is not None

    def test_styled_conv_demodulation_matches_numpy(self):
        x = images((2, 5, 6, 4), seed=8)
        layer = StyledConvUpsample(4, 3, seed=0)
        layer.build(x.shape)
        randomise_biases(layer)
        out = np.asarray(layer(x))
        assert out.shape == (2, 10, 12, 3)
        np.testing.assert_allclose(out, np_styled_conv(layer, x), rtol=1e-4, atol=1e-5)
        # Demodulated kernels have unit norm per output channel.
        norms = np.sqrt((np.asarray(layer.modulated_kernel(), np.float64) ** 2).sum(axis=(0, 1, 3)))
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)

    def test_noise_is_fresh_per_call_and_shared_over_channels(self):
        layer = StyledConvUpsample(4, 3, seed=0)
        x = images((2, 5, 6, 4), seed=9)
        layer.build(x.shape)
        np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(layer(x)))  # strength 0 at init
        layer.noise_strength.assign(0.5)
        # A large bias keeps every activation on the linear branch: out = sqrt(2) (h + 0.5 n + b).
        layer.activation.bias.assign(np.full((3,), 100.0, "float32"))
        first, second = np.asarray(layer(x), np.float64), np.asarray(layer(x), np.float64)
        noise_difference = (first - second) / (math.sqrt(2) * 0.5)  # n1 - n2 ~ N(0, 2)
        np.testing.assert_allclose(noise_difference[..., 1:], noise_difference[..., :1] * np.ones((1, 1, 1, 2)),
                                   atol=1e-3)
        assert noise_difference[..., 0].std() == pytest.approx(math.sqrt(2), rel=0.25)


class TestNetworksAgainstNumpy:
    def test_generator_matches_numpy(self):
        generator = StyleGAN2Generator(filters=1, num_blocks=2, seed=0)
        randomise_biases(generator)
        x = images((2, 8, 12, 3), seed=10)
        np.testing.assert_allclose(np.asarray(generator(x)), np_generator(generator, x), rtol=1e-4, atol=1e-4)

    def test_generator_is_deterministic_while_noise_strength_is_zero(self):
        generator = StyleGAN2Generator(filters=2)
        x = images((1, 16, 16, 3), seed=11)
        np.testing.assert_array_equal(np.asarray(generator(x)), np.asarray(generator(x)))
        generator.decoder_layers[-2].noise_strength.assign(1.0)
        assert not np.allclose(np.asarray(generator(x)), np.asarray(generator(x)))

    def test_discriminator_matches_numpy(self):
        discriminator = StyleGAN2Discriminator(filters=1, crop_size=8)
        randomise_biases(discriminator)
        x = images((3, 8, 8, 3), seed=12)
        np.testing.assert_allclose(
            np.asarray(discriminator(x)), np_discriminator(discriminator, x), rtol=1e-4, atol=1e-4
        )


class TestConfig:
    @pytest.mark.parametrize(
        "cls, kwargs, shape",
        [
            (EqualConv2D, {"filters": 3, "kernel_size": 3, "strides": 2, "padding": 1, "use_bias": False},
             (1, 8, 8, 2)),
            (EqualLinear, {"units": 3, "use_bias": False}, (2, 5)),
            (FusedLeakyReLU, {"channels": 2, "negative_slope": 0.1, "scale": 2.0}, (1, 4, 4, 2)),
            (ScaledLeakyReLU, {"negative_slope": 0.3}, (1, 4, 4, 2)),
            (Blur, {"padding": (2, 1), "gain": 2.0, "kernel": (1, 2, 1)}, (1, 6, 6, 2)),
            (ConvLayer, {"in_channels": 2, "out_channels": 3, "kernel_size": 1, "downsample": True,
                         "activate": True, "bias": False}, (1, 8, 8, 2)),
            (ResBlock, {"in_channels": 2, "out_channels": 3, "downsample": False}, (1, 8, 8, 2)),
            (StyledConvUpsample, {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "demodulate": False,
                                  "inject_noise": False, "seed": 5}, (1, 4, 4, 2)),
        ],
    )
    def test_layer_config_roundtrip_keeps_outputs(self, cls, kwargs, shape):
        layer = cls(**kwargs)
        x = images(shape, seed=13)
        layer.build(shape)
        randomise_biases(layer)
        config = layer.get_config()
        for key, value in kwargs.items():
            assert config[key] == value, key
        clone = cls.from_config(config)
        clone.build(shape)
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)), rtol=1e-6, atol=1e-6)
        assert keras.saving.get_registered_object(f"psr>{cls.__name__}") is cls

    def test_model_configs_roundtrip(self):
        generator = StyleGAN2Generator(input_channels=1, output_channels=2, filters=2, num_downsampling=2,
                                       num_blocks=2, crop_size=32, inject_noise=False, seed=3, name="g")
        clone = StyleGAN2Generator.from_config(generator.get_config())
        assert clone.get_config() == generator.get_config()
        clone.set_weights(generator.get_weights())
        x = images((1, 16, 16, 1), seed=14)
        np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(generator(x)), rtol=1e-6, atol=1e-6)

        discriminator = StyleGAN2Discriminator(input_channels=2, filters=2, crop_size=16, name="d")
        clone = StyleGAN2Discriminator.from_config(discriminator.get_config())
        assert clone.get_config() == discriminator.get_config()
        clone.set_weights(discriminator.get_weights())
        x = images((2, 16, 16, 2), seed=15)
        np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(discriminator(x)), rtol=1e-6, atol=1e-6)

    def test_argument_checks_quote_the_value(self):
        with pytest.raises(ValueError, match="Received: filters=0"):
            StyleGAN2Generator(filters=0)
        with pytest.raises(ValueError, match="crop_size=16, num_downsampling=3"):
            StyleGAN2Generator(crop_size=16, num_downsampling=3)
        with pytest.raises(ValueError, match="kernel_size=7"):
            StyledConvUpsample(2, 2, kernel_size=7)
        with pytest.raises(ValueError, match="padding"):
            Blur(padding=(1,))

    def test_float64_policy_reaches_every_sublayer(self):
        discriminator = StyleGAN2Discriminator(filters=1, crop_size=8, dtype="float64")
        assert {w.dtype for w in discriminator.weights} == {"float64"}
        assert discriminator(np.zeros((1, 8, 8, 3))).dtype == tf.float64
