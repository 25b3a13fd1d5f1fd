"""StyleGAN2-style networks of SinCUT (single-image translation), op for op.

Upstream CUT builds its single-image model (`--model sincut`) from
rosinality-style StyleGAN2 blocks (`models/stylegan_networks.py`, spec §4.6):
equalised learning rate instead of an init scheme, biases inside a fused
leaky ReLU, [1, 3, 3, 1] blurs around every resampling, and no normalisation
layer anywhere. That last point matters here: the discriminator gets an R1
penalty, whose second-order gradients TensorFlow gets wrong through
`tf.nn.moments`-based norms (keras_tf_notes §4), so none may ever be added.

Layout (NHWC). A PyTorch `weight[out, in, kh, kw]` of an equalised conv is
`kernel[kh, kw, in, out]` here; the transposed-conv weight of the styled
upsampling conv, PyTorch `[1, out, in, kh, kw]` (used transposed as
`[in, out, kh, kw]`), is `kernel[kh, kw, out, in]`. The discriminator flattens
its last 4x4 map in PyTorch's channel-major order, so its first linear weight
is the PyTorch matrix transposed.

Generator (`StyleGAN2Generator`, ngf 10, 64x64 crops, one downsampling):

| encoder index | op                          | output       |
|---------------|-----------------------------|--------------|
| 0             | identity                    | 64x64x3      |
| 1             | ConvLayer 1x1, 3 -> 80      | 64x64x80     |
| 2             | ResBlock 80 -> 160, down    | 32x32x160    |
| 3, 4, 5       | ResBlock 160 -> 160         | 32x32x160    |

then the decoder: ResBlock(160) x3, StyledConvUpsample 160 -> 80 (2x), and a
1x1 ConvLayer 80 -> 3 with a fused leaky ReLU. No tanh: the output is
unbounded, as upstream (images are clipped only when saved).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from psr.models.encoder import SequentialFeatures
from psr.models.layers import _check_non_negative_int, _check_positive_int

# NCE layers of SinCUT (`sincut_model.py`: `nce_layers="0,2,4"`).
SINCUT_NCE_LAYERS = (0, 2, 4)

# The only blur kernel upstream uses (`blur_kernel=[1, 3, 3, 1]`).
BLUR_KERNEL = (1, 3, 3, 1)

# Resolutions of the upstream channel tables.
_RESOLUTIONS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)

_SQRT2 = math.sqrt(2.0)
_DEMODULATION_EPSILON = 1e-8


# === Helpers ===


def _spatial(dim, function):
    """Applies `function` to a static spatial size, keeping unknown sizes unknown."""
    return None if dim is None else function(dim)


def blur_kernel_2d(taps: Sequence[float] = BLUR_KERNEL, gain: float = 1.0) -> np.ndarray:
    """Upstream `make_kernel`: outer product of `taps`, normalised to sum 1, times `gain`."""
    taps = np.asarray(taps, dtype=np.float64)
    kernel = np.outer(taps, taps)
    return kernel / kernel.sum() * gain


def table_resolution(crop_size: int) -> int:
    """Resolution that selects a channel-table entry: 2^round(log2(crop_size)), as upstream.

    Upstream uses `min(load_size, crop_size)`; SinCUT's load size (1024) is
    always the larger one.
    """
    return 2 ** int(np.rint(np.log2(crop_size)))


def generator_channels(filters: int) -> dict[int, int]:
    """Channels per resolution of the StyleGAN2 encoder/decoder (`ngf / 32` multiplier, cap 512)."""
    multiplier = filters / 32
    table = {}
    for resolution in _RESOLUTIONS:
        channels = round(16384 / resolution * multiplier)  # Python round: half to even, as upstream
        table[resolution] = min(512, channels) if resolution <= 32 else channels
    return table


def discriminator_channels(filters: int) -> dict[int, int]:
    """Channels per resolution of the StyleGAN2 discriminator (`ndf / 64` multiplier, cap 384)."""
    multiplier = filters / 64
    table = {}
    for resolution in _RESOLUTIONS:
        channels = int(16384 / resolution * multiplier)
        table[resolution] = min(384, channels) if resolution <= 32 else channels
    return table


def _build_in_order(layers, input_shape):
    """Builds layers one after another from the static shape flowing through them."""
    shape = tuple(input_shape)
    for layer in layers:
        if not layer.built:
            layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def _standard_normal() -> keras.initializers.Initializer:
    # Equalised learning rate: weights are N(0, 1) and scaled at run time.
    return keras.initializers.RandomNormal(mean=0.0, stddev=1.0)


# === Layers ===


@keras.saving.register_keras_serializable(package="psr")
class EqualConv2D(keras.layers.Layer):
    """Convolution with equalised learning rate (upstream `EqualConv2d`).

    Formula:
    ```
    y = conv(zero_pad(x, padding), kernel / sqrt(fan_in), strides) + bias
    fan_in = in_channels * kernel_size^2,  kernel ~ N(0, 1),  bias = 0 at init
    ```

    Args:
        filters: output channels.
        kernel_size: side of the square kernel.
        strides: stride.
        padding: zero pixels added on each of the four sides first.
        use_bias: add a learnable per-channel bias.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, padding: int = 0,
                 use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("filters", filters)
        _check_positive_int("kernel_size", kernel_size)
        _check_positive_int("strides", strides)
        _check_non_negative_int("padding", padding)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = int(padding)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"EqualConv2D {self.name} needs a known channel count. Received: input_shape={input_shape}"
            )
        self.scale = 1.0 / math.sqrt(in_channels * self.kernel_size**2)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer=_standard_normal(),
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None
        )

    def call(self, inputs):
        p = self.padding
        if p:
            inputs = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]])
        outputs = ops.conv(inputs, self.kernel * self.scale, strides=self.strides, padding="valid")
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        def size(d):
            return (d + 2 * self.padding - self.kernel_size) // self.strides + 1

        return (batch, _spatial(height, size), _spatial(width, size), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "use_bias": self.use_bias,
        }


