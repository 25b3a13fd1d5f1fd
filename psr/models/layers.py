"""Building blocks shared by the psr networks.

Everything here reproduces a PyTorch operation of the CUT / Hneg_SRC networks
(taesungp/contrastive-unpaired-translation `models/networks.py`) exactly, in
NHWC layout: reflection padding, instance normalisation, the anti-aliased
down/upsampling of Zhang (2019), convolutions padded the PyTorch way, and the
random patch sampling of the contrastive projection head.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# PyTorch `InstanceNorm2d` default epsilon; Keras' GroupNormalization default is 1e-3.
INSTANCE_NORM_EPSILON = 1e-5


def _check_non_negative_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"Argument `{name}` must be an integer >= 0. Received: {name}={value!r}")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Argument `{name}` must be an integer >= 1. Received: {name}={value!r}")


def _grow(dim, amount: int):
    """Adds `amount` to a static spatial size, keeping unknown sizes unknown."""
    return None if dim is None else dim + amount


def conv_kernel_initializer() -> keras.initializers.Initializer:
    """Initializer of every conv / transposed-conv / dense kernel of the CUT networks.

    CUT calls `init.xavier_normal_(w, gain=0.02)`: an *untruncated* normal with
    std = 0.02 * sqrt(2 / (fan_in + fan_out)), fans counting kernel area. Keras'
    `GlorotNormal` is truncated and has gain 1, so it is not the same thing.
    A new instance per layer, so unseeded layers draw different weights.
    """
    return keras.initializers.VarianceScaling(
        scale=0.02**2, mode="fan_avg", distribution="untruncated_normal"
    )


@keras.saving.register_keras_serializable(package="psr")
class InstanceNormalization(keras.layers.Layer):
    """PyTorch `InstanceNorm2d(affine=False, track_running_stats=False)` for NHWC maps.

    Every channel of every image is normalised over its own spatial positions
    with the biased variance. Same values as
    `GroupNormalization(groups=-1, center=False, scale=False)`, but written as
    plain mean / centred variance: its forward+backward is ~1.7x faster on CPU,
    and its second-order gradients are exact (`ops.moments` centres the
    variance on a stop-gradient mean, which breaks R1-style double backprop).

    Formula:
        y = (x − mean_hw(x)) / sqrt(mean_hw((x − mean_hw(x))²) + epsilon)
    """

    def __init__(self, epsilon: float = INSTANCE_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        # Statistics in float32 also under a mixed-precision policy.
        x = ops.cast(inputs, "float32")
        centred = x - ops.mean(x, axis=(1, 2), keepdims=True)
        variance = ops.mean(ops.square(centred), axis=(1, 2), keepdims=True)
        return ops.cast(centred * ops.rsqrt(variance + self.epsilon), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def leaky_relu(x, negative_slope: float = 0.2):
    """Leaky ReLU as a select: the values of `ops.leaky_relu`, and its gradient (the slope where x ≤ 0).

    Not the `LeakyRelu` op, because with oneDNN TensorFlow's grappler remapper fuses Conv2D + BiasAdd +
    LeakyRelu in a training graph and then fails on the `LeakyReluGrad` (or recomputation) that reads the
    same BiasAdd ("remapper failed: INVALID_ARGUMENT: Mutation::Apply error: fanout … for missing node
    …/BiasAdd"), after which it applies none of its rewrites to the step. A select is not fused.
    """
    return ops.where(x > 0, x, x * ops.cast(negative_slope, x.dtype))


@keras.saving.register_keras_serializable(package="psr")
class LeakyReLU(keras.layers.LeakyReLU):
    """`keras.layers.LeakyReLU` computed by `leaky_relu` (same values and gradients; see there why)."""

    def call(self, inputs):
        return leaky_relu(inputs, self.negative_slope)


def instance_norm(name: str) -> InstanceNormalization:
    """PyTorch `InstanceNorm2d(affine=False)` with its epsilon 1e-5 (Keras' GroupNormalization default is 1e-3)."""
    return InstanceNormalization(epsilon=INSTANCE_NORM_EPSILON, name=name)


@keras.saving.register_keras_serializable(package="psr")
class ReflectionPadding2D(keras.layers.Layer):
    """Mirror-pads height and width like PyTorch `nn.ReflectionPad2d`.

    The edge row/column is not repeated (numpy `mode="reflect"`), so the
    padding must be smaller than the padded side.

    Args:
        padding: number of pixels added on each of the four sides.
    """

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        _check_non_negative_int("padding", padding)
        self.padding = int(padding)

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, _grow(height, 2 * self.padding), _grow(width, 2 * self.padding), channels)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="psr")
class ZeroPaddedConv2D(keras.layers.Conv2D):
    """`Conv2D` that zero-pads every side by the same amount first (PyTorch `padding=p`).

    Keras' `padding="same"` pads asymmetrically at stride 2 (nothing on top,
    one row at the bottom for even sizes) whereas PyTorch pads `p` on every
    side, so stride-2 convs and the 4x4 PatchGAN convs need the explicit pad.

    Args:
        filters: number of output channels.
        kernel_size: int or (height, width) of the kernel.
        strides: int or (height, width) stride.
        zero_padding: pixels of zeros added on each of the four sides.
        **kwargs: any other `keras.layers.Conv2D` argument except `padding`.
    """

    def __init__(self, filters, kernel_size, strides=1, zero_padding: int = 0, **kwargs):
        # A config written by get_config() carries the base class' "valid".
        kwargs.pop("padding", None)
        super().__init__(filters, kernel_size, strides=strides, padding="valid", **kwargs)
        _check_non_negative_int("zero_padding", zero_padding)
        self.zero_padding = int(zero_padding)

    def _pad(self, inputs):
        p = self.zero_padding
        if p == 0:
            return inputs
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]])

    def call(self, inputs):
        return super().call(self._pad(inputs))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        padded = (batch, _grow(height, 2 * self.zero_padding), _grow(width, 2 * self.zero_padding), channels)
        return super().compute_output_shape(padded)

    def get_config(self):
        return {**super().get_config(), "zero_padding": self.zero_padding}


