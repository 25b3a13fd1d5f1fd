"""Pixel conversion between stored images (uint8, 0..255) and network images (float32, [-1, 1]).

The one place that knows the two formulas. NumPy arrays stay NumPy (data pipelines, files); tensors stay
tensors (exported SavedModel signatures, TensorBoard), so the same function serves inside `tf.function`.
"""

from __future__ import annotations

import numpy as np


def to_unit_range(pixels):
    """uint8 [0, 255] → float32 [-1, 1]: x / 127.5 − 1 (the official `Normalize((0.5,), (0.5,))`)."""
    if isinstance(pixels, np.ndarray):
        return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    from keras import ops  # only for tensors: NumPy callers need no Keras

    return ops.cast(pixels, "float32") / 127.5 - 1.0


def to_uint8(images):
    """[-1, 1] → uint8 as the official test script saves images: trunc((clip(x, −1, 1) + 1) / 2 · 255).

    Computed in float32 and truncated, not rounded (upstream `tensor2im`).
    """
    if isinstance(images, np.ndarray) or not hasattr(images, "dtype") or isinstance(images, (list, tuple)):
        values = np.clip(np.asarray(images, dtype=np.float32), -1.0, 1.0)
        return ((values + np.float32(1.0)) / np.float32(2.0) * np.float32(255.0)).astype(np.uint8)
    from keras import ops

    values = ops.clip(ops.cast(images, "float32"), -1.0, 1.0)
    return ops.cast((values + 1.0) / 2.0 * 255.0, "uint8")
