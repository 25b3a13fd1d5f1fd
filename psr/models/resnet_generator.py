"""CUT's ResNet generator (`resnet_9blocks`), op for op.

The network is an explicit list of operations whose positions are the indices
of PyTorch's `nn.Sequential` in CUT's `ResnetGenerator` (spec §4.1). The NCE
losses read the outputs of some of those entries (0, 4, 8, 12, 16 by default),
so the list counts pads, norms and activations as entries of their own, and
`encode()` returns the outputs of list entries.

Default (antialiased) layout for `filters=f`, `num_blocks=n`:

| index          | op                                  |
|----------------|-------------------------------------|
| 0              | reflection pad 3                    |
| 1, 2, 3        | conv 7x7 -> f, IN, ReLU             |
| 4, 5, 6, 7     | conv 3x3 -> 2f, IN, ReLU, BlurDown  |
| 8, 9, 10, 11   | conv 3x3 -> 4f, IN, ReLU, BlurDown  |
| 12 .. 11+n     | ResnetBlock(4f) x n                 |
| then, per 2x   | BlurUp, conv 3x3 -> half, IN, ReLU  |
| last three     | reflection pad 3, conv 7x7, tanh    |

`antialias=False` replaces each "conv, IN, ReLU, BlurDown" by "stride-2 conv,
IN, ReLU" (three entries); `antialias_up=False` replaces each
"BlurUp, conv, IN, ReLU" by "transposed conv, IN, ReLU" (CycleGAN's layout).
"""


import keras

from psr.models.encoder import SequentialFeatures
from psr.models.fused import run_layers
from psr.models.layers import (
    BlurDownsample,
    BlurUpsample,
    ReflectionPadding2D,
    TorchConv2DTranspose,
    ZeroPaddedConv2D,
    _check_positive_int,
    conv_kernel_initializer,
    instance_norm,
)

# NCE layers of CUT / Hneg_SRC (`--nce_layers 0,4,8,12,16`).
DEFAULT_NCE_LAYERS = (0, 4, 8, 12, 16)


def _conv(filters: int, kernel_size: int, name: str, padding: str = "valid") -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        padding=padding,
        kernel_initializer=conv_kernel_initializer(),
        bias_initializer="zeros",
        name=name,
    )


def _build_in_order(layers, input_shape):
    """Builds layers one after another from the static shape flowing through them."""
    shape = tuple(input_shape)
    for layer in layers:
        if not layer.built:
            layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


@keras.saving.register_keras_serializable(package="psr")
class ResnetBlock(keras.layers.Layer):
    """Residual block `x + F(x)` of CUT's ResNet generator (no ReLU after the sum).

    F = reflect-pad 1, conv 3x3, IN, ReLU, reflect-pad 1, conv 3x3, IN.
    PyTorch names the two convs `conv_block.1` and `conv_block.5`
    (`conv_block.6` when CycleGAN's dropout sits between them).

    Args:
        filters: channels of the input and output.
        fused: run F as `psr.models.fused` units ("pad, conv", "IN, ReLU, pad, conv", "IN"),
            which keep one activation each for the backward pass (same values, less memory,
            faster on CPU).
    """

    def __init__(self, filters: int, fused: bool = False, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("filters", filters)
        self.filters = filters
        self.fused = bool(fused)
        self.pad1 = ReflectionPadding2D(1, name=f"{self.name}_pad1")
        self.conv1 = _conv(filters, 3, name=f"{self.name}_conv1")
        self.norm1 = instance_norm(f"{self.name}_norm1")
        self.relu1 = keras.layers.ReLU(name=f"{self.name}_relu1")
        self.pad2 = ReflectionPadding2D(1, name=f"{self.name}_pad2")
        self.conv2 = _conv(filters, 3, name=f"{self.name}_conv2")
        self.norm2 = instance_norm(f"{self.name}_norm2")
        self.residual_layers = [
            self.pad1, self.conv1, self.norm1, self.relu1, self.pad2, self.conv2, self.norm2
        ]

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ValueError(
                f"ResnetBlock {self.name} expects {self.filters} input channels. "
                f"Received: input_shape={input_shape}"
            )
        _build_in_order(self.residual_layers, input_shape)

    def call(self, inputs):
        return inputs + run_layers(inputs, self.residual_layers, fused=self.fused)[0]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "fused": self.fused}