@keras.saving.register_keras_serializable(package="psr")
class TorchConv2DTranspose(keras.layers.Conv2DTranspose):
    """`Conv2DTranspose` with PyTorch's `padding` / `output_padding` semantics.

    PyTorch's output is the full ("valid") transposed convolution with
    `torch_padding` rows/columns removed at the start and
    `torch_padding - torch_output_padding` at the end. Keras' `"same"` aligns
    the kernel one pixel differently, so the valid result is cropped here.
    With kernel 3, stride 2, padding 1, output padding 1 (CycleGAN's
    upsampling) the output is exactly twice the input size.

    Args:
        filters: number of output channels.
        kernel_size: int kernel size.
        strides: int stride.
        torch_padding: PyTorch `padding` of `nn.ConvTranspose2d`.
        torch_output_padding: PyTorch `output_padding`; at most `torch_padding`.
        **kwargs: any other `keras.layers.Conv2DTranspose` argument except
            `padding` and `output_padding`.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=2,
        torch_padding: int = 1,
        torch_output_padding: int = 1,
        **kwargs,
    ):
        kwargs.pop("padding", None)
        kwargs.pop("output_padding", None)
        super().__init__(filters, kernel_size, strides=strides, padding="valid", **kwargs)
        _check_non_negative_int("torch_padding", torch_padding)
        _check_non_negative_int("torch_output_padding", torch_output_padding)
        if torch_output_padding > torch_padding:
            raise ValueError(
                "Argument `torch_output_padding` must not exceed `torch_padding`. "
                f"Received: torch_output_padding={torch_output_padding}, torch_padding={torch_padding}"
            )
        self.torch_padding = int(torch_padding)
        self.torch_output_padding = int(torch_output_padding)

    def _crop(self, outputs):
        start = self.torch_padding
        end_crop = self.torch_padding - self.torch_output_padding
        if start == 0 and end_crop == 0:
            return outputs
        stop = None if end_crop == 0 else -end_crop
        return outputs[:, start:stop, start:stop, :]

    def call(self, inputs):
        return self._crop(super().call(inputs))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = super().compute_output_shape(input_shape)
        shrink = -(2 * self.torch_padding - self.torch_output_padding)
        return (batch, _grow(height, shrink), _grow(width, shrink), channels)

    def get_config(self):
        return {
            **super().get_config(),
            "torch_padding": self.torch_padding,
            "torch_output_padding": self.torch_output_padding,
        }


# Binomial filters of CUT's `get_filter`, normalised to sum 1 in 2-D.
_BLUR_DOWN_TAPS = np.array([1.0, 2.0, 1.0])
_BLUR_UP_TAPS = np.array([1.0, 3.0, 3.0, 1.0])


def blur_filter_2d(taps: np.ndarray) -> np.ndarray:
    """Outer product of 1-D taps, normalised to sum 1 (CUT's `get_filter`)."""
    kernel = np.outer(taps, taps)
    return kernel / kernel.sum()


@keras.saving.register_keras_serializable(package="psr")
class BlurDownsample(keras.layers.Layer):
    """Anti-aliased 2x downsampling (CUT's `Downsample`, filter size 3).

    Formula:
        y = depthwise_conv(reflect_pad(x, 1), k, stride 2),
        k = [1, 2, 1]^T [1, 2, 1] / 16 for every channel.

    Output size is floor((H - 1) / 2) + 1 (256 -> 128, 255 -> 128). The kernel
    is a constant, not a weight: CUT keeps it as a buffer that is never trained.
    """

    def call(self, inputs):
        channels = inputs.shape[-1]
        kernel = np.tile(blur_filter_2d(_BLUR_DOWN_TAPS)[:, :, None, None], (1, 1, channels, 1))
        padded = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        return ops.depthwise_conv(
            padded, ops.cast(kernel, inputs.dtype), strides=2, padding="valid"
        )

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        half = lambda d: None if d is None else (d - 1) // 2 + 1  # noqa: E731
        return (batch, half(height), half(width), channels)


@keras.saving.register_keras_serializable(package="psr")
class BlurUpsample(keras.layers.Layer):
    """Anti-aliased 2x upsampling (CUT's `Upsample`, filter size 4), exactly 2H x 2W.

    Formula (the original definition):
        y = crop_1(conv_transpose(replicate_pad(x, 1), k, stride 2, padding 2)),
        k = 4 * [1, 3, 3, 1]^T [1, 3, 3, 1] / 64 per channel,
    which is separable and reduces, per axis, to
        y[2j] = 0.75 x[j] + 0.25 x[max(j-1, 0)],
        y[2j+1] = 0.75 x[j] + 0.25 x[min(j+1, H-1)],
    i.e. bilinear 2x resize with half-pixel centres and edge clamping, which is
    what `tf.image.resize(..., "bilinear")` computes (checked against the
    original definition in the tests). The fused resize kernel is ~8x faster
    (forward+backward) than the same maths written as slices and stacks, and
    it takes dynamic sizes, which `keras.ops.image.resize` does not.
    """

    def call(self, inputs):
        shape = tf.shape(inputs)
        # The resize computes in float32 whatever its input; cast first, so that under mixed_bfloat16 its
        # XLA gradient has the input's dtype too (bf16 in, f32 gradient out does not compile).
        resized = tf.image.resize(ops.cast(inputs, "float32"), [2 * shape[1], 2 * shape[2]], method="bilinear",
                                  antialias=False)
        return ops.cast(resized, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        double = lambda d: None if d is None else 2 * d  # noqa: E731
        return (batch, double(height), double(width), channels)


@keras.saving.register_keras_serializable(package="psr")
class PatchSampler(keras.layers.Layer):
    """Draws the patch locations for the contrastive losses, fresh at every call.

    For each feature map [B, H, W, C] it returns `min(num_patches, H*W)`
    distinct int32 indices into the row-major (h, w) flattening of the map,
    the same for every image of the batch (as CUT's `PatchSampleF`). They are
    the top-k positions of a uniform draw, i.e. a random permutation truncated
    to k, which XLA compiles (unlike `shuffle`). The generator state is a
    variable of this layer, so every traced step draws new ids.

    Args:
        num_patches: patches per feature map (CUT `num_patches`, 256).
        seed: optional int seed of the layer's `keras.random.SeedGenerator`.
    """

    def __init__(self, num_patches: int = 256, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_patches", num_patches)
        if seed is not None:
            _check_non_negative_int("seed", seed)
        self.num_patches = int(num_patches)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def sample_ids(self, feature):
        """Patch ids for one feature map [B, H, W, C] -> int32 [min(num_patches, H*W)]."""
        height, width = feature.shape[1], feature.shape[2]
        if height is not None and width is not None:
            num_positions = height * width
            count = min(self.num_patches, num_positions)
            scores = keras.random.uniform((num_positions,), seed=self.seed_generator)
            return ops.cast(ops.top_k(scores, count)[1], "int32")
        # Unknown static size (eager code never gets here; only non-XLA graphs
        # with dynamic shapes): a full random permutation, truncated.
        dynamic_shape = ops.shape(feature)
        num_positions = dynamic_shape[1] * dynamic_shape[2]
        scores = keras.random.uniform((num_positions,), seed=self.seed_generator)
        return ops.cast(ops.argsort(scores)[: self.num_patches], "int32")

    def call(self, features):
        return [self.sample_ids(feature) for feature in features]

    def get_config(self):
        return {**super().get_config(), "num_patches": self.num_patches, "seed": self.seed}


def gather_patches(feature, ids):
    """Picks the feature vectors at the given locations.

    Args:
        feature: [B, H, W, C] feature map.
        ids: int [N] indices into the row-major (h, w) flattening, as drawn by
            `PatchSampler`; the same ids are used for every image.

    Returns:
        [B, N, C] tensor: `feature.reshape(B, H*W, C)[:, ids, :]`.
    """
    shape = ops.shape(feature)
    flat = ops.reshape(feature, (shape[0], -1, shape[3]))
    return ops.take(flat, ids, axis=1)