@keras.saving.register_keras_serializable(package="psr")
class EqualLinear(keras.layers.Layer):
    """Dense layer with equalised learning rate (upstream `EqualLinear`, lr_mul 1).

    Formula:
    ```
    y = x @ (kernel / sqrt(in_features)) + bias,  kernel ~ N(0, 1),  bias = 0 at init
    ```

    Args:
        units: output features.
        use_bias: add a learnable bias.
    """

    def __init__(self, units: int, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("units", units)
        self.units = int(units)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        in_features = input_shape[-1]
        if in_features is None:
            raise ValueError(f"EqualLinear {self.name} needs a known input size. Received: input_shape={input_shape}")
        self.scale = 1.0 / math.sqrt(in_features)
        self.kernel = self.add_weight(name="kernel", shape=(in_features, self.units), initializer=_standard_normal())
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel * self.scale)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="psr")
class FusedLeakyReLU(keras.layers.Layer):
    """Bias + leaky ReLU + gain (upstream `FusedLeakyReLU`): the bias of every activated layer.

    Formula:
    ```
    y = leaky_relu(x + bias, negative_slope) * scale,  bias per channel, 0 at init
    ```

    Args:
        channels: channels (last axis) of the input.
        negative_slope: slope for negative values.
        scale: output gain (sqrt(2) keeps unit variance).
    """

    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = _SQRT2, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("channels", channels)
        self.channels = int(channels)
        self.negative_slope = float(negative_slope)
        self.scale = float(scale)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.channels:
            raise ValueError(
                f"FusedLeakyReLU {self.name} expects {self.channels} channels. Received: input_shape={input_shape}"
            )
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros")

    def call(self, inputs):
        return ops.leaky_relu(inputs + self.bias, negative_slope=self.negative_slope) * self.scale

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "negative_slope": self.negative_slope,
            "scale": self.scale,
        }


