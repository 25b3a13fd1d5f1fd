"""StarGAN v2 networks as modified by Hneg_SRC (multimodal translation), op for op.

Reproduces `jcy132/Hneg_SRC Multimodal/core/model_src.py` (spec multimodal.md §2) in
NHWC layout: the generator G(x, s) with plain strided down blocks, four pre-activation
residual blocks, four AdaIN residual blocks and style-free up blocks; the mapping
network M(z, y); the style encoder E(x, y) and the multi-task discriminator D(x, y),
which share one trunk class.

Common conventions (spec §2, §2.7, §9):
- LeakyReLU slope 0.2; instance norm with eps 1e-5 and biased variance (`IN(affine)`
  has a learned scale, init 1, and shift, init 0);
- every 3x3 / 4x4 conv zero-pads explicitly (PyTorch `padding=1`), so stride 2 pads
  symmetrically;
- every conv and dense kernel ~ N(0, 2 / fan_in), untruncated (PyTorch's
  `kaiming_normal_`), biases zero.

All weights exist right after construction (the input channel counts are known), so
`count_params()` and weight import work without a forward pass.
"""

import math

import keras
from keras import ops

from psr.models.layers import (
    InstanceNormalization,
    ZeroPaddedConv2D,
    _check_positive_int,
    leaky_relu,
)

LEAKY_RELU_SLOPE = 0.2
# `2**14 // image_size`: the official first width (64 at 256x256).
_OFFICIAL_WIDTH_NUMERATOR = 2**14


def he_normal_initializer() -> keras.initializers.Initializer:
    """N(0, 2 / fan_in), untruncated, as PyTorch's `kaiming_normal_` (Keras' `HeNormal` is truncated).

    A new instance per layer, so unseeded layers draw different weights.
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")


def _conv(filters: int, kernel_size: int, in_channels: int, name: str, strides: int = 1,
          zero_padding: int = 0, use_bias: bool = True) -> ZeroPaddedConv2D:
    conv = ZeroPaddedConv2D(
        filters,
        kernel_size,
        strides=strides,
        zero_padding=zero_padding,
        use_bias=use_bias,
        kernel_initializer=he_normal_initializer(),
        bias_initializer="zeros",
        name=name,
    )
    conv.build((None, None, None, in_channels))
    return conv


def _dense(units: int, in_features: int, name: str) -> keras.layers.Dense:
    dense = keras.layers.Dense(
        units, kernel_initializer=he_normal_initializer(), bias_initializer="zeros", name=name
    )
    dense.build((None, in_features))
    return dense


def _leaky_relu(x):
    return leaky_relu(x, LEAKY_RELU_SLOPE)  # a select, not the LeakyRelu op (see psr.models.layers.leaky_relu)


def _upsample_nearest(x):
    """Nearest-neighbour x2 (PyTorch `interpolate(scale_factor=2, mode="nearest")`)."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def _average_pool(x):
    """PyTorch `avg_pool2d(x, 2)`: 2x2 windows, stride 2, odd edges dropped."""
    return ops.average_pool(x, pool_size=2, strides=2, padding="valid")


def _half(dim):
    return None if dim is None else dim // 2


def _double(dim):
    return None if dim is None else 2 * dim


def _select_domain(per_domain, domains):
    """Row `domains[b]` of `per_domain[b]` ([B, K, ...] -> [B, ...]); only that row gets gradient."""
    domains = ops.cast(ops.reshape(domains, (-1,)), "int32")
    index = ops.reshape(domains, (-1,) + (1,) * (len(per_domain.shape) - 1))
    return ops.squeeze(ops.take_along_axis(per_domain, index, axis=1), axis=1)


def _official_width(image_size: int, filters) -> int:
    if filters is not None:
        _check_positive_int("filters", filters)
        return int(filters)
    width = _OFFICIAL_WIDTH_NUMERATOR // image_size
    if width < 1:
        raise ValueError(
            f"Argument `filters` must be given when image_size > {_OFFICIAL_WIDTH_NUMERATOR}. "
            f"Received: image_size={image_size}"
        )
    return width