@keras.saving.register_keras_serializable(package="psr")
class ResnetGenerator(SequentialFeatures, keras.Model):
    """CUT / CycleGAN ResNet generator, fully convolutional, output in [-1, 1].

    Weights: every conv kernel ~ N(0, (0.02 sqrt(2 / (fan_in + fan_out)))^2)
    (CUT's xavier init with gain 0.02), biases zero, instance norms without
    affine parameters. The model is built in the constructor for inputs
    (None, None, input_channels).

    Args:
        input_channels: channels of the input image.
        output_channels: channels of the generated image.
        filters: channels after the first conv (CUT `ngf`, 64).
        num_blocks: number of residual blocks (9 for `resnet_9blocks`).
        antialias: blur-pool downsampling (CUT default); False is CUT's
            `no_antialias`: stride-2 convs with zero padding 1.
        antialias_up: blur upsampling + conv (CUT default); False is CUT's
            `no_antialias_up`: 3x3 transposed convs, stride 2 (CycleGAN).
        fused: run each conv together with the norm / activation / padding / blur layers
            before it as one `psr.models.fused.conv_unit`, which keeps one activation per
            conv for the backward pass and recomputes the rest. Same weights and values
            (up to float32 summation order); less memory, and faster on CPU.
        name: model name.
    """

    default_layer_ids = DEFAULT_NCE_LAYERS

    def __init__(
        self,
        input_channels: int = 3,
        output_channels: int = 3,
        filters: int = 64,
        num_blocks: int = 9,
        antialias: bool = True,
        antialias_up: bool = True,
        fused: bool = True,
        name: str = "generator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        # === Config ===
        _check_positive_int("input_channels", input_channels)
        _check_positive_int("output_channels", output_channels)
        _check_positive_int("filters", filters)
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"Argument `num_blocks` must be an integer >= 0. Received: num_blocks={num_blocks!r}")
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.filters = filters
        self.num_blocks = num_blocks
        self.antialias = bool(antialias)
        self.antialias_up = bool(antialias_up)
        self.fused = bool(fused)

        # === Layers ===
        # `sequence[i]` is PyTorch's `self.model[i]`; `_torch_prefixes` maps the
        # name of every layer holding PyTorch state (weights or blur buffers)
        # to its state-dict prefix, for `import-torch`.
        self.sequence = []
        self._sequence_channels = []
        self._torch_prefixes = {}
        self._add(ReflectionPadding2D(3, name=self._op_name("pad")), input_channels)
        self._add(_conv(filters, 7, name=self._op_name("conv")), filters)
        self._add_norm_relu(filters)
        for level in range(2):
            channels = filters * 2 ** (level + 1)
            if self.antialias:
                self._add(_conv(channels, 3, name=self._op_name("conv"), padding="same"), channels)
                self._add_norm_relu(channels)
                self._add(BlurDownsample(name=self._op_name("blurdown")), channels)
            else:
                conv = ZeroPaddedConv2D(
                    channels,
                    3,
                    strides=2,
                    zero_padding=1,
                    kernel_initializer=conv_kernel_initializer(),
                    bias_initializer="zeros",
                    name=self._op_name("conv"),
                )
                self._add(conv, channels)
                self._add_norm_relu(channels)
        bottleneck = filters * 4
        for _ in range(num_blocks):
            block = ResnetBlock(bottleneck, fused=self.fused, name=self._op_name("block"))
            prefix = f"model.{len(self.sequence)}"
            self._add(block, bottleneck, torch_prefix=False)
            self._torch_prefixes[block.conv1.name] = f"{prefix}.conv_block.1"
            self._torch_prefixes[block.conv2.name] = f"{prefix}.conv_block.5"
        for level in range(2):
            channels = filters * 2 ** (1 - level)
            if self.antialias_up:
                self._add(BlurUpsample(name=self._op_name("blurup")), channels * 2)
                self._add(_conv(channels, 3, name=self._op_name("conv"), padding="same"), channels)
            else:
                conv_transpose = TorchConv2DTranspose(
                    channels,
                    3,
                    strides=2,
                    torch_padding=1,
                    torch_output_padding=1,
                    kernel_initializer=conv_kernel_initializer(),
                    bias_initializer="zeros",
                    name=self._op_name("convtranspose"),
                )
                self._add(conv_transpose, channels)
            self._add_norm_relu(channels)
        self._add(ReflectionPadding2D(3, name=self._op_name("pad")), filters)
        self._add(_conv(output_channels, 7, name=self._op_name("conv")), output_channels)
        self._add(keras.layers.Activation("tanh", name=self._op_name("tanh")), output_channels)

        self.build((None, None, None, input_channels))

    def _op_name(self, kind: str) -> str:
        return f"model_{len(self.sequence)}_{kind}"

    def _add(self, layer, output_channels: int, torch_prefix: bool = True) -> None:
        if torch_prefix and isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose,
                                               BlurDownsample, BlurUpsample)):
            self._torch_prefixes[layer.name] = f"model.{len(self.sequence)}"
        self.sequence.append(layer)
        self._sequence_channels.append(output_channels)

    def _add_norm_relu(self, channels: int) -> None:
        self._add(instance_norm(self._op_name("norm")), channels)
        self._add(keras.layers.ReLU(name=self._op_name("relu")), channels)

    def build(self, input_shape):
        _build_in_order(self.sequence, input_shape)

    # === Forward ===
    def call(self, inputs, training=False):
        return run_layers(inputs, self.sequence, fused=self.fused)[0]

    @property
    def sequence_channels(self) -> list[int]:
        """Output channels of every entry of `sequence`."""
        return list(self._sequence_channels)

    # `encode` / `translate_and_encode` / `feature_channels` (SequentialFeatures) index the whole list.
    @property
    def feature_layers(self) -> list:
        return self.sequence

    @property
    def feature_layer_channels(self) -> list[int]:
        return self._sequence_channels

    # === PyTorch names ===
    def torch_names(self) -> dict[str, str]:
        """Maps each Keras layer holding PyTorch state to its state-dict prefix.

        Convs hold `<prefix>.weight` / `.bias`; blur layers correspond to the
        `<prefix>.filt` buffers. The second conv of a residual block is listed
        as `conv_block.5` (no dropout; CycleGAN with dropout uses `.6`).
        """
        return dict(self._torch_prefixes)

    def torch_layers(self) -> dict[str, keras.layers.Layer]:
        """Same as `torch_names`, keyed by PyTorch prefix and giving the layer objects."""
        by_name = {}
        for layer in self.sequence:
            by_name[layer.name] = layer
            if isinstance(layer, ResnetBlock):
                by_name[layer.conv1.name] = layer.conv1
                by_name[layer.conv2.name] = layer.conv2
        return {prefix: by_name[name] for name, prefix in self._torch_prefixes.items()}

    # === Config ===
    def get_config(self):
        return {
            **super().get_config(),
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "filters": self.filters,
            "num_blocks": self.num_blocks,
            "antialias": self.antialias,
            "antialias_up": self.antialias_up,
            "fused": self.fused,
        }