@keras.saving.register_keras_serializable(package="psr")
class ScaledLeakyReLU(keras.layers.Layer):
    """Leaky ReLU times sqrt(2) without a bias (upstream `ScaledLeakyReLU`; activated bias-free ConvLayers).

    Args:
        negative_slope: slope for negative values.
    """

    def __init__(self, negative_slope: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = float(negative_slope)

    def call(self, inputs):
        return ops.leaky_relu(inputs, negative_slope=self.negative_slope) * _SQRT2

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


@keras.saving.register_keras_serializable(package="psr")
class Blur(keras.layers.Layer):
    """Fixed FIR blur with zero padding (upstream `Blur`, i.e. `upfirdn2d` without resampling).

    Formula:
    ```
    y = depthwise_convolution(zero_pad(x, (pad_before, pad_after)), K)
    K = gain * outer(k, k) / sum(outer(k, k)),  k = kernel
    ```
    A true convolution (the kernel is flipped, as `upfirdn2d` does; a no-op
    for the symmetric [1, 3, 3, 1]). Output side = side + pad_before +
    pad_after - len(kernel) + 1. The kernel is a constant, not a weight.

    Args:
        padding: (pad_before, pad_after) zeros added to height and width.
        gain: multiplier of the normalised kernel (4 = factor^2 after a 2x
            upsampling, which spreads every input pixel over 4 outputs).
        kernel: 1-D taps whose outer product is the 2-D kernel.
    """

    def __init__(self, padding: Sequence[int] = (1, 1), gain: float = 1.0,
                 kernel: Sequence[float] = BLUR_KERNEL, **kwargs):
        super().__init__(**kwargs)
        padding = tuple(padding)
        if len(padding) != 2:
            raise ValueError(f"Argument `padding` must be (pad_before, pad_after). Received: padding={padding!r}")
        for value in padding:
            _check_non_negative_int("padding", value)
        if len(kernel) < 1 or float(np.sum(kernel)) == 0.0:
            raise ValueError(f"Argument `kernel` must be non-empty with a non-zero sum. Received: kernel={kernel!r}")
        self.padding = tuple(int(value) for value in padding)
        self.gain = float(gain)
        self.kernel = tuple(float(value) for value in kernel)
        # upfirdn2d convolves (flips); keep that for asymmetric kernels.
        self._kernel_2d = blur_kernel_2d(self.kernel, self.gain)[::-1, ::-1].copy()

    def call(self, inputs):
        before, after = self.padding
        channels = inputs.shape[-1]
        padded = ops.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]])
        kernel = np.tile(self._kernel_2d[:, :, None, None], (1, 1, channels, 1))
        return ops.depthwise_conv(padded, ops.cast(kernel, inputs.dtype), strides=1, padding="valid")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        def size(d):
            return d + sum(self.padding) - len(self.kernel) + 1

        return (batch, _spatial(height, size), _spatial(width, size), channels)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "gain": self.gain, "kernel": self.kernel}


@keras.saving.register_keras_serializable(package="psr")
class ConvLayer(keras.layers.Layer):
    """Upstream `ConvLayer`: [Blur] -> EqualConv2D -> [activation].

    - downsample: Blur with zero padding ((p + 1) // 2, p // 2), p = 2 + (k - 1),
      then a stride-2 conv without padding (H -> H / 2 for even H);
      otherwise a stride-1 conv with zero padding k // 2 (size kept).
    - The conv has a bias only when `bias` and not `activate`; with
      `activate`, the bias lives in a `FusedLeakyReLU` (`bias=True`) or there
      is none and the activation is a `ScaledLeakyReLU` (`bias=False`).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: conv kernel side.
        downsample: halve the resolution (blur + stride 2).
        activate: apply the (fused) leaky ReLU.
        bias: use a learnable bias (see above where it lives).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 activate: bool = True, bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("out_channels", out_channels)
        _check_positive_int("kernel_size", kernel_size)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.downsample = bool(downsample)
        self.activate = bool(activate)
        self.bias = bool(bias)

        sublayer = {"dtype": self.dtype_policy}
        self.sublayers = []
        if self.downsample:
            p = (len(BLUR_KERNEL) - 2) + (self.kernel_size - 1)
            self.blur = Blur(padding=((p + 1) // 2, p // 2), name=f"{self.name}_blur", **sublayer)
            self.sublayers.append(self.blur)
            strides, padding = 2, 0
        else:
            self.blur = None
            strides, padding = 1, self.kernel_size // 2
        self.conv = EqualConv2D(
            self.out_channels,
            self.kernel_size,
            strides=strides,
            padding=padding,
            use_bias=self.bias and not self.activate,
            name=f"{self.name}_conv",
            **sublayer,
        )
        self.sublayers.append(self.conv)
        if not self.activate:
            self.activation = None
        elif self.bias:
            self.activation = FusedLeakyReLU(self.out_channels, name=f"{self.name}_act", **sublayer)
        else:
            self.activation = ScaledLeakyReLU(name=f"{self.name}_act", **sublayer)
        if self.activation is not None:
            self.sublayers.append(self.activation)

    def build(self, input_shape):
        if input_shape[-1] != self.in_channels:
            raise ValueError(
                f"ConvLayer {self.name} expects {self.in_channels} input channels. Received: input_shape={input_shape}"
            )
        _build_in_order(self.sublayers, input_shape)

    def call(self, inputs):
        x = inputs
        for layer in self.sublayers:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.sublayers:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "downsample": self.downsample,
            "activate": self.activate,
            "bias": self.bias,
        }


@keras.saving.register_keras_serializable(package="psr")
class ResBlock(keras.layers.Layer):
    """Upstream `ResBlock` (skip gain 1).

    Formula:
    ```
    y = (ConvLayer(in -> out, 3, downsample)(ConvLayer(in -> in, 3)(x)) + skip(x)) / sqrt(2)
    skip = ConvLayer(in -> out, 1, downsample, activate=False, bias=False)  if in != out or downsample
         = identity                                                           otherwise
    ```

    Args:
        in_channels: input channels.
        out_channels: output channels.
        downsample: halve the resolution (upstream's default is True).
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("out_channels", out_channels)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.downsample = bool(downsample)
        sublayer = {"dtype": self.dtype_policy}
        self.conv1 = ConvLayer(self.in_channels, self.in_channels, 3, name=f"{self.name}_conv1", **sublayer)
        self.conv2 = ConvLayer(
            self.in_channels, self.out_channels, 3, downsample=self.downsample, name=f"{self.name}_conv2", **sublayer
        )
        if self.in_channels != self.out_channels or self.downsample:
            self.skip = ConvLayer(
                self.in_channels,
                self.out_channels,
                1,
                downsample=self.downsample,
                activate=False,
                bias=False,
                name=f"{self.name}_skip",
                **sublayer,
            )
        else:
            self.skip = None

    def build(self, input_shape):
        if input_shape[-1] != self.in_channels:
            raise ValueError(
                f"ResBlock {self.name} expects {self.in_channels} input channels. Received: input_shape={input_shape}"
            )
        _build_in_order([self.conv1, self.conv2], input_shape)
        if self.skip is not None:
            self.skip.build(input_shape)

    def call(self, inputs):
        residual = self.conv2(self.conv1(inputs))
        skip = inputs if self.skip is None else self.skip(inputs)
        return (residual + skip) / _SQRT2

    def compute_output_shape(self, input_shape):
        return self.conv2.compute_output_shape(self.conv1.compute_output_shape(input_shape))

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "downsample": self.downsample,
        }