@keras.saving.register_keras_serializable(package="psr")
class AffineInstanceNormalization(InstanceNormalization):
    """PyTorch `InstanceNorm2d(C, affine=True)`: instance norm, then a learned per-channel scale and shift.

    Formula:
        y = gamma * IN(x) + beta,   gamma init 1, beta init 0.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, inputs):
        return super().call(inputs) * self.gamma + self.beta


def _affine_norm(channels: int, name: str) -> AffineInstanceNormalization:
    norm = AffineInstanceNormalization(name=name)
    norm.build((None, None, None, channels))
    return norm


@keras.saving.register_keras_serializable(package="psr")
class AdaIN(keras.layers.Layer):
    """Adaptive instance norm of StarGAN v2 (`AdaIN`), spec §2.1.

    Formula:
        [gamma, beta] = Dense(2C)(s)   (first C entries gamma, last C beta)
        y = (1 + gamma) * IN(x) + beta, gamma and beta broadcast over H, W.

    Args:
        channels: channels C of the feature map.
        style_dim: length of the style code s.
    """

    def __init__(self, channels: int, style_dim: int = 64, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("channels", channels)
        _check_positive_int("style_dim", style_dim)
        self.channels = int(channels)
        self.style_dim = int(style_dim)
        self.norm = InstanceNormalization(name=f"{self.name}_norm")
        self.fc = _dense(2 * self.channels, self.style_dim, name=f"{self.name}_fc")
        self.built = True

    def call(self, inputs, styles):
        h = ops.reshape(self.fc(styles), (-1, 1, 1, 2 * self.channels))
        gamma, beta = h[..., : self.channels], h[..., self.channels :]
        return (1.0 + gamma) * self.norm(inputs) + beta

    def compute_output_shape(self, input_shape, styles_shape=None):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "style_dim": self.style_dim}


@keras.saving.register_keras_serializable(package="psr")
class PreActResBlock(keras.layers.Layer):
    """Pre-activation residual block (`ResBlk`) of G's encoder, E and D, spec §2.1.

    Formula:
        r = conv2(lrelu([IN2] pool?(conv1(lrelu([IN1] x)))))
        shortcut = pool?(conv1x1(x) if in_channels != out_channels else x)
        y = (shortcut + r) / sqrt(2)
    `[IN]` only with `normalize`; `pool?` = 2x2 average pooling only with `downsample`.
    The 1x1 shortcut conv has no bias. PyTorch names: `conv1`, `conv2`, `norm1`,
    `norm2`, `conv1x1`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        normalize: instance norms (affine) before both activations.
        downsample: halve H and W (average pooling after conv1 and on the shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, normalize: bool = False,
                 downsample: bool = False, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("out_channels", out_channels)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.normalize = bool(normalize)
        self.downsample = bool(downsample)
        self.conv1 = _conv(self.in_channels, 3, self.in_channels, f"{self.name}_conv1", zero_padding=1)
        self.conv2 = _conv(self.out_channels, 3, self.in_channels, f"{self.name}_conv2", zero_padding=1)
        self.norm1 = _affine_norm(self.in_channels, f"{self.name}_norm1") if self.normalize else None
        self.norm2 = _affine_norm(self.in_channels, f"{self.name}_norm2") if self.normalize else None
        self.learned_shortcut = self.in_channels != self.out_channels
        self.conv1x1 = (
            _conv(self.out_channels, 1, self.in_channels, f"{self.name}_conv1x1", use_bias=False)
            if self.learned_shortcut else None
        )
        self.built = True

    def _shortcut(self, x):
        if self.learned_shortcut:
            x = self.conv1x1(x)
        return _average_pool(x) if self.downsample else x

    def _residual(self, x):
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(_leaky_relu(x))
        if self.downsample:
            x = _average_pool(x)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(_leaky_relu(x))

    def call(self, inputs):
        return (self._shortcut(inputs) + self._residual(inputs)) / math.sqrt(2.0)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.downsample:
            height, width = _half(height), _half(width)
        return (batch, height, width, self.out_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "normalize": self.normalize,
            "downsample": self.downsample,
        }


@keras.saving.register_keras_serializable(package="psr")
class DownBlock(keras.layers.Layer):
    """Generator down block (Hneg_SRC `ConvBlk(downsample=True)`): not residual.

    Formula:
        y = conv4x4_stride2_pad1(lrelu(IN(x)))   (IN affine; halves H and W)
    PyTorch names: `norm1`, `conv1`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("out_channels", out_channels)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.norm1 = _affine_norm(self.in_channels, f"{self.name}_norm1")
        self.conv1 = _conv(self.out_channels, 4, self.in_channels, f"{self.name}_conv1", strides=2, zero_padding=1)
        self.built = True

    def call(self, inputs):
        return self.conv1(_leaky_relu(self.norm1(inputs)))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, _half(height), _half(width), self.out_channels)

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "out_channels": self.out_channels}


@keras.saving.register_keras_serializable(package="psr")
class UpBlock(keras.layers.Layer):
    """Generator up block (Hneg_SRC `ConvBlk(upsample=True)`): not residual.

    Formula:
        y = conv3x3_pad1(lrelu(N(upsample_nearest_x2(x))))
    N = IN(affine) by default: the released code ignores the style here. With
    `style_dim` set, N = AdaIN(s) (the supplement's "upsample layers with AdaIN",
    spec §8). PyTorch names: `norm1` (`norm1.fc` for AdaIN), `conv1`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        style_dim: None for the style-free block; else the style code length of its AdaIN.
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("out_channels", out_channels)
        if style_dim is not None:
            _check_positive_int("style_dim", style_dim)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.style_dim = None if style_dim is None else int(style_dim)
        if self.style_dim is None:
            self.norm1 = _affine_norm(self.in_channels, f"{self.name}_norm1")
        else:
            self.norm1 = AdaIN(self.in_channels, self.style_dim, name=f"{self.name}_norm1")
        self.conv1 = _conv(self.out_channels, 3, self.in_channels, f"{self.name}_conv1", zero_padding=1)
        self.built = True

    @property
    def uses_style(self) -> bool:
        return self.style_dim is not None

    def call(self, inputs, styles=None):
        x = _upsample_nearest(inputs)
        if self.uses_style:
            if styles is None:
                raise ValueError(f"UpBlock {self.name} uses AdaIN and needs `styles`. Received: styles=None")
            x = self.norm1(x, styles)
        else:
            x = self.norm1(x)
        return self.conv1(_leaky_relu(x))

    def compute_output_shape(self, input_shape, styles_shape=None):
        batch, height, width, _ = input_shape
        return (batch, _double(height), _double(width), self.out_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "style_dim": self.style_dim,
        }


@keras.saving.register_keras_serializable(package="psr")
class AdaINResBlock(keras.layers.Layer):
    """AdaIN residual block of G's decoder (`AdainResBlk`, same width, no upsampling), spec §2.1.

    Formula:
        r = conv2(lrelu(AdaIN2(conv1(lrelu(AdaIN1(x, s))), s)))
        y = (r + x) / sqrt(2)
    PyTorch names: `norm1.fc`, `conv1`, `norm2.fc`, `conv2`.

    Args:
        channels: input and output channels.
        style_dim: length of the style code.
    """

    def __init__(self, channels: int, style_dim: int = 64, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("channels", channels)
        _check_positive_int("style_dim", style_dim)
        self.channels = int(channels)
        self.style_dim = int(style_dim)
        self.norm1 = AdaIN(self.channels, self.style_dim, name=f"{self.name}_norm1")
        self.conv1 = _conv(self.channels, 3, self.channels, f"{self.name}_conv1", zero_padding=1)
        self.norm2 = AdaIN(self.channels, self.style_dim, name=f"{self.name}_norm2")
        self.conv2 = _conv(self.channels, 3, self.channels, f"{self.name}_conv2", zero_padding=1)
        self.built = True

    def call(self, inputs, styles):
        x = self.conv1(_leaky_relu(self.norm1(inputs, styles)))
        x = self.conv2(_leaky_relu(self.norm2(x, styles)))
        return (x + inputs) / math.sqrt(2.0)

    def compute_output_shape(self, input_shape, styles_shape=None):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "style_dim": self.style_dim}


@keras.saving.register_keras_serializable(package="psr")
class StarGAN2Generator(keras.Model):
    """Hneg_SRC's StarGAN v2 generator G(x, s) (spec §2.2), output unbounded (no tanh).

    Layout for `filters=f`, `num_down=2`: from_rgb conv3x3 3->f; DownBlock f->2f, 2f->4f;
    `num_res` PreActResBlock(4f, normalize); `num_adain` AdaINResBlock(4f, s); UpBlock
    4f->2f, 2f->f; to_rgb = IN(affine), LReLU, conv1x1 f->3. Widths double per level,
    capped at `max_filters`. The encoder (from_rgb .. last ResBlock) does not depend on s.

    Args:
        image_size: training image side; only sets the default width.
        style_dim: length of the style code s.
        filters: width after from_rgb; None = the official `2**14 // image_size` (64 at 256).
        max_filters: cap on the width.
        num_down: down (and up) blocks.
        num_res: encoder residual blocks at the bottleneck.
        num_adain: decoder AdaIN residual blocks at the bottleneck.
        style_upsampling: the up blocks use AdaIN(s) instead of IN (supplement variant, spec §8).
        name: model name.
    """

    def __init__(
        self,
        image_size: int = 256,
        style_dim: int = 64,
        filters: int | None = None,
        max_filters: int = 512,
        num_down: int = 2,
        num_res: int = 4,
        num_adain: int = 4,
        style_upsampling: bool = False,
        name: str = "stargan2_generator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        # === Config ===
        _check_positive_int("image_size", image_size)
        _check_positive_int("style_dim", style_dim)
        _check_positive_int("max_filters", max_filters)
        for arg, value in (("num_down", num_down), ("num_res", num_res), ("num_adain", num_adain)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Argument `{arg}` must be an integer >= 0. Received: {arg}={value!r}")
        self.image_size = int(image_size)
        self.style_dim = int(style_dim)
        self.filters = filters
        self.max_filters = int(max_filters)
        self.num_down = num_down
        self.num_res = num_res
        self.num_adain = num_adain
        self.style_upsampling = bool(style_upsampling)
        width = min(_official_width(self.image_size, filters), self.max_filters)

        # === Layers ===
        self.from_rgb = _conv(width, 3, 3, "from_rgb", zero_padding=1)
        self.down_blocks, self.up_blocks = [], []
        up_style_dim = self.style_dim if self.style_upsampling else None
        channels = width
        for level in range(num_down):
            wider = min(channels * 2, self.max_filters)
            self.down_blocks.append(DownBlock(channels, wider, name=f"encode_{level}"))
            # Decoder order mirrors the encoder: the last down block's partner comes first.
            self.up_blocks.insert(0, UpBlock(wider, channels, up_style_dim, name=f"up_{num_down - 1 - level}"))
            channels = wider
        self.bottleneck_channels = channels
        self.res_blocks = [
            PreActResBlock(channels, channels, normalize=True, name=f"encode_{num_down + i}")
            for i in range(num_res)
        ]
        self.adain_blocks = [AdaINResBlock(channels, self.style_dim, name=f"decode_{i}") for i in range(num_adain)]
        self.to_rgb_norm = _affine_norm(width, "to_rgb_norm")
        self.to_rgb_conv = _conv(3, 1, width, "to_rgb_conv")
        self.built = True

    # === Forward ===
    def encode(self, images, training=False) -> list:
        """Style-independent encoder: the maps at the bottleneck resolution, in order.

        Returns:
            [last down block output, each encoder residual block output]; the last one is
            the decoder input (spec §2.3: f1..f5 for the official layout).
        """
        x = self.from_rgb(images)
        for block in self.down_blocks:
            x = block(x)
        features = [x]
        for block in self.res_blocks:
            x = block(x)
            features.append(x)
        return features

    def decode(self, bottleneck, styles, training=False):
        """Decoder from the last encoder map and style codes [B, style_dim] to images."""
        x = bottleneck
        for block in self.adain_blocks:
            x = block(x, styles)
        for block in self.up_blocks:
            x = block(x, styles) if block.uses_style else block(x)
        return self.to_rgb_conv(_leaky_relu(self.to_rgb_norm(x)))

    def call(self, images, styles, training=False):
        return self.decode(self.encode(images, training=training)[-1], styles, training=training)

    @property
    def feature_channels(self) -> list[int]:
        """Channel counts of the maps returned by `encode`."""
        return [self.bottleneck_channels] * (1 + self.num_res)

    def torch_layers(self) -> dict:
        """PyTorch state-dict prefix -> layer holding its tensors (Hneg_SRC `Generator`)."""
        layers = {"from_rgb": self.from_rgb, "to_rgb.0": self.to_rgb_norm, "to_rgb.2": self.to_rgb_conv}
        for index, block in enumerate(self.down_blocks + self.res_blocks):
            layers.update(_block_torch_layers(f"encode.{index}", block))
        for index, block in enumerate(self.adain_blocks + self.up_blocks):
            layers.update(_block_torch_layers(f"decode.{index}", block))
        return layers

    # === Config ===
    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "style_dim": self.style_dim,
            "filters": self.filters,
            "max_filters": self.max_filters,
            "num_down": self.num_down,
            "num_res": self.num_res,
            "num_adain": self.num_adain,
            "style_upsampling": self.style_upsampling,
        }


def _block_torch_layers(prefix: str, block) -> dict:
    """PyTorch sub-module names of one block -> its layers (AdaIN exposes its `fc`)."""
    layers = {}
    for attribute in ("norm1", "norm2", "conv1", "conv2", "conv1x1"):
        layer = getattr(block, attribute, None)
        if layer is None:
            continue
        if isinstance(layer, AdaIN):
            layers[f"{prefix}.{attribute}.fc"] = layer.fc
        else:
            layers[f"{prefix}.{attribute}"] = layer
    return layers


@keras.saving.register_keras_serializable(package="psr")
class MappingNetwork(keras.Model):
    """Mapping network M(z, y) (spec §2.4): a shared ReLU MLP, one MLP head per domain.

    Formula:
        h = shared(z);  s_b = head_{y_b}(h_b)
    shared = `shared_layers` x [Dense(hidden), ReLU]; each head = (`head_layers` - 1) x
    [Dense(hidden), ReLU], Dense(style_dim). All heads run; the sample's own row is
    selected, so only that head gets gradient from the sample.

    Args:
        latent_dim: length of z.
        style_dim: length of the style code.
        num_domains: number of heads K.
        hidden: width of every hidden layer (512, hard-coded upstream).
        shared_layers: dense layers of the shared trunk.
        head_layers: dense layers per head (the last one outputs the style).
        name: model name.
    """

    def __init__(
        self,
        latent_dim: int = 16,
        style_dim: int = 64,
        num_domains: int = 4,
        hidden: int = 512,
        shared_layers: int = 4,
        head_layers: int = 4,
        name: str = "mapping_network",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        for arg, value in (("latent_dim", latent_dim), ("style_dim", style_dim), ("num_domains", num_domains),
                           ("hidden", hidden), ("shared_layers", shared_layers), ("head_layers", head_layers)):
            _check_positive_int(arg, value)
        self.latent_dim = int(latent_dim)
        self.style_dim = int(style_dim)
        self.num_domains = int(num_domains)
        self.hidden = int(hidden)
        self.shared_layers = int(shared_layers)
        self.head_layers = int(head_layers)

        self.shared = [
            _dense(self.hidden, self.latent_dim if i == 0 else self.hidden, f"shared_{2 * i}")
            for i in range(self.shared_layers)
        ]
        self.heads = []
        for domain in range(self.num_domains):
            head = [_dense(self.hidden, self.hidden, f"unshared_{domain}_{2 * i}") for i in range(self.head_layers - 1)]
            head.append(_dense(self.style_dim, self.hidden, f"unshared_{domain}_{2 * (self.head_layers - 1)}"))
            self.heads.append(head)
        self.built = True

    def call(self, z, domains, training=False):
        h = z
        for layer in self.shared:
            h = ops.relu(layer(h))
        per_domain = []
        for head in self.heads:
            x = h
            for layer in head[:-1]:
                x = ops.relu(layer(x))
            per_domain.append(head[-1](x))
        return _select_domain(ops.stack(per_domain, axis=1), domains)

    def torch_layers(self) -> dict:
        """PyTorch state-dict prefix -> Dense layer (`shared.<2i>`, `unshared.<k>.<2i>`)."""
        layers = {f"shared.{2 * i}": layer for i, layer in enumerate(self.shared)}
        for domain, head in enumerate(self.heads):
            layers.update({f"unshared.{domain}.{2 * i}": layer for i, layer in enumerate(head)})
        return layers

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "style_dim": self.style_dim,
            "num_domains": self.num_domains,
            "hidden": self.hidden,
            "shared_layers": self.shared_layers,
            "head_layers": self.head_layers,
        }


@keras.saving.register_keras_serializable(package="psr")
class DomainTrunk(keras.layers.Layer):
    """Shared trunk of the style encoder and the discriminator (spec §2.5 table).

    conv3x3 3->f, then log2(image_size) - 2 PreActResBlock(downsample, no norm) with
    the width doubling up to `max_filters`, so the map is 4x4; then LReLU, conv4x4
    valid (-> 1x1), LReLU; flattened to [B, C]. PyTorch names: `<seq>.0` (first conv),
    `<seq>.1 .. <seq>.n` (blocks), `<seq>.<n+2>` (4x4 conv).

    Args:
        image_size: input side, a power of two >= 4 (the trunk only fits that size).
        filters: first width; None = the official `2**14 // image_size`.
        max_filters: cap on the width.
    """

    def __init__(self, image_size: int = 256, filters: int | None = None, max_filters: int = 512, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("image_size", image_size)
        _check_positive_int("max_filters", max_filters)
        if image_size < 4 or image_size & (image_size - 1):
            raise ValueError(f"Argument `image_size` must be a power of two >= 4. Received: image_size={image_size}")
        self.image_size = int(image_size)
        self.filters = filters
        self.max_filters = int(max_filters)
        channels = _official_width(self.image_size, filters)
        self.first_conv = _conv(channels, 3, 3, f"{self.name}_conv_in", zero_padding=1)
        self.blocks = []
        for index in range(int(math.log2(self.image_size)) - 2):
            wider = min(channels * 2, self.max_filters)
            self.blocks.append(PreActResBlock(channels, wider, downsample=True, name=f"{self.name}_block{index}"))
            channels = wider
        self.out_channels = channels
        self.last_conv = _conv(channels, 4, channels, f"{self.name}_conv_out")
        self.built = True

    def call(self, images):
        height, width = images.shape[1], images.shape[2]
        if (height is not None and height != self.image_size) or (width is not None and width != self.image_size):
            raise ValueError(
                f"{self.name} is built for {self.image_size}x{self.image_size} images. "
                f"Received: input shape {tuple(images.shape)}"
            )
        x = self.first_conv(images)
        for block in self.blocks:
            x = block(x)
        x = _leaky_relu(self.last_conv(_leaky_relu(x)))
        return ops.reshape(x, (-1, self.out_channels))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.out_channels)

    def torch_layers(self, prefix: str) -> dict:
        layers = {f"{prefix}.0": self.first_conv}
        for index, block in enumerate(self.blocks):
            layers.update(_block_torch_layers(f"{prefix}.{index + 1}", block))
        layers[f"{prefix}.{len(self.blocks) + 2}"] = self.last_conv
        return layers

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "filters": self.filters,
            "max_filters": self.max_filters,
        }


@keras.saving.register_keras_serializable(package="psr")
class StyleEncoder(keras.Model):
    """Style encoder E(x, y) (spec §2.5): DomainTrunk, then one Dense(style_dim) head per domain.

    Args:
        image_size: input side (power of two).
        style_dim: length of the style code.
        num_domains: number of heads K.
        filters: first width; None = the official `2**14 // image_size`.
        max_filters: cap on the width.
        name: model name.
    """

    def __init__(self, image_size: int = 256, style_dim: int = 64, num_domains: int = 4,
                 filters: int | None = None, max_filters: int = 512, name: str = "style_encoder", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_positive_int("style_dim", style_dim)
        _check_positive_int("num_domains", num_domains)
        self.image_size = int(image_size)
        self.style_dim = int(style_dim)
        self.num_domains = int(num_domains)
        self.filters = filters
        self.max_filters = int(max_filters)
        self.trunk = DomainTrunk(image_size, filters, max_filters, name="shared")
        self.heads = [
            _dense(self.style_dim, self.trunk.out_channels, f"unshared_{domain}") for domain in range(self.num_domains)
        ]
        self.built = True

    def call(self, images, domains, training=False):
        h = self.trunk(images)
        return _select_domain(ops.stack([head(h) for head in self.heads], axis=1), domains)

    def torch_layers(self) -> dict:
        """PyTorch state-dict prefix -> layer (`shared.*`, `unshared.<k>`)."""
        layers = self.trunk.torch_layers("shared")
        layers.update({f"unshared.{domain}": head for domain, head in enumerate(self.heads)})
        return layers

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "style_dim": self.style_dim,
            "num_domains": self.num_domains,
            "filters": self.filters,
            "max_filters": self.max_filters,
        }


@keras.saving.register_keras_serializable(package="psr")
class MultiTaskDiscriminator(keras.Model):
    """Multi-task discriminator D(x, y) (spec §2.6): DomainTrunk, conv1x1 C->K, the sample's column.

    No normalisation anywhere, so R1's second-order gradients are exact.

    Args:
        image_size: input side (power of two).
        num_domains: number of outputs K.
        filters: first width; None = the official `2**14 // image_size`.
        max_filters: cap on the width.
        name: model name.
    """

    def __init__(self, image_size: int = 256, num_domains: int = 4, filters: int | None = None,
                 max_filters: int = 512, name: str = "discriminator", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_positive_int("num_domains", num_domains)
        self.image_size = int(image_size)
        self.num_domains = int(num_domains)
        self.filters = filters
        self.max_filters = int(max_filters)
        self.trunk = DomainTrunk(image_size, filters, max_filters, name="main")
        # conv1x1 on the 1x1 map is a dense layer on the flattened trunk output; kept as a
        # conv so its kernel has PyTorch's conv layout.
        self.head = _conv(self.num_domains, 1, self.trunk.out_channels, "main_conv_domains")
        self.built = True

    def call(self, images, domains, training=False):
        h = ops.reshape(self.trunk(images), (-1, 1, 1, self.trunk.out_channels))
        logits = ops.reshape(self.head(h), (-1, self.num_domains))
        return _select_domain(logits, domains)

    def torch_layers(self) -> dict:
        """PyTorch state-dict prefix -> layer (`main.*`)."""
        layers = self.trunk.torch_layers("main")
        layers[f"main.{len(self.trunk.blocks) + 4}"] = self.head
        return layers

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "num_domains": self.num_domains,
            "filters": self.filters,
            "max_filters": self.max_filters,
        }
