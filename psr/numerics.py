"""Small numeric helpers shared by layers and losses (backend-agnostic `keras.ops`)."""

from keras import ops

# The official `Normalize` adds this to the norm before dividing.
L2_NORM_EPSILON = 1e-7


def l2_normalize(x, epsilon: float = L2_NORM_EPSILON):
    """`x / (‖x‖₂ + epsilon)` along the last axis, as the official `Normalize(2)`.

    The value equals the reference everywhere. The gradient differs only at
    x = 0, where √ has an infinite derivative: there the naive form gives NaN
    (0·∞, seen under XLA when a ReLU MLP outputs an all-zero patch vector);
    this form gives the finite subgradient 1/epsilon·I instead.
    """
    squared = ops.sum(ops.square(x), axis=-1, keepdims=True)
    positive = squared > 0
    norm = ops.where(positive, ops.sqrt(ops.where(positive, squared, 1.0)), 0.0)
    return x / (norm + epsilon)