@keras.saving.register_keras_serializable(package="psr")
class StyledConvUpsample(keras.layers.Layer):
    """2x upsampling `StyledConv` of the SinCUT decoder, without a style input.

    Upstream `StyledConv(upsample=True)` called with `style=None`: the
    modulation is all ones, so the layer is a demodulated transposed conv.

    Formula:
    ```
    w = kernel / sqrt(in_channels * k^2)                       (kernel ~ N(0, 1))
    w[..., o, :] = w[..., o, :] / sqrt(sum_{kh, kw, in} w[kh, kw, o, in]^2 + 1e-8)   (demodulation)
    h = Blur(gain 4, zero pad)(conv_transpose(x, w, stride 2, no padding))     H -> 2H + k - 2 -> 2H
    h = h + noise_strength * n,  n ~ N(0, 1) of shape [B, 2H, 2W, 1], new every call
    y = FusedLeakyReLU(h)
    ```
    `noise_strength` is a learnable scalar that starts at 0, so a new layer is
    deterministic until training moves it.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: transposed-conv kernel side (3 upstream; at most 5).
        demodulate: apply the weight demodulation.
        inject_noise: add the noise term (upstream's "smallstylegan2" turns it off).
        seed: seed of the noise stream (a `keras.random.SeedGenerator`); None
            draws one from Keras' global seed.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, demodulate: bool = True,
                 inject_noise: bool = True, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("out_channels", out_channels)
        _check_positive_int("kernel_size", kernel_size)
        # Upstream's blur padding after the 2x transposed conv; negative for k > 5.
        p = (len(BLUR_KERNEL) - 2) - (kernel_size - 1)
        padding = ((p + 1) // 2 + 1, p // 2 + 1)
        if min(padding) < 0:
            raise ValueError(f"Argument `kernel_size` must be at most 5. Received: kernel_size={kernel_size}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.demodulate = bool(demodulate)
        self.inject_noise = bool(inject_noise)
        self.seed = seed
        self.blur = Blur(padding=padding, gain=4.0, name=f"{self.name}_blur", dtype=self.dtype_policy)
        self.activation = FusedLeakyReLU(self.out_channels, name=f"{self.name}_act", dtype=self.dtype_policy)
        self.seed_generator = keras.random.SeedGenerator(seed) if self.inject_noise else None

    def build(self, input_shape):
        if input_shape[-1] != self.in_channels:
            raise ValueError(
                f"StyledConvUpsample {self.name} expects {self.in_channels} input channels. "
                f"Received: input_shape={input_shape}"
            )
        self.scale = 1.0 / math.sqrt(self.in_channels * self.kernel_size**2)
        # Transposed-conv layout [kh, kw, out, in].
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, self.out_channels, self.in_channels),
            initializer=_standard_normal(),
        )
        self.noise_strength = (
            self.add_weight(name="noise_strength", shape=(), initializer="zeros") if self.inject_noise else None
        )
        upsampled = self._upsampled_shape(input_shape)
        self.blur.build(upsampled)
        self.activation.build(self.blur.compute_output_shape(upsampled))

    def _upsampled_shape(self, input_shape):
        batch, height, width, _ = input_shape
        def size(d):
            return 2 * (d - 1) + self.kernel_size

        return (batch, _spatial(height, size), _spatial(width, size), self.out_channels)

    def modulated_kernel(self):
        """The kernel actually applied: equalised and (optionally) demodulated, `[k, k, out, in]`."""
        weight = self.kernel * self.scale
        if self.demodulate:
            norm = ops.sqrt(ops.sum(ops.square(weight), axis=(0, 1, 3), keepdims=True) + _DEMODULATION_EPSILON)
            weight = weight / norm
        return weight

    def call(self, inputs):
        x = ops.conv_transpose(inputs, self.modulated_kernel(), strides=2, padding="valid")
        x = self.blur(x)
        if self.inject_noise:
            shape = ops.shape(x)
            noise = keras.random.normal(
                (shape[0], shape[1], shape[2], 1), dtype=self.compute_dtype, seed=self.seed_generator
            )
            x = x + self.noise_strength * noise
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        return self.blur.compute_output_shape(self._upsampled_shape(input_shape))

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "demodulate": self.demodulate,
            "inject_noise": self.inject_noise,
            "seed": self.seed,
        }


# === Networks ===


@keras.saving.register_keras_serializable(package="psr")
class StyleGAN2Generator(SequentialFeatures, keras.Model):
    """SinCUT's generator (upstream `StyleGAN2Generator` = `StyleGAN2Encoder` + `StyleGAN2Decoder`).

    Channels come from upstream's table (`ngf / 32` multiplier) at the
    resolution 2^round(log2(crop_size)) and halve in resolution per
    downsampling: ngf 10, crop 64 gives 80 at 64x64 and 160 at 32x32.
    Fully convolutional: any height and width divisible by
    2^num_downsampling keep their size (the full painting at test time).
    The weights are not re-initialised (equalised learning rate), and the
    model is built in the constructor for inputs (None, None, input_channels).

    Args:
        input_channels: channels of the input image.
        output_channels: channels of the generated image.
        filters: upstream `ngf` (10 for SinCUT).
        num_downsampling: stride-2 ResBlocks in the encoder and 2x
            StyledConvs in the decoder (`stylegan2_G_num_downsampling`, 1).
        num_blocks: upstream `n_blocks` (6): num_blocks // 2 ResBlocks at the
            bottleneck of the encoder and as many at the start of the decoder.
        crop_size: training crop side; only selects the channel-table row.
        name: model name.
        inject_noise: noise injection in the upsampling convs (upstream's
            "smallstylegan2" disables it).
        seed: seed of the noise streams; None draws from Keras' global seed.
    """

    default_layer_ids = SINCUT_NCE_LAYERS

    def __init__(
        self,
        input_channels: int = 3,
        output_channels: int = 3,
        filters: int = 10,
        num_downsampling: int = 1,
        num_blocks: int = 6,
        crop_size: int = 64,
        name: str = "generator",
        *,
        inject_noise: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        # === Config ===
        _check_positive_int("input_channels", input_channels)
        _check_positive_int("output_channels", output_channels)
        _check_positive_int("filters", filters)
        _check_non_negative_int("num_downsampling", num_downsampling)
        _check_non_negative_int("num_blocks", num_blocks)
        _check_positive_int("crop_size", crop_size)
        resolution = table_resolution(crop_size)
        if resolution not in _RESOLUTIONS or resolution // 2**num_downsampling not in _RESOLUTIONS:
            raise ValueError(
                "Arguments `crop_size` and `num_downsampling` must give table resolutions from 4 to 1024 "
                f"(2^round(log2(crop_size)) / 2^num_downsampling >= 4). "
                f"Received: crop_size={crop_size}, num_downsampling={num_downsampling}"
            )
        table = generator_channels(filters)
        used = [table[resolution // 2**level] for level in range(num_downsampling + 1)]
        if min(used) < 1:
            raise ValueError(
                f"Argument `filters` is too small: a layer would get 0 channels. Received: filters={filters}"
            )
        self.input_channels = int(input_channels)
        self.output_channels = int(output_channels)
        self.filters = int(filters)
        self.num_downsampling = int(num_downsampling)
        self.num_blocks = int(num_blocks)
        self.crop_size = int(crop_size)
        self.inject_noise = bool(inject_noise)
        self.seed = seed

        # === Layers ===
        sublayer = {"dtype": self.dtype_policy}
        # Encoder: upstream `encoder.convs[i]`; `encode()` returns outputs of these entries.
        self.encoder_layers = [keras.layers.Identity(name="encoder_0_identity", **sublayer)]
        self._encoder_channels = [self.input_channels]
        channels = table[resolution]
        self._add_encoder(ConvLayer(self.input_channels, channels, 1, name="encoder_1_conv", **sublayer), channels)
        for _ in range(self.num_downsampling):
            resolution //= 2
            block = ResBlock(channels, table[resolution], downsample=True,
                             name=f"encoder_{len(self.encoder_layers)}_resblock", **sublayer)
            channels = table[resolution]
            self._add_encoder(block, channels)
        for _ in range(self.num_blocks // 2):
            block = ResBlock(channels, channels, downsample=False,
                             name=f"encoder_{len(self.encoder_layers)}_resblock", **sublayer)
            self._add_encoder(block, channels)

        # Decoder: upstream `decoder.convs[i]`.
        self.decoder_layers = []
        for index in range(self.num_blocks // 2):
            self.decoder_layers.append(
                ResBlock(channels, channels, downsample=False, name=f"decoder_{index}_resblock", **sublayer)
            )
        for level in range(self.num_downsampling):
            resolution *= 2
            index = len(self.decoder_layers)
            self.decoder_layers.append(
                StyledConvUpsample(
                    channels,
                    table[resolution],
                    3,
                    inject_noise=self.inject_noise,
                    seed=None if seed is None else seed + level,
                    name=f"decoder_{index}_styledconv",
                    **sublayer,
                )
            )
            channels = table[resolution]
        self.decoder_layers.append(
            ConvLayer(channels, self.output_channels, 1, name=f"decoder_{len(self.decoder_layers)}_conv", **sublayer)
        )

        self.build((None, None, None, self.input_channels))

    def _add_encoder(self, layer, channels: int) -> None:
        self.encoder_layers.append(layer)
        self._encoder_channels.append(channels)

    def build(self, input_shape):
        shape = _build_in_order(self.encoder_layers, input_shape)
        _build_in_order(self.decoder_layers, shape)

    # === Forward ===
    def _check_size(self, inputs) -> None:
        multiple = 2**self.num_downsampling
        for axis, dim in (("height", inputs.shape[1]), ("width", inputs.shape[2])):
            if dim is not None and dim % multiple:
                raise ValueError(
                    f"StyleGAN2Generator needs a {axis} divisible by {multiple} (2^num_downsampling) to keep "
                    f"the image size. Received: input shape {tuple(inputs.shape)}"
                )

    def check_inputs(self, inputs) -> None:
        self._check_size(inputs)

    def call(self, inputs, training=False):
        return self.translate_and_encode(inputs, layer_ids=(0,))[0]

    @property
    def encoder_channels(self) -> list[int]:
        """Output channels of every encoder entry."""
        return list(self._encoder_channels)

    # `encode` / `translate_and_encode` / `feature_channels` (SequentialFeatures) index the encoder list.
    @property
    def feature_layers(self) -> list:
        return self.encoder_layers

    @property
    def feature_layer_channels(self) -> list[int]:
        return self._encoder_channels

    def decode(self, features):
        x = features
        for layer in self.decoder_layers:
            x = layer(x)
        return x

    # === Config ===
    def get_config(self):
        return {
            **super().get_config(),
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "filters": self.filters,
            "num_downsampling": self.num_downsampling,
            "num_blocks": self.num_blocks,
            "crop_size": self.crop_size,
            "inject_noise": self.inject_noise,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="psr")
class StyleGAN2Discriminator(keras.Model):
    """SinCUT's discriminator (upstream `StyleGAN2Discriminator`, netD "stylegan2").

    ConvLayer 1x1 -> ResBlock (downsample) per halving down to 4x4 ->
    ConvLayer 3x3 -> flatten -> EqualLinear + FusedLeakyReLU -> EqualLinear
    -> one raw score per image, `[B, 1]`. Channels from upstream's table
    (`ndf / 64` multiplier, cap 384); ndf 8 and 64x64 crops give
    32, 64, 128, 256, 384, flatten 6144. Not fully convolutional: inputs must
    be `crop_size x crop_size`. No normalisation layer (R1 needs exact second
    derivatives) and, as upstream, no minibatch-stddev branch.

    Args:
        input_channels: channels of the input image.
        filters: upstream `ndf` (8 for SinCUT).
        crop_size: input side; a power of two from 4 to 1024.
        name: model name.
    """

    def __init__(self, input_channels: int = 3, filters: int = 8, crop_size: int = 64,
                 name: str = "discriminator", **kwargs):
        super().__init__(name=name, **kwargs)
        # === Config ===
        _check_positive_int("input_channels", input_channels)
        _check_positive_int("filters", filters)
        if isinstance(crop_size, bool) or crop_size not in _RESOLUTIONS:
            raise ValueError(
                f"Argument `crop_size` must be a power of two from 4 to 1024. Received: crop_size={crop_size!r}"
            )
        table = discriminator_channels(filters)
        resolutions = [r for r in _RESOLUTIONS if r <= crop_size]
        if min(table[r] for r in resolutions) < 1:
            raise ValueError(
                f"Argument `filters` is too small: a layer would get 0 channels. Received: filters={filters}"
            )
        self.input_channels = int(input_channels)
        self.filters = int(filters)
        self.crop_size = int(crop_size)

        # === Layers ===
        sublayer = {"dtype": self.dtype_policy}
        channels = table[crop_size]
        self.conv_layers = [ConvLayer(self.input_channels, channels, 1, name="convs_0_conv", **sublayer)]
        resolution = crop_size
        while resolution > 4:
            resolution //= 2
            self.conv_layers.append(
                ResBlock(channels, table[resolution], downsample=True,
                         name=f"convs_{len(self.conv_layers)}_resblock", **sublayer)
            )
            channels = table[resolution]
        self.final_conv = ConvLayer(channels, table[4], 3, name="final_conv", **sublayer)
        self.final_linear = EqualLinear(table[4], use_bias=False, name="final_linear_0", **sublayer)
        self.final_activation = FusedLeakyReLU(table[4], name="final_linear_0_act", **sublayer)
        self.final_score = EqualLinear(1, name="final_linear_1", **sublayer)
        self.build((None, self.crop_size, self.crop_size, self.input_channels))

    def build(self, input_shape):
        if tuple(input_shape[1:]) != (self.crop_size, self.crop_size, self.input_channels):
            raise ValueError(
                f"StyleGAN2Discriminator takes {self.crop_size}x{self.crop_size}x{self.input_channels} images. "
                f"Received: input_shape={input_shape}"
            )
        batch, height, width, channels = _build_in_order(self.conv_layers + [self.final_conv], input_shape)
        flat = (batch, height * width * channels)
        _build_in_order([self.final_linear, self.final_activation, self.final_score], flat)

    def call(self, inputs, training=False):
        if inputs.shape[1] is not None and tuple(inputs.shape[1:]) != (
            self.crop_size, self.crop_size, self.input_channels
        ):
            raise ValueError(
                f"StyleGAN2Discriminator takes {self.crop_size}x{self.crop_size}x{self.input_channels} images. "
                f"Received: input shape {tuple(inputs.shape)}"
            )
        x = inputs
        for layer in self.conv_layers:
            x = layer(x)
        x = self.final_conv(x)
        # Flatten channel-major, like PyTorch's `out.view(batch, -1)` on NCHW.
        x = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (ops.shape(x)[0], -1))
        x = self.final_activation(self.final_linear(x))
        return self.final_score(x)

    def get_config(self):
        return {
            **super().get_config(),
            "input_channels": self.input_channels,
            "filters": self.filters,
            "crop_size": self.crop_size,
        }
