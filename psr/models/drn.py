"""Dilated residual networks (DRN-D-22, DRN-D-105) with the `DRNSeg` head, for Cityscapes scores.

Architecture of fyu/drn `drn.py` and the `DRNSeg` wrapper that the evaluations
use (Hneg_SRC `get_mAP.py`, gan-compression `metric/mIoU_score.py`):

- `base` = the DRN's children without avgpool/fc: layer0 (conv 7×7 16, BN, ReLU),
  layer1/layer2 (conv 3×3 16 / 32, the second at stride 2), layer3–layer6
  (residual stages of 64, 128, 256, 512 planes; stride 2, 2, dilation 2, 4),
  layer7/layer8 (conv 3×3 512 at dilation 2, then 1). DRN-D-22 uses basic blocks
  [1, 1, 2, 2, 2, 2, 1, 1], DRN-D-105 bottlenecks (×4 expansion) [1, 1, 3, 4, 23, 3, 1, 1].
- `seg`: 1×1 conv (with bias) 512 → classes.
- `up`: a fixed bilinear ×8 upsampling as a depthwise ConvTranspose2d (kernel 16,
  stride 8, padding 4, no bias, `fill_up_weights`), then LogSoftmax over classes.
  (The optional `use_torch_up` branch is not used by either evaluation.)

BatchNorm runs in inference mode with eps 1e-5 (PyTorch's default). All padding
is explicit zero padding, because TF's "same" pads asymmetrically at stride 2.
Layer names are the PyTorch module paths with "." replaced by "_", so
`load_drn_seg_weights` matches every tensor by name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping

import keras
import numpy as np
from keras import ops

from psr.errors import CheckpointError

BN_EPSILON = 1e-5
CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
ARCHITECTURES = {
    "drn_d_22": ("basic", (1, 1, 2, 2, 2, 2, 1, 1)),
    "drn_d_105": ("bottleneck", (1, 1, 3, 4, 23, 3, 1, 1)),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}


def bilinear_up_kernel(size: int = 16) -> np.ndarray:
    """fyu/drn `fill_up_weights`: the separable bilinear `[size, size]` kernel of the ×8 up layer."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    taps = np.array([1 - abs(i / f - c) for i in range(size)], np.float64)
    return np.outer(taps, taps).astype(np.float32)


@keras.saving.register_keras_serializable(package="psr")
class FixedBilinearUpsample(keras.layers.Layer):
    """Depthwise transposed conv (kernel 16, stride 8, padding 4): DRNSeg's ×8 `up` layer.

    The kernel is `[16, 16, channels]` (one per channel, initialised to the fixed
    bilinear kernel) and not trainable; output size = 8 × input size.

    Args:
        channels: number of channels (classes).
    """

    kernel_size = 16
    stride = 8
    padding = 4

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        if channels < 1:
            raise ValueError(f"Argument `channels` must be >= 1. Received: channels={channels}")
        self.channels = int(channels)

    def build(self, input_shape):
        kernel = np.repeat(bilinear_up_kernel(self.kernel_size)[:, :, None], self.channels, axis=2)
        self.kernel = self.add_weight(
            name="kernel", shape=kernel.shape, initializer=keras.initializers.Constant(kernel), trainable=False
        )

    def call(self, inputs):
        # A depthwise transposed conv as a dense one with a diagonal [k, k, out, in] kernel
        # (19 classes: the zeros cost little); "valid" gives 8H + 8, torch's padding 4 crops 4 per side.
        diagonal = self.kernel[:, :, :, None] * ops.eye(self.channels, dtype=self.kernel.dtype)[None, None]
        full = ops.conv_transpose(inputs, diagonal, strides=self.stride, padding="valid")
        p = self.padding
        return full[:, p:-p, p:-p, :]

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * 8, None if w is None else w * 8, c)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config


# === Layout (shared by the builder and the weight loader) ===


