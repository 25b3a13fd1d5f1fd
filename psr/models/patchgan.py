"""PatchGAN discriminator of CUT (`netD basic`, `n_layers_D 3`), op for op.

Antialiased layout (`filters=f`, `num_layers=3`, spec §4.4), every conv 4x4
with zero padding 1 and a bias, outputs for a 256x256 input:

| index       | op                                           | output       |
|-------------|----------------------------------------------|--------------|
| 0, 1, 2     | conv -> f, stride 1, LReLU 0.2, BlurDown      | 128x128x f   |
| 3, 4, 5, 6  | conv -> 2f, IN, LReLU 0.2, BlurDown           | 64x64x 2f    |
| 7, 8, 9, 10 | conv -> 4f, IN, LReLU 0.2, BlurDown           | 32x32x 4f    |
| 11, 12, 13  | conv -> 8f, stride 1, IN, LReLU 0.2           | 31x31x 8f    |
| 14          | conv -> 1, stride 1                          | 30x30x1      |

`antialias=False` makes the first `num_layers` convs stride 2 and drops the
BlurDown entries (pix2pix / CycleGAN's 70x70 PatchGAN). The output is a map
of raw scores, no sigmoid (LSGAN).
"""

import keras

from psr.models.fused import run_layers
from psr.models.layers import (
    BlurDownsample,
    LeakyReLU,
    ZeroPaddedConv2D,
    conv_kernel_initializer,
    instance_norm,
)


@keras.saving.register_keras_serializable(package="psr")
class PatchGANDiscriminator(keras.Model):
    """Fully convolutional PatchGAN: image [B, H, W, C] -> raw scores [B, h, w, 1].

    Built in the constructor for inputs (None, None, input_channels). Init as
    the generator's (xavier normal, gain 0.02, zero biases); instance norms
    have no affine parameters.

    Args:
        input_channels: channels of the judged image.
        filters: channels of the first conv (CUT `ndf`, 64); doubled per
            layer, capped at 8 * filters.
        num_layers: number of downsampling conv layers (CUT `n_layers_D`, 3).
        antialias: stride-1 conv + blur-pool downsampling (CUT default);
            False is CUT's `no_antialias` (stride-2 convs).
        fused: run each stride-1 conv with the norm / LeakyReLU / blur layers before it as one
            `psr.models.fused.conv_unit` (one stored activation per conv, faster CPU gradients,
            same values; second-order gradients for R1 work too).
        name: model name.
    """

    def __init__(
        self,
        input_channels: int = 3,
        filters: int = 64,
        num_layers: int = 3,
        antialias: bool = True,
        fused: bool = True,
        name: str = "discriminator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        # === Config ===
        for arg_name, value in (("input_channels", input_channels), ("filters", filters), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Argument `{arg_name}` must be an integer >= 1. Received: {arg_name}={value!r}")
        self.input_channels = input_channels
        self.filters = filters
        self.num_layers = num_layers
        self.antialias = bool(antialias)
        self.fused = bool(fused)

        # === Layers ===
        # `sequence[i]` is PyTorch's `self.model[i]` of `NLayerDiscriminator`.
        self.sequence = []
        self._torch_prefixes = {}
        downsample_stride = 1 if self.antialias else 2
        self._add_conv(filters, downsample_stride)
        self._add_leaky_relu()
        if self.antialias:
            self.sequence.append(BlurDownsample(name=self._op_name("blurdown")))
        for layer_index in range(1, num_layers):
            self._add_conv(filters * min(2**layer_index, 8), downsample_stride)
            self.sequence.append(instance_norm(self._op_name("norm")))
            self._add_leaky_relu()
            if self.antialias:
                self.sequence.append(BlurDownsample(name=self._op_name("blurdown")))
        self._add_conv(filters * min(2**num_layers, 8), 1)
        self.sequence.append(instance_norm(self._op_name("norm")))
        self._add_leaky_relu()
        self._add_conv(1, 1)

        self.build((None, None, None, input_channels))

    def _op_name(self, kind: str) -> str:
        return f"model_{len(self.sequence)}_{kind}"

    def _add_conv(self, channels: int, strides: int) -> None:
        # 4x4 kernels with PyTorch's symmetric padding 1 (Keras "same" would pad 1 and 2).
        conv = ZeroPaddedConv2D(
            channels,
            4,
            strides=strides,
            zero_padding=1,
            kernel_initializer=conv_kernel_initializer(),
            bias_initializer="zeros",
            name=self._op_name("conv"),
        )
        self._torch_prefixes[conv.name] = f"model.{len(self.sequence)}"
        self.sequence.append(conv)

    def _add_leaky_relu(self) -> None:
        self.sequence.append(LeakyReLU(negative_slope=0.2, name=self._op_name("lrelu")))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.sequence:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    def call(self, inputs, training=False):
        return run_layers(inputs, self.sequence, fused=self.fused)[0]

    def torch_names(self) -> dict[str, str]:
        """Maps each conv layer name to its PyTorch state-dict prefix (`model.N`)."""
        return dict(self._torch_prefixes)

    # === Config ===
    def get_config(self):
        return {
            **super().get_config(),
            "input_channels": self.input_channels,
            "filters": self.filters,
            "num_layers": self.num_layers,
            "antialias": self.antialias,
            "fused": self.fused,
        }
