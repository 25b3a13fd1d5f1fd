"""Convolution units that keep one activation each for the backward pass.

A *unit* is a run of parameter-free layers (instance norm, (Leaky)ReLU,
padding, blur down/upsampling) followed by a stride-1 convolution. Left to autodiff,
every layer of the run keeps its own input or output alive until the backward
pass: 4-5 tensors per convolution in the ResNet generator. `conv_unit` runs the
same layers under one custom gradient that keeps only the unit's input (the
previous unit's output, alive anyway) and recomputes the cheap layers during
the backward pass, so activation memory drops to about one tensor per conv.

On CPU the unit also picks faster formulations of the convolution gradients
than TensorFlow's generic kernels (measured on a 2-core machine, batch 2):

- on maps of 64x64 and more, the kernel gradient as k² matrix products of
  row ranges of the flattened padded input with the output gradient (Eigen's
  `Conv2DBackpropFilter` is 1.3-2x slower), and the input gradient of a
  layer that does not widen as a forward convolution with the flipped kernel
  (Eigen's forward kernel is 1.5-2x faster than `Conv2DBackpropInput`);
- for a thin output (the 7x7 conv to RGB) both gradients as one matrix
  product with k² shifted copies of the 3-channel output gradient (5-9x
  faster; Eigen's kernel-gradient im2col buffer alone is 400 MB at 128²).
Zero padding is passed to the conv ops instead of materialising padded maps.

On GPU the unit keeps the native (cuDNN) kernels and only saves memory.
Results equal plain autodiff up to float32 summation order, second-order
gradients (R1) included.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from psr.models.layers import (
    BlurDownsample,
    BlurUpsample,
    InstanceNormalization,
    ReflectionPadding2D,
)

# Layers cheap enough to run again in the backward pass instead of keeping their outputs.
RECOMPUTABLE_LAYERS = (
    InstanceNormalization, ReflectionPadding2D, BlurDownsample, BlurUpsample, keras.layers.ReLU, keras.layers.LeakyReLU,
)

# A conv whose output has at most this many channels runs as matmul + shifted sums.
THIN_OUTPUT_CHANNELS = 4
# Below this many output positions TensorFlow's own gradient kernels are as fast (measured at 32x32).
LARGE_MAP_POSITIONS = 64 * 64


# When the units pay, measured with `bench/train_step.py` (full horse→zebra step, batch 1, 128²; issue #16):
#
# | machine                          | precision       | fused units      | plain layers | auto picks |
# |----------------------------------|-----------------|------------------|--------------|------------|
# | AMD EPYC, AVX2 (oneDNN off)      | float32         | faster, −25% mem | slower       | fused      |
# | Intel Xeon AVX-512/AMX (oneDNN)  | float32         | 1.45–1.53 s      | 1.26 s       | plain      |
# | Intel Xeon AVX-512/AMX (oneDNN)  | mixed_bfloat16  | 6.18 s           | 0.75 s       | plain      |
# | AMD EPYC, AVX2, oneDNN forced on | float32         | 4.39 s, 3.99 s   | 3.83 s, 4.21 s | plain    |
# | AMD EPYC, AVX2 (bf16 emulated)   | mixed_bfloat16  | 9.32 s at 32²    | 9.23 s at 32²  | plain    |
# | GPU                              | float32         | native kernels, less memory | —  | fused      |
# | any                              | mixed precision | not measured faster         | —  | plain      |


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (on by default on AVX-512 machines)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def fused_units_pay(dtype_policy: str | None = None, onednn: bool | None = None) -> bool:
    """The `fused: auto` choice for a dtype policy (default: Keras' current one) and oneDNN state (see the table)."""
    policy = dtype_policy or keras.config.dtype_policy().name
    if policy != "float32":
        return False
    if _cpu_kernels() and (onednn_enabled() if onednn is None else onednn):
        return False
    return True


def resolve_fused(value) -> bool:
    """`model.*.fused`: true / false as given, "auto" by `fused_units_pay()` under the current dtype policy."""
    return fused_units_pay() if value == "auto" else bool(value)


def forced_fused_notice(key: str, value, dtype_policy: str | None = None, onednn: bool | None = None) -> str | None:
    """A notice when `key` (e.g. "model.generator.fused") is forced true where the units measured slower.

    On oneDNN CPUs the plain layers won: by 15-20 % in float32 and 8x under mixed_bfloat16 (table above).
    """
    if value is not True or not _cpu_kernels() or not (onednn_enabled() if onednn is None else onednn):
        return None
    policy = dtype_policy or keras.config.dtype_policy().name
    slower = "about 8x" if policy != "float32" else "15-20 %"
    return (f"{key}: true with oneDNN CPU kernels{' under mixed precision' if policy != 'float32' else ''}: the fused "
            f"units were measured {slower} slower than the plain layers on such machines (psr/models/fused.py); "
            f"{key}: auto picks the plain layers here")


def _cpu_kernels() -> bool:
    """Whether the CPU formulations apply: no GPU visible, so TensorFlow places the convs on the CPU."""
    return not tf.config.list_logical_devices("GPU")


def is_recomputable(layer) -> bool:
    """Parameter-free, cheap layers that a `conv_unit` may take as its prefix."""
    return isinstance(layer, RECOMPUTABLE_LAYERS)


def conv_zero_padding(conv) -> int | None:
    """Zeros a square, stride-1, undilated, linear `Conv2D` adds on every side; None when a unit cannot run it."""
    if type(conv).__name__ not in ("Conv2D", "ZeroPaddedConv2D") or not isinstance(conv, keras.layers.Conv2D):
        return None
    kh, kw = conv.kernel_size
    if (
        kh != kw
        or tuple(conv.strides) != (1, 1)
        or tuple(conv.dilation_rate) != (1, 1)
        or conv.groups != 1
        or conv.data_format != "channels_last"
        or conv.activation not in (None, keras.activations.linear)
    ):
        return None
    pad = getattr(conv, "zero_padding", 0)
    if conv.padding == "same":
        if kh % 2 == 0:
            return None
        pad += (kh - 1) // 2
    return pad


def conv_unit(inputs, prefix: Sequence[keras.layers.Layer], conv: keras.layers.Conv2D):
    """`conv(prefix[-1](...prefix[0](inputs)))`, keeping only `inputs` for the backward pass.

    Args:
        inputs: [B, H, W, C] tensor.
        prefix: parameter-free layers applied first (they are run again in the backward pass).
        conv: a stride-1 Keras `Conv2D` / `ZeroPaddedConv2D` without activation. Anything else,
            and symbolic `keras.KerasTensor` inputs, run as plain layers.

    Returns:
        The conv output, [B, H', W', filters].
    """
    pad = conv_zero_padding(conv)
    if pad is None or isinstance(inputs, keras.KerasTensor):  # symbolic calls only need shapes
        x = inputs
        for layer in prefix:
            x = layer(x)
        return conv(x)
    dtype = conv.compute_dtype
    kernel = tf.cast(tf.convert_to_tensor(conv.kernel), dtype)
    bias = [tf.cast(tf.convert_to_tensor(conv.bias), dtype)] if conv.use_bias else []
    cpu = _cpu_kernels()

    def conv_input(x):
        for layer in prefix:
            x = layer(x)
        return tf.cast(x, dtype)

    def gradients(x, kernel, doutputs):
        # The control dependency keeps the recomputation after the forward pass
        # (so its tensors are not held in between) and distinct from it (so
        # graph optimisers do not merge the two and keep the forward's tensors).
        with tf.control_dependencies([doutputs]):
            x = tf.identity(x)
        if not prefix:
            x_in = tf.cast(x, dtype)
            dx = conv_input_gradient(doutputs, kernel, tf.shape(x_in), pad, cpu)
            return tf.cast(dx, x.dtype), conv_kernel_gradient(x_in, doutputs, kernel, pad, cpu)
        with tf.GradientTape() as tape:
            tape.watch(x)
            x_in = conv_input(x)
        dkernel = conv_kernel_gradient(x_in, doutputs, kernel, pad, cpu)
        dx_in = conv_input_gradient(doutputs, kernel, tf.shape(x_in), pad, cpu)
        return tape.gradient(x_in, x, output_gradients=dx_in), dkernel

    @tf.custom_gradient
    def unit(x, kernel, *bias):
        outputs = conv_forward(conv_input(x), kernel, pad)
        if bias:
            outputs = tf.nn.bias_add(outputs, bias[0])

        def grad(doutputs):
            dx, dkernel = gradients(x, kernel, doutputs)
            dbias = [tf.reduce_sum(doutputs, axis=[0, 1, 2])] if bias else []
            return (dx, dkernel, *dbias)

        return outputs, grad

    return unit(inputs, kernel, *bias)


def run_layers(inputs, layers: Sequence[keras.layers.Layer], fused: bool = True, capture: Sequence[int] = ()):
    """Runs `layers` in order, as `conv_unit`s / `recompute_unit`s when `fused`.

    Every run of recomputable layers joins the conv after it; a run followed by any other
    layer (or by nothing) becomes a `recompute_unit`. Layers whose outputs are captured end
    their unit there, so each captured value is exactly that layer's output.

    Returns:
        `(output, {index: output of layers[index] for index in capture})`.
    """
    capture = set(capture)
    captured = {}
    x = inputs
    pending = []  # recomputable layers waiting for the conv that ends their unit
    for index, layer in enumerate(layers):
        if fused and is_recomputable(layer):
            pending.append(layer)
            if index in capture:
                x = captured[index] = recompute_unit(x, pending)
                pending = []
            continue
        if fused and conv_zero_padding(layer) is not None:
            x = conv_unit(x, pending, layer)
        else:
            x = layer(recompute_unit(x, pending))
        pending = []
        if index in capture:
            captured[index] = x
    return recompute_unit(x, pending), captured


def recompute_unit(inputs, layers: Sequence[keras.layers.Layer]):
    """`layers[-1](...layers[0](inputs))` for parameter-free layers, keeping only `inputs` for the backward pass."""
    if not layers or isinstance(inputs, keras.KerasTensor):
        x = inputs
        for layer in layers:
            x = layer(x)
        return x

    def run(x):
        for layer in layers:
            x = layer(x)
        return x

    @tf.custom_gradient
    def unit(x):
        def grad(doutputs):
            with tf.control_dependencies([doutputs]):  # see `conv_unit`
                x_again = tf.identity(x)
            with tf.GradientTape() as tape:
                tape.watch(x_again)
                outputs = run(x_again)
            return tape.gradient(outputs, x_again, output_gradients=doutputs)

        return run(x), grad

    return unit(inputs)


# === Convolution kernels: stride 1, NHWC, kernel [k, k, C_in, C_out], `padding` zeros on every side ===


def _paddings(padding: int) -> list:
    return [[0, 0], [padding, padding], [padding, padding], [0, 0]]


def _tf_padding(padding: int):
    """`padding` argument of `tf.nn.conv2d`: zeros added inside the kernel, no padded copy."""
    return "VALID" if padding == 0 else _paddings(padding)


def _explicit(padding: int) -> dict:
    """Padding attributes of the raw conv-gradient ops."""
    if padding == 0:
        return {"padding": "VALID"}
    return {"padding": "EXPLICIT", "explicit_paddings": [0, 0, padding, padding, padding, padding, 0, 0]}


def _is_thin_output(kernel) -> bool:
    return kernel.shape[-1] <= THIN_OUTPUT_CHANNELS and kernel.shape[0] > 1


def _is_large(outputs) -> bool:
    """Maps of at least 64x64 (static shape), where the CPU gradient formulations pay off."""
    height, width = outputs.shape[1], outputs.shape[2]
    return height is not None and width is not None and height * width >= LARGE_MAP_POSITIONS


def _flat(x):
    return tf.reshape(x, [-1, x.shape[-1]])


def _shifted_output_gradients(doutputs, k: int):
    """[B, H+k-1, W+k-1, k*k, C]: entry (i, j) holds `doutputs` shifted by (i, j), zero outside.

    Position p of the padded input meets output p - (i, j) through kernel tap (i, j).
    """
    shifted = [
        tf.pad(doutputs, [[0, 0], [i, k - 1 - i], [j, k - 1 - j], [0, 0]])
        for i in range(k)
        for j in range(k)
    ]
    return tf.stack(shifted, axis=3)


def conv_forward(inputs, kernel, padding: int = 0):
    """Stride-1 correlation of `inputs` zero-padded by `padding` on every side with `kernel`."""
    return tf.nn.conv2d(inputs, kernel, 1, _tf_padding(padding))


def conv_kernel_gradient(inputs, doutputs, kernel, padding: int = 0, cpu: bool = True):
    """d loss / d kernel of `conv_forward(inputs, kernel, padding)` given d loss / d outputs."""
    k, _, c_in, c_out = kernel.shape
    if cpu and _is_thin_output(kernel):
        padded = tf.pad(inputs, _paddings(padding)) if padding else inputs
        shifted = tf.reshape(_shifted_output_gradients(doutputs, k), [-1, k * k * c_out])
        grad = tf.matmul(_flat(padded), shifted, transpose_a=True)  # [C_in, k*k*C_out]
        return tf.transpose(tf.reshape(grad, [c_in, k, k, c_out]), [1, 2, 0, 3])
    if not (cpu and _is_large(doutputs)) or c_in <= THIN_OUTPUT_CHANNELS:
        return tf.raw_ops.Conv2DBackpropFilter(
            input=inputs, filter_sizes=tf.shape(kernel), out_backprop=doutputs, strides=[1, 1, 1, 1],
            **_explicit(padding),
        )
    # Row-major flattening over (batch, row, column): tap (i, j) pairs padded-input
    # position n + i*W_p + j with output position n once the output gradient sits on
    # the padded grid (zeros in the extra rows/columns). The shifted inputs are then
    # contiguous row ranges of one matrix, which TensorFlow slices without copying.
    padded = tf.pad(inputs, _paddings(padding)) if padding else inputs
    padded_width = tf.shape(padded)[2]
    grid = _flat(tf.pad(doutputs, [[0, 0], [0, k - 1], [0, k - 1], [0, 0]]))
    rows_in = _flat(padded)
    rows = tf.shape(rows_in)[0] - (k - 1) * (padded_width + 1)  # the rest of `grid` is zeros
    grid = grid[:rows]
    taps = []
    for i in range(k):
        for j in range(k):
            offset = i * padded_width + j
            taps.append(tf.matmul(rows_in[offset : offset + rows], grid, transpose_a=True))
    return tf.reshape(tf.stack(taps), [k, k, c_in, c_out])


def conv_input_gradient(doutputs, kernel, input_shape, padding: int = 0, cpu: bool = True):
    """d loss / d inputs of `conv_forward(inputs, kernel, padding)` given d loss / d outputs."""
    k, _, c_in, c_out = kernel.shape
    if cpu and _is_thin_output(kernel):
        shifted = tf.reshape(_shifted_output_gradients(doutputs, k), [-1, k * k * c_out])
        taps = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [c_in, k * k * c_out])
        dpadded = tf.matmul(shifted, taps, transpose_b=True)
        dpadded = tf.reshape(dpadded, tf.concat([input_shape[:1], input_shape[1:3] + 2 * padding, [c_in]], 0))
        if padding:
            dpadded = dpadded[:, padding:-padding, padding:-padding, :]
        return dpadded
    if cpu and c_in >= c_out and _is_large(doutputs) and padding <= k - 1:
        # Full correlation with the flipped kernel, as a forward conv (Eigen's fast path);
        # the input's own zero padding just removes that many rows/columns of it.
        flipped = tf.transpose(kernel[::-1, ::-1], [0, 1, 3, 2])
        return tf.nn.conv2d(doutputs, flipped, 1, _tf_padding(k - 1 - padding))
    return tf.raw_ops.Conv2DBackpropInput(
        input_sizes=input_shape, filter=kernel, out_backprop=doutputs, strides=[1, 1, 1, 1],
        **_explicit(padding),
    )
