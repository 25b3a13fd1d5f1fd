"""Parameters and MACs of the compression generators, by the released code's counting convention.

GAN Compression measures a generator with `torchprofile.profile_macs` on one 1×3×H×W input
(spec compression §3.7). Its convention, restated here from layer shapes (no model is built):

- conv: MACs = (#output elements) × (input channels per group) × kh × kw;
- transposed conv: the same product with the layer's *input* channel count;
- non-affine instance norm, ReLU, padding, the residual add, tanh and the input clamp: 0.

Parameters are kernel weights plus biases (instance norms have none). The TF profiler is not
used: it counts FLOPs, bias adds and norm ops, and transposed convs differently (spec §10).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

from psr.errors import ConfigError

# The eight entries of a channel configuration (spec §3.2).
CONFIG_LENGTH = 8


@dataclass(frozen=True)
class Profile:
    """Exact counts of one generator at one input size."""

    params: int
    macs: int

    def params_text(self) -> str:
        """Millions with three decimals, as GAN Compression prints them ("11.378M")."""
        return f"{self.params / 1e6:.3f}M"

    def macs_text(self) -> str:
        """Billions with four significant digits ("56.80G", "2.962G"), the precision of the paper's tables."""
        value = self.macs / 1e9
        decimals = 3 if value <= 0 else max(0, 3 - math.floor(math.log10(value)))
        return f"{value:.{decimals}f}G"

    def describe(self) -> str:
        return f"params {self.params:,} ({self.params_text()})  MACs {self.macs:,} ({self.macs_text()})"


def _check_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
        raise ConfigError(f"image size must be an integer >= 4, got {image_size!r}; pass e.g. 256.")


def _down(size: int) -> int:
    """Side after a 3×3 stride-2 conv with zero padding 1 (PyTorch arithmetic)."""
    return (size + 2 - 3) // 2 + 1


class _Counter:
    """Accumulates params and MACs layer by layer."""

    def __init__(self):
        self.params = 0
        self.macs = 0

    def conv(self, side: int, in_channels: int, out_channels: int, kernel: int, groups: int = 1) -> None:
        """A conv (or depthwise conv when groups = in = out) whose output is side × side."""
        self.params += out_channels * (in_channels // groups) * kernel * kernel + out_channels
        self.macs += side * side * out_channels * (in_channels // groups) * kernel * kernel

    def conv_transpose(self, side: int, in_channels: int, out_channels: int, kernel: int) -> None:
        """A transposed conv whose output is side × side; torchprofile uses its input channel count."""
        self.params += in_channels * out_channels * kernel * kernel + out_channels
        self.macs += side * side * out_channels * in_channels * kernel * kernel

    def result(self) -> Profile:
        return Profile(params=self.params, macs=self.macs)


def resnet_generator_profile(
    filters: int = 64,
    num_blocks: int = 9,
    image_size: int = 256,
    input_channels: int = 3,
    output_channels: int = 3,
) -> Profile:
    """The teacher `resnet_9blocks` (spec §3.1): stride-2 convs down, transposed convs up.

    Args:
        filters: ngf (64 for the teacher).
        num_blocks: residual blocks (9).
        image_size: side of the square input (256 in the spec's numbers).
        input_channels: image channels in.
        output_channels: image channels out.
    """
    _check_size(image_size)
    count = _Counter()
    side = image_size
    count.conv(side, input_channels, filters, 7)
    half = _down(side)
    count.conv(half, filters, 2 * filters, 3)
    quarter = _down(half)
    count.conv(quarter, 2 * filters, 4 * filters, 3)
    for _ in range(num_blocks):
        count.conv(quarter, 4 * filters, 4 * filters, 3)
        count.conv(quarter, 4 * filters, 4 * filters, 3)
    # Transposed convs k3 s2 p1 output_padding 1 exactly double the side.
    count.conv_transpose(2 * quarter, 4 * filters, 2 * filters, 3)
    count.conv_transpose(4 * quarter, 2 * filters, filters, 3)
    count.conv(4 * quarter, filters, output_channels, 7)
    return count.result()


def check_channel_config(config: Sequence[int]) -> tuple[int, ...]:
    """The config as a tuple of 8 positive ints, or a `ConfigError` naming the problem."""
    values = tuple(config)
    if len(values) != CONFIG_LENGTH or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in values
    ):
        raise ConfigError(
            f"a channel configuration needs {CONFIG_LENGTH} positive integers, got {list(values)}; "
            "write it as c0_c1_c2_c3_c4_c5_c6_c7, e.g. 16_16_32_16_16_64_16_24."
        )
    return tuple(int(v) for v in values)


def mobile_resnet_profile(
    config: Sequence[int],
    num_blocks: int = 9,
    image_size: int = 256,
    input_channels: int = 3,
    output_channels: int = 3,
) -> Profile:
    """The (sub-)mobile ResNet student at channel configuration `config` (spec §3.2, §3.3).

    Residual blocks use SepConv = depthwise 3×3 (bias) → IN → pointwise 1×1 (bias); block group
    g ∈ {0, 1, 2} (num_blocks / 3 blocks each) has hidden width 4·c[3 + g].

    Args:
        config: (c0, …, c7); channels used are c0, 2c1, 4c2 (= R), 4c3..4c5, 2c6, c7.
        num_blocks: residual blocks, a multiple of 3 (9 in the spec).
        image_size: side of the square input.
        input_channels: image channels in.
        output_channels: image channels out.
    """
    c0, c1, c2, c3, c4, c5, c6, c7 = check_channel_config(config)
    _check_size(image_size)
    if num_blocks < 3 or num_blocks % 3:
        raise ConfigError(f"the mobile ResNet needs a multiple of 3 residual blocks, got {num_blocks}.")
    count = _Counter()
    side = image_size
    count.conv(side, input_channels, c0, 7)
    half = _down(side)
    count.conv(half, c0, 2 * c1, 3)
    quarter = _down(half)
    width = 4 * c2
    count.conv(quarter, 2 * c1, width, 3)
    for hidden in (4 * c3, 4 * c4, 4 * c5):
        for _ in range(num_blocks // 3):
            count.conv(quarter, width, width, 3, groups=width)  # SepConv(R → h)
            count.conv(quarter, width, hidden, 1)
            count.conv(quarter, hidden, hidden, 3, groups=hidden)  # SepConv(h → R)
            count.conv(quarter, hidden, width, 1)
    count.conv_transpose(2 * quarter, width, 2 * c6, 3)
    count.conv_transpose(4 * quarter, 2 * c6, c7, 3)
    count.conv(4 * quarter, c7, output_channels, 7)
    return count.result()


def parse_channel_config(text: str) -> tuple[int, ...]:
    """`"16_16_32_16_16_64_16_24"` → (16, 16, 32, 16, 16, 64, 16, 24); bad text → `ConfigError`."""
    parts = str(text).strip().split("_")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != CONFIG_LENGTH or any(v < 1 for v in values):
        raise ConfigError(
            f"bad channel configuration {text!r}: write {CONFIG_LENGTH} positive integers joined by '_', "
            "e.g. 16_16_32_16_16_64_16_24."
        )
    return values


def format_channel_config(config: Sequence[int]) -> str:
    """(16, 16, 32, …) → "16_16_32_…" (the code's config string, used as cache key)."""
    return "_".join(str(v) for v in check_channel_config(config))
