"""Faster CPU formulations of the mobile student's layers for inference (issue #14), same arithmetic.

TensorFlow's CPU convolution builds an im2col matrix of (output positions) × (k² · input channels) and
multiplies it with the kernel. For the 7×7 convs at full resolution with 3 input or 3 output channels
(the student's stem and its RGB output) that matrix is huge (256² × 1176 floats = 308 MB for 24 → 3)
and the product is too thin for the vector units (3 columns), so those two convs took a quarter of the
2.962G student's time. Each function here computes the same sums of the same products as the plain op,
in another order (so equal up to float32 rounding), with forward convs of better shape:

- `space_to_depth_conv2d`: a stride-1 "valid" k×k conv as a ⌈(k+1)/2⌉² conv on the 2×2
  space-to-depth rearrangement of the input, with 4 output phases, then depth-to-space. Both matrices
  of the product are 4× shorter and 4× wider; the phases add zero-weight taps (16/9 of the MACs at k=3,
  1.31× at k=7), which is what it costs.
- `reflection_pad`: PyTorch's ReflectionPad2d as concatenations of edge slices (MirrorPad is slower).
- `instance_norm`: for one image, TensorFlow's fused batch-norm kernel in training mode, which computes
  the same two-pass statistics and `(x − mean) · rsqrt(var + eps)` in one op instead of six.

`psr.models.mobile_resnet.MobileResnetGenerator` (the deployment network) runs on these; the supernet and
the teacher keep the plain layers, whose gradients (second order included) training relies on.
"""

from __future__ import annotations

import tensorflow as tf

from psr.models.layers import INSTANCE_NORM_EPSILON


def reflection_pad(inputs, padding: int):
    """`[B, H, W, C]` mirror-padded by `padding` on each side (the edge itself not repeated), as MirrorPad REFLECT."""
    if padding == 0:
        return inputs
    x = inputs
    for axis in (1, 2):
        size = tf.shape(x)[axis]
        before = [_slice(x, axis, i, i + 1) for i in range(padding, 0, -1)]
        after = [_slice(x, axis, size - 1 - i, size - i) for i in range(1, padding + 1)]
        x = tf.concat(before + [x] + after, axis)
    return x


def _slice(x, axis: int, start, stop):
    return x[:, start:stop] if axis == 1 else x[:, :, start:stop]


def space_to_depth_conv2d(inputs, kernel, bias=None):
    """`tf.nn.conv2d(inputs, kernel, 1, "VALID") (+ bias)` computed on the 2×2 space-to-depth input.

    Args:
        inputs: `[B, H, W, C_in]`, any H, W ≥ k.
        kernel: `[k, k, C_in, C_out]`.
        bias: optional `[C_out]`.

    Output phase (a, b) ∈ {0, 1}² holds the outputs at (2m + a, 2n + b); it meets input block rows
    m … m + (a + k − 1) // 2, so each phase is a k' × k' conv (k' = k // 2 + 1) on the blocks whose
    kernel is the original one placed at offset (a, b) inside a zero (2k') × (2k') kernel.
    """
    k = int(kernel.shape[0])
    c_in, c_out = int(kernel.shape[2]), int(kernel.shape[3])
    reach = k // 2 + 1  # kernel side in blocks
    height, width = tf.shape(inputs)[1], tf.shape(inputs)[2]
    out_h, out_w = height - k + 1, width - k + 1
    # Even output sides need 2 * reach - 1 + out blocks of input rows; pad the input up to whole blocks.
    rows = 2 * ((out_h + 1) // 2) + 2 * reach - 2
    cols = 2 * ((out_w + 1) // 2) + 2 * reach - 2
    padded = tf.pad(inputs, [[0, 0], [0, rows - height], [0, cols - width], [0, 0]])
    blocks = tf.nn.space_to_depth(padded, 2)  # channel index (p·2 + q)·C_in + c for pixel (2i + p, 2j + q)
    phases = []
    for a in range(2):
        for b in range(2):
            # Tap (i, j) of phase (a, b) sits at pixel offset (a + i, b + j) = block (u, v), sub-pixel (p, q).
            placed = tf.pad(kernel, [[a, 2 * reach - k - a], [b, 2 * reach - k - b], [0, 0], [0, 0]])
            placed = tf.reshape(placed, [reach, 2, reach, 2, c_in, c_out])
            placed = tf.transpose(placed, [0, 2, 1, 3, 4, 5])  # [u, v, p, q, C_in, C_out]
            phases.append(tf.reshape(placed, [reach, reach, 4 * c_in, c_out]))
    block_kernel = tf.concat(phases, axis=3)  # phase-major output channels, as depth_to_space reads them
    outputs = tf.nn.conv2d(blocks, block_kernel, 1, "VALID")
    if bias is not None:
        outputs = tf.nn.bias_add(outputs, tf.tile(bias, [4]))
    return tf.nn.depth_to_space(outputs, 2)[:, :out_h, :out_w, :]


def instance_norm(inputs, epsilon: float = INSTANCE_NORM_EPSILON):
    """`psr.models.layers.InstanceNormalization` (float32 statistics): one fused op when the batch is one image.

    `FusedBatchNormV3` in training mode normalises each channel over N·H·W with the biased variance,
    which for N = 1 is the instance norm. Larger batches (or an unknown batch that is not 1 at run
    time) take the plain formula.
    """
    x = tf.cast(inputs, tf.float32)

    def plain():
        centred = x - tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        variance = tf.reduce_mean(tf.square(centred), axis=[1, 2], keepdims=True)
        return centred * tf.math.rsqrt(variance + epsilon)

    def fused():
        channels = tf.shape(x)[3:]
        scale, offset = tf.ones(channels, tf.float32), tf.zeros(channels, tf.float32)
        return tf.compat.v1.nn.fused_batch_norm(x, scale, offset, epsilon=epsilon, is_training=True)[0]

    batch = x.shape[0]
    if batch == 1:
        outputs = fused()
    elif batch is not None:
        outputs = plain()
    else:
        outputs = tf.cond(tf.equal(tf.shape(x)[0], 1), fused, plain)
    return tf.cast(outputs, inputs.dtype)