def _layout(arch: str) -> Iterator[tuple]:
    """Yields ("conv", prefix, in, out, kernel, stride, dilation) / ("bn", prefix, channels) /
    ("relu",) / ("block_start", prefix) / ("block_end", prefix, downsample prefix or None),
    in forward order, with PyTorch module paths as prefixes."""
    block, layers = ARCHITECTURES[arch]
    expansion = _EXPANSION[block]
    inplanes = CHANNELS[0]
    yield ("conv", "base.0.0", 3, CHANNELS[0], 7, 1, 1)
    yield ("bn", "base.0.1", CHANNELS[0])
    yield ("relu",)

    def conv_layers(index, channels, convs, stride=1, dilation=1):
        nonlocal inplanes
        for i in range(convs):
            yield ("conv", f"base.{index}.{3 * i}", inplanes, channels, 3, stride if i == 0 else 1, dilation)
            yield ("bn", f"base.{index}.{3 * i + 1}", channels)
            yield ("relu",)
            inplanes = channels

    def residual_stage(index, planes, blocks, stride=1, dilation=1, new_level=True):
        nonlocal inplanes
        for i in range(blocks):
            prefix = f"base.{index}.{i}"
            if i == 0:
                first = (1, 1) if dilation == 1 else (dilation // 2 if new_level else dilation, dilation)
                block_stride = stride
                downsample = stride != 1 or inplanes != planes * expansion
            else:
                first, block_stride, downsample = (dilation, dilation), 1, False
            yield ("block_start", prefix)
            if block == "basic":
                yield ("conv", f"{prefix}.conv1", inplanes, planes, 3, block_stride, first[0])
                yield ("bn", f"{prefix}.bn1", planes)
                yield ("relu",)
                yield ("conv", f"{prefix}.conv2", planes, planes, 3, 1, first[1])
                yield ("bn", f"{prefix}.bn2", planes)
            else:
                yield ("conv", f"{prefix}.conv1", inplanes, planes, 1, 1, 1)
                yield ("bn", f"{prefix}.bn1", planes)
                yield ("relu",)
                yield ("conv", f"{prefix}.conv2", planes, planes, 3, block_stride, first[1])
                yield ("bn", f"{prefix}.bn2", planes)
                yield ("relu",)
                yield ("conv", f"{prefix}.conv3", planes, planes * 4, 1, 1, 1)
                yield ("bn", f"{prefix}.bn3", planes * 4)
            if downsample:
                yield ("downsample", f"{prefix}.downsample", inplanes, planes * expansion, block_stride)
            yield ("block_end", prefix)
            inplanes = planes * expansion

    yield from conv_layers(1, CHANNELS[0], layers[0])
    yield from conv_layers(2, CHANNELS[1], layers[1], stride=2)
    yield from residual_stage(3, CHANNELS[2], layers[2], stride=2)
    yield from residual_stage(4, CHANNELS[3], layers[3], stride=2)
    yield from residual_stage(5, CHANNELS[4], layers[4], dilation=2, new_level=False)
    if layers[5]:
        yield from residual_stage(6, CHANNELS[5], layers[5], dilation=4, new_level=False)
    if layers[6]:
        yield from conv_layers(7, CHANNELS[6], layers[6], dilation=2)
    if layers[7]:
        yield from conv_layers(8, CHANNELS[7], layers[7], dilation=1)


def _name(prefix: str) -> str:
    return prefix.replace(".", "_")


# === Functional Model ===


def build_drn_seg(arch: str = "drn_d_22", classes: int = 19, name: str | None = None) -> keras.Model:
    """DRNSeg as a Keras model: normalised images `[B, H, W, 3]` → log-probabilities `[B, 8⌈H/8⌉, 8⌈W/8⌉, classes]`.

    Inputs are RGB in [0, 1] already normalised with the Cityscapes mean/std
    (see `psr.metrics.segmentation`). H and W should be multiples of 8.

    Args:
        arch: `"drn_d_22"` or `"drn_d_105"`.
        classes: segmentation classes (19 for Cityscapes trainIds).
        name: model name (default: the arch).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"Argument `arch` must be one of {sorted(ARCHITECTURES)}. Received: arch={arch!r}")
    if classes < 1:
        raise ValueError(f"Argument `classes` must be >= 1. Received: classes={classes}")
    inputs = keras.Input((None, None, 3), name="images")
    x = inputs
    block_input = None
    relu_count = 0

    def conv(tensor, prefix, filters, kernel, stride, dilation):
        pad = dilation * (kernel - 1) // 2
        if pad:
            tensor = keras.layers.ZeroPadding2D(pad, name=f"{_name(prefix)}_pad")(tensor)
        return keras.layers.Conv2D(
            filters, kernel, strides=stride, dilation_rate=dilation, use_bias=False, name=_name(prefix)
        )(tensor)

    def relu(tensor):
        nonlocal relu_count
        relu_count += 1
        return keras.layers.ReLU(name=f"relu_{relu_count}")(tensor)

    shortcut = None
    for item in _layout(arch):
        kind = item[0]
        if kind == "conv":
            _, prefix, _, filters, kernel, stride, dilation = item
            x = conv(x, prefix, filters, kernel, stride, dilation)
        elif kind == "bn":
            x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=_name(item[1]))(x)
        elif kind == "relu":
            x = relu(x)
        elif kind == "block_start":
            block_input, shortcut = x, x
        elif kind == "downsample":
            _, prefix, _, filters, stride = item
            shortcut = conv(block_input, f"{prefix}.0", filters, 1, stride, 1)
            shortcut = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=_name(f"{prefix}.1"))(shortcut)
        elif kind == "block_end":
            x = keras.layers.Add(name=f"{_name(item[1])}_add")([x, shortcut])
            x = relu(x)
    x = keras.layers.Conv2D(classes, 1, name="seg")(x)
    x = FixedBilinearUpsample(classes, name="up")(x)
    outputs = keras.layers.Activation("log_softmax", name="log_softmax")(x)
    return keras.Model(inputs, outputs, name=name or arch)


# === PyTorch weights ===


def _expected_tensors(model: keras.Model, arch: str, classes: int) -> dict:
    """state-dict key -> (torch shape, keras variable, transpose or None)."""
    expected = {}

    def conv_entry(prefix, in_channels, filters, kernel):
        layer = model.get_layer(_name(prefix))
        expected[f"{prefix}.weight"] = ((filters, in_channels, kernel, kernel), layer.kernel, (2, 3, 1, 0))

    def bn_entry(prefix, channels):
        layer = model.get_layer(_name(prefix))
        for key, variable in (("weight", layer.gamma), ("bias", layer.beta),
                              ("running_mean", layer.moving_mean), ("running_var", layer.moving_variance)):
            expected[f"{prefix}.{key}"] = ((channels,), variable, None)

    for item in _layout(arch):
        if item[0] == "conv":
            conv_entry(item[1], item[2], item[3], item[4])
        elif item[0] == "bn":
            bn_entry(item[1], item[2])
        elif item[0] == "downsample":
            conv_entry(f"{item[1]}.0", item[2], item[3], 1)
            bn_entry(f"{item[1]}.1", item[3])
    seg = model.get_layer("seg")
    expected["seg.weight"] = ((classes, CHANNELS[-1], 1, 1), seg.kernel, (2, 3, 1, 0))
    expected["seg.bias"] = ((classes,), seg.bias, None)
    # torch [classes, 1, 16, 16] -> [16, 16, classes].
    expected["up.weight"] = ((classes, 1, 16, 16), model.get_layer("up").kernel, (2, 3, 0, 1))
    return expected


def load_drn_seg_weights(model: keras.Model, state_dict: Mapping[str, np.ndarray], arch: str) -> None:
    """Assigns a PyTorch `DRNSeg` state dict (`base.*`, `seg.*`, `up.weight`) to `build_drn_seg(arch)`.

    `num_batches_tracked` buffers are ignored; every other key must match by
    name and shape, or nothing is assigned.

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped keys.
    """
    classes = model.get_layer("seg").filters
    expected = _expected_tensors(model, arch, classes)
    present = {key for key in state_dict if not key.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    misshaped = sorted(
        f"{key} {tuple(state_dict[key].shape)} (expected {expected[key][0]})"
        for key in set(expected) & present if tuple(state_dict[key].shape) != expected[key][0]
    )
    problems = [
        f"{label}: {', '.join(keys[:4])}{f' (+{len(keys) - 4} more)' if len(keys) > 4 else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", misshaped))
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"the weights are not a {arch.replace('_', '-').upper()} DRNSeg state dict with {classes} classes "
            f"({'; '.join(problems)}); pass the matching file (drn_d_22_cityscapes.pth for drn_d_22, "
            "drn-d-105_ms_cityscapes.pth for drn_d_105) or set eval.segmentation_network"
        )
    for key, (_, variable, axes) in expected.items():
        value = np.asarray(state_dict[key], np.float32)
        value = value if axes is None else np.transpose(value, axes)
        variable.assign(value.reshape(variable.shape))  # up.weight: [16, 16, classes, 1] -> [16, 16, classes]


def drn_seg_from_torch(path: str | os.PathLike, arch: str, classes: int = 19) -> keras.Model:
    """Builds `DRNSeg(arch)` and loads a `.pth` file (read without PyTorch)."""
    from psr.torch_weights import read_torch_state_dict

    model = build_drn_seg(arch, classes)
    load_drn_seg_weights(model, read_torch_state_dict(path), arch)
    return model
