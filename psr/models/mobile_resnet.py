"""The GAN-compression student: (super) mobile ResNet generator with elastic channel widths.

Spec compression §3.2–3.3. Same skeleton as the CycleGAN teacher (`resnet_9blocks`), but every
residual block is `x + [RPad1, SepConv(R→h), IN, ReLU, RPad1, SepConv(h→R), IN](x)` with
`SepConv(a→b)` = depthwise 3×3 (bias) → IN → pointwise 1×1 (bias). A channel configuration
c = (c0 … c7) sets the widths:

| entry      | layer                               | channels |
|------------|-------------------------------------|----------|
| c0         | stem 7×7 conv                       | c0       |
| c1         | 1st stride-2 conv                   | 2·c1     |
| c2         | 2nd stride-2 conv = residual stream | R = 4·c2 |
| c3, c4, c5 | hidden width of block groups 1/2/3  | 4·c3 …   |
| c6, c7     | 1st / 2nd transposed conv           | 2·c6, c7 |

`MobileResnetGenerator(config)` is the fixed-width deployment network (`sub_mobile_resnet`).
`SuperMobileResnetGenerator(filters)` owns every weight at its maximum width (all entries =
filters) and runs any configuration set in its `channel_config` variable by masking: each conv
output (bias included) is multiplied by a 0/1 mask of its active width. Zero channels stay zero
through depthwise convs, non-affine IN (0 · rsqrt(eps) = 0), ReLU and the residual add, and a
zero input channel adds exact zeros to every conv sum, so the masked supernet computes what the
sliced network computes (spec §10 (a)), and unused weights get zero gradient. The config is a
variable read at run time, so one traced function serves every configuration (no retracing).
`sliced_subnetwork(config)` copies the leading slices of the supernet weights into a
`MobileResnetGenerator` (the spec's slicing rule: first k output and first k input channels).
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from psr.errors import ConfigError
from psr.models import fast_inference
from psr.models.layers import (
    ReflectionPadding2D,
    TorchConv2DTranspose,
    ZeroPaddedConv2D,
    _check_positive_int,
    instance_norm,
)
from psr.models.profile import (
    CONFIG_LENGTH,
    check_channel_config,
    format_channel_config,
)

# Candidate lists of `configs/resnet_configs.py`, identical for all 8 entries (spec §3.2), widest first.
CHANNEL_CANDIDATES = {
    "channels-64-cycleGAN": (64, 48, 32, 24, 16),
    "channels-64-pix2pix": (64, 56, 48, 40, 32, 24, 16),
}
# Channels used per config entry: c0, 2c1, 4c2, 4c3, 4c4, 4c5, 2c6, c7.
WIDTH_MULTIPLIERS = (1, 2, 4, 4, 4, 4, 2, 1)
# Entry index of each block group's hidden width.
_HIDDEN_ENTRY = (3, 4, 5)
# The 7×7 convs with at most this many outputs run on the space-to-depth input when fast kernels are on
# (faster for the RGB output and a 16-wide stem on a 2-core AVX2 CPU; a 64-wide stem is slower).
SPACE_TO_DEPTH_MAX_FILTERS = 16


def channel_candidates(config_set: str) -> tuple[int, ...]:
    """The candidate widths of a named config set, or a `ConfigError` listing the names."""
    if config_set not in CHANNEL_CANDIDATES:
        raise ConfigError(
            f"unknown channel config set {config_set!r}; choose one of {', '.join(sorted(CHANNEL_CANDIDATES))}."
        )
    return CHANNEL_CANDIDATES[config_set]


class ChannelConfigSampler:
    """Draws one channel configuration per call, each entry uniformly from its list (spec §3.2, weight 1).

    Runs inside a traced train step (backend ops, state in a `keras.random.SeedGenerator`), so every
    step of one traced function gets a fresh config: `supernet.channel_config.assign(sampler())`.

    Args:
        candidates: per config entry, its list of widths; or one list used for all 8 entries.
        seed: optional int seed of the generator.
    """

    def __init__(self, candidates: Sequence, seed: int | None = None):
        lists = [list(candidates)] * CONFIG_LENGTH if np.ndim(candidates[0]) == 0 else [list(c) for c in candidates]
        if len(lists) != CONFIG_LENGTH or any(not c for c in lists):
            raise ConfigError(f"channel candidates need {CONFIG_LENGTH} non-empty lists, got {len(lists)}.")
        if any(isinstance(v, bool) or int(v) != v or v < 1 for options in lists for v in options):
            raise ConfigError(f"channel candidates must be positive integers, got {lists}.")
        self.candidates = [[int(v) for v in options] for options in lists]
        width = max(len(options) for options in self.candidates)
        # Padded table (unused cells repeat the last width; they are never indexed).
        self._table = np.array([options + [options[-1]] * (width - len(options)) for options in self.candidates], "int32")
        self._lengths = np.array([len(options) for options in self.candidates], "float32")
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def largest(self) -> tuple[int, ...]:
        return tuple(max(options) for options in self.candidates)

    @property
    def smallest(self) -> tuple[int, ...]:
        return tuple(min(options) for options in self.candidates)

    def __call__(self):
        """int32 tensor (8,): one uniformly drawn width per entry."""
        return self.config_from_uniform(keras.random.uniform((CONFIG_LENGTH,), seed=self.seed_generator))

    def config_from_uniform(self, uniform):
        """int32 tensor (8,): entry i takes option floor(u_i · n_i) of its list, for u (8,) in [0, 1)."""
        index = ops.minimum(ops.cast(ops.floor(uniform * self._lengths), "int32"), ops.cast(self._lengths, "int32") - 1)
        return ops.take_along_axis(ops.convert_to_tensor(self._table), ops.expand_dims(index, 1), axis=1)[:, 0]


def _student_initializer() -> keras.initializers.Initializer:
    # GAN Compression initialises every student conv with N(0, 0.02), biases 0 (spec §5.2).
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


def _conv(filters: int, kernel_size: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters, kernel_size, padding="valid", kernel_initializer=_student_initializer(),
        bias_initializer="zeros", name=name,
    )


def _check_num_blocks(num_blocks) -> None:
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 3 or num_blocks % 3:
        raise ValueError(f"Argument `num_blocks` must be a multiple of 3 (9 in the spec). Received: num_blocks={num_blocks!r}")


class _MobileResnetBody(keras.Model):
    """Layers and forward pass shared by the fixed-width and the elastic network.

    Layer names are the same in both (`stem_conv`, `block{i}_dw1`, …), so slicing matches by name.
    The forward pass multiplies every conv output by the mask of its config entry (`_masks`); the
    fixed network has none. With `fast_kernels` the pads, norms and thin 7×7 convs run as the
    `psr.models.fast_inference` formulations (same values up to float32 rounding).
    """

    fast_kernels = False

    def _create_layers(self, widths: Sequence[int], input_channels: int, output_channels: int, num_blocks: int):
        stem, down1, stream, *hidden, up1, up2 = widths
        self.stem_pad = ReflectionPadding2D(3, name="stem_pad")
        self.stem_conv = _conv(stem, 7, "stem_conv")
        self.down1_conv = self._down_conv(down1, "down1_conv")
        self.down2_conv = self._down_conv(stream, "down2_conv")
        self.blocks = []
        for index in range(num_blocks):
            group = index // (num_blocks // 3)
            self.blocks.append(SeparableResidualBlock(stream, hidden[group], name=f"block{index}"))
        self.up1_conv = self._up_conv(up1, "up1_conv")
        self.up2_conv = self._up_conv(up2, "up2_conv")
        self.final_pad = ReflectionPadding2D(3, name="final_pad")
        self.final_conv = _conv(output_channels, 7, "final_conv")
        self.norm = instance_norm("norm")  # parameter-free: one instance serves every position
        self.build((None, None, None, input_channels))

    @staticmethod
    def _down_conv(filters: int, name: str) -> ZeroPaddedConv2D:
        # Explicit zero padding 1: Keras' "same" pads (0, 1) at stride 2 where PyTorch pads (1, 1).
        return ZeroPaddedConv2D(
            filters, 3, strides=2, zero_padding=1, kernel_initializer=_student_initializer(),
            bias_initializer="zeros", name=name,
        )

    @staticmethod
    def _up_conv(filters: int, name: str) -> TorchConv2DTranspose:
        return TorchConv2DTranspose(
            filters, 3, strides=2, torch_padding=1, torch_output_padding=1,
            kernel_initializer=_student_initializer(), bias_initializer="zeros", name=name,
        )

    def _conv_layers(self) -> list:
        layers = [self.stem_conv, self.down1_conv, self.down2_conv]
        for block in self.blocks:
            layers += block.conv_layers
        return layers + [self.up1_conv, self.up2_conv, self.final_conv]

    def torch_layers(self) -> dict:
        """PyTorch state-dict prefix -> conv layer, as in the official (sub_/super_)mobile_resnet `self.model`.

        `nn.Sequential` indices: 1 stem conv, 4 / 7 stride-2 convs, 10 … 9+n residual blocks (SepConvs at
        `conv_block.1` and `conv_block.6`, each `conv.0` depthwise and `conv.2` pointwise; Dropout(0) is
        `conv_block.4`), then 10+n and 13+n transposed convs and 17+n the final conv.
        """
        count = len(self.blocks)
        layers = {"model.1": self.stem_conv, "model.4": self.down1_conv, "model.7": self.down2_conv}
        for index, block in enumerate(self.blocks):
            prefix = f"model.{10 + index}.conv_block"
            layers[f"{prefix}.1.conv.0"] = block.depthwise1
            layers[f"{prefix}.1.conv.2"] = block.pointwise1
            layers[f"{prefix}.6.conv.0"] = block.depthwise2
            layers[f"{prefix}.6.conv.2"] = block.pointwise2
        layers[f"model.{10 + count}"] = self.up1_conv
        layers[f"model.{13 + count}"] = self.up2_conv
        layers[f"model.{17 + count}"] = self.final_conv
        return layers

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in (self.stem_pad, self.stem_conv, self.down1_conv, self.down2_conv):
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        for block in self.blocks:
            block.build(shape)
        for layer in (self.up1_conv, self.up2_conv, self.final_pad, self.final_conv):
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.built = True

    # === Forward ===
    def _masks(self, dtype, config=None):
        """One 0/1 mask per config entry, or None per entry for a fixed-width network."""
        return [None] * CONFIG_LENGTH

    def translate_and_features(self, inputs, config=None):
        """`(image, [f9, f12, f15, f18])`: the output and the distillation features (spec §4.3).

        f9 is the encoder output (after the 2nd stride-2 conv, IN, ReLU); f12, f15, f18 are the
        outputs of the last block of each group (blocks 3, 6, 9 for 9 blocks). In the supernet they
        have 4·filters channels, of which the first R = 4·c2 are active and the rest are zero.
        `config` (supernet only): an int tensor (8,) run instead of the `channel_config` variable, so a
        distributed train step can pass the config every replica computes from the step number.
        """
        masks = self._masks(self.compute_dtype, config)
        fast = self.fast_kernels and not isinstance(inputs, keras.KerasTensor)  # symbolic calls need shapes only
        norm = fast_inference.instance_norm if fast else self.norm
        x = ops.clip(inputs, -1.0, 1.0)  # the released generators clamp their input (spec §3)
        x = ops.relu(norm(_apply(_padded_conv(self.stem_pad, self.stem_conv, x, fast), masks[0])))
        x = ops.relu(norm(_apply(self.down1_conv(x), masks[1])))
        x = ops.relu(norm(_apply(self.down2_conv(x), masks[2])))
        features = [x]
        per_group = len(self.blocks) // 3
        for index, block in enumerate(self.blocks):
            x = block(x, stream_mask=masks[2], hidden_mask=masks[_HIDDEN_ENTRY[index // per_group]], fast=fast)
            if (index + 1) % per_group == 0:
                features.append(x)
        x = ops.relu(norm(_apply(self.up1_conv(x), masks[6])))
        x = ops.relu(norm(_apply(self.up2_conv(x), masks[7])))
        image = ops.tanh(_padded_conv(self.final_pad, self.final_conv, x, fast))
        return image, features

    def call(self, inputs, training=False):
        return self.translate_and_features(inputs)[0]


def _apply(x, mask):
    return x if mask is None else x * mask


def _padded_conv(pad: ReflectionPadding2D, conv: keras.layers.Conv2D, x, fast: bool):
    """`conv(pad(x))`; with `fast`, a concatenation pad and, for thin convs, the space-to-depth conv."""
    if not fast:
        return conv(pad(x))
    padded = fast_inference.reflection_pad(x, pad.padding)
    if conv.filters > SPACE_TO_DEPTH_MAX_FILTERS:
        return conv(padded)
    dtype = conv.compute_dtype
    kernel = ops.cast(ops.convert_to_tensor(conv.kernel), dtype)
    bias = ops.cast(ops.convert_to_tensor(conv.bias), dtype) if conv.use_bias else None
    return fast_inference.space_to_depth_conv2d(ops.cast(padded, dtype), kernel, bias)


def _depthwise(name: str) -> keras.layers.DepthwiseConv2D:
    return keras.layers.DepthwiseConv2D(
        3, padding="valid", depthwise_initializer=_student_initializer(), bias_initializer="zeros", name=name,
    )


@keras.saving.register_keras_serializable(package="psr")
class SeparableResidualBlock(keras.layers.Layer):
    """`x + [RPad1, SepConv(R→h), IN, ReLU, RPad1, SepConv(h→R), IN](x)` (spec §3.2; no ReLU after the add).

    SepConv(a→b) = depthwise 3×3 (bias) → IN → pointwise 1×1 a→b (bias). Dropout(0) is omitted.

    Args:
        stream: R, channels of the input and output.
        hidden: h, channels between the two SepConvs.
    """

    def __init__(self, stream: int, hidden: int, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("stream", stream)
        _check_positive_int("hidden", hidden)
        self.stream = stream
        self.hidden = hidden
        self.pad = ReflectionPadding2D(1, name=f"{self.name}_pad")
        self.norm = instance_norm(f"{self.name}_norm")
        self.depthwise1 = _depthwise(f"{self.name}_dw1")
        self.pointwise1 = _conv(hidden, 1, f"{self.name}_pw1")
        self.depthwise2 = _depthwise(f"{self.name}_dw2")
        self.pointwise2 = _conv(stream, 1, f"{self.name}_pw2")

    def build(self, input_shape):
        if input_shape[-1] != self.stream:
            raise ValueError(
                f"SeparableResidualBlock {self.name} expects {self.stream} input channels. "
                f"Received: input_shape={input_shape}"
            )
        batch = input_shape[0]
        self.depthwise1.build((batch, None, None, self.stream))
        self.pointwise1.build((batch, None, None, self.stream))
        self.depthwise2.build((batch, None, None, self.hidden))
        self.pointwise2.build((batch, None, None, self.hidden))

    @property
    def conv_layers(self) -> list:
        return [self.depthwise1, self.pointwise1, self.depthwise2, self.pointwise2]

    def call(self, inputs, stream_mask=None, hidden_mask=None, fast: bool = False):
        """`stream_mask` / `hidden_mask`: optional 0/1 channel masks of the supernet (None = all active).

        `fast` runs the pads and norms as `psr.models.fast_inference` ops (same values up to rounding).
        """
        pad = (lambda x: fast_inference.reflection_pad(x, 1)) if fast else self.pad
        norm = fast_inference.instance_norm if fast else self.norm
        h = _apply(self.depthwise1(pad(inputs)), stream_mask)
        h = ops.relu(norm(_apply(self.pointwise1(norm(h)), hidden_mask)))
        h = _apply(self.depthwise2(pad(h)), hidden_mask)
        h = norm(_apply(self.pointwise2(norm(h)), stream_mask))
        return inputs + h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "stream": self.stream, "hidden": self.hidden}


@keras.saving.register_keras_serializable(package="psr")
class MobileResnetGenerator(_MobileResnetBody):
    """Fixed-width mobile ResNet student at one channel configuration (`sub_mobile_resnet_9blocks`).

    Args:
        config: (c0, …, c7), see the module docstring.
        input_channels: image channels in.
        output_channels: image channels out.
        num_blocks: residual blocks, a multiple of 3 (9).
        fast_kernels: run pads, instance norms and the thin 7×7 convs as the faster
            `psr.models.fast_inference` formulations (same values up to float32 rounding; the
            exported student's latency). False runs the plain layers, as the supernet does.
        name: model name.
    """

    def __init__(
        self,
        config: Sequence[int],
        input_channels: int = 3,
        output_channels: int = 3,
        num_blocks: int = 9,
        fast_kernels: bool = True,
        name: str = "mobile_generator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        # === Config ===
        self.config = check_channel_config(config)
        _check_positive_int("input_channels", input_channels)
        _check_positive_int("output_channels", output_channels)
        _check_num_blocks(num_blocks)
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.num_blocks = num_blocks
        self.fast_kernels = bool(fast_kernels)
        # === Layers ===
        widths = [c * m for c, m in zip(self.config, WIDTH_MULTIPLIERS)]
        self._create_layers(widths, input_channels, output_channels, num_blocks)

    @property
    def config_string(self) -> str:
        return format_channel_config(self.config)

    def get_config(self):
        return {
            **super().get_config(),
            "config": list(self.config),
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "num_blocks": self.num_blocks,
            "fast_kernels": self.fast_kernels,
        }


@keras.saving.register_keras_serializable(package="psr")
class SuperMobileResnetGenerator(_MobileResnetBody):
    """Once-for-all supernet (`super_mobile_resnet_9blocks`) running any config without retracing.

    The active configuration lives in the int32 variable `channel_config` (8 entries); set it
    with `set_channel_config` (eager) or `channel_config.assign(...)` inside a traced step. It
    starts at the widest configuration (all entries = filters).

    Args:
        filters: ngf = the largest value of every config entry (64).
        input_channels: image channels in.
        output_channels: image channels out.
        num_blocks: residual blocks, a multiple of 3 (9).
        name: model name.
    """

    def __init__(
        self,
        filters: int = 64,
        input_channels: int = 3,
        output_channels: int = 3,
        num_blocks: int = 9,
        name: str = "super_generator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        # === Config ===
        _check_positive_int("filters", filters)
        _check_positive_int("input_channels", input_channels)
        _check_positive_int("output_channels", output_channels)
        _check_num_blocks(num_blocks)
        self.filters = filters
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.num_blocks = num_blocks
        self.max_widths = tuple(filters * m for m in WIDTH_MULTIPLIERS)
        self.channel_config = keras.Variable(
            np.full((CONFIG_LENGTH,), filters, dtype="int32"), dtype="int32", trainable=False,
            name="channel_config",
        )
        # === Layers ===
        self._create_layers(self.max_widths, input_channels, output_channels, num_blocks)

    @property
    def largest_config(self) -> tuple[int, ...]:
        return (self.filters,) * CONFIG_LENGTH

    def check_config(self, config: Sequence[int]) -> tuple[int, ...]:
        """The config as ints, or a `ConfigError` if an entry exceeds `filters` (the supernet's width)."""
        values = check_channel_config(config)
        if max(values) > self.filters:
            raise ConfigError(
                f"channel configuration {format_channel_config(values)} is wider than the supernet "
                f"(every entry must be <= {self.filters}); pick one from its candidate list."
            )
        return values

    def set_channel_config(self, config: Sequence[int]) -> None:
        """Makes the next calls run sub-network `config` (a variable assignment: no retracing)."""
        self.channel_config.assign(np.asarray(self.check_config(config), dtype="int32"))

    def _masks(self, dtype, config=None):
        # Per entry: 1 for the first `width` channels of its layers, 0 for the rest; read at run time.
        config = self.channel_config if config is None else ops.cast(config, "int32")
        masks = []
        for entry, max_width in enumerate(self.max_widths):
            width = config[entry] * WIDTH_MULTIPLIERS[entry]
            masks.append(ops.cast(ops.arange(max_width, dtype="int32") < width, dtype))
        return masks

    # === Slicing ===
    def sliced_subnetwork(self, config: Sequence[int], name: str = "mobile_generator") -> MobileResnetGenerator:
        """A `MobileResnetGenerator` at `config` holding copies of the leading weight slices.

        Every tensor keeps its first k entries along each axis (Keras layouts: conv kernel
        (kh, kw, in, out), depthwise (kh, kw, C, 1), transposed conv (kh, kw, out, in), bias (out,)),
        which is the spec's rule "first k output channels, first k input channels".
        """
        config = self.check_config(config)
        sub = MobileResnetGenerator(
            config, input_channels=self.input_channels, output_channels=self.output_channels,
            num_blocks=self.num_blocks, name=name,
        )
        for source, target in zip(self._conv_layers(), sub._conv_layers()):
            if source.name != target.name:  # both lists come from _create_layers in the same order
                raise RuntimeError(f"layer order differs: {source.name} vs {target.name}")
            for weight, slot in zip(source.weights, target.weights):
                value = keras.ops.convert_to_numpy(weight)
                target_shape = tuple(slot.shape)
                slot.assign(value[tuple(slice(0, n) for n in target_shape)])
        return sub

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "num_blocks": self.num_blocks,
        }
