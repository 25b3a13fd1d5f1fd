"""Inception-v3 feature networks of the papers' FID tools, as Keras models with PyTorch weights.

Two variants of one architecture (torchvision's `Inception3` module names and
channel counts), differing only in the pooling branch of some mixed blocks:

| variant | weights file | Mixed_5b–5d (A), 6b–6e (C), 7b (E) pool branch | Mixed_7c pool branch |
|---|---|---|---|
| `pytorch-fid` | `pt_inception-2015-12-05-6726825d.pth` | 3×3 average, padding not counted | 3×3 max |
| `torchvision` | `inception_v3_google-*.pth` | 3×3 average, zero padding counted | 3×3 average, counted |

`pytorch-fid` is mseitzer/pytorch-fid's FID Inception (its FIDInceptionA/C/E_1/E_2
patches reproduce the 2015 TensorFlow graph of the original FID code), used by
the single-modal and compression papers. `torchvision` is the ImageNet
Inception-v3 that StarGAN v2's `metrics/fid.py` calls layer by layer (spec
multimodal §6.2). Both output the 2048-d global average of Mixed_7c ("pool3").

Each torch `BasicConv2d` (conv without bias → BatchNorm(eps 1e-3) → ReLU) becomes
one Keras `Conv2D` with bias and ReLU, named like the torch module
(`Mixed_5b.branch1x1`): the inference-mode batch norm is folded into the conv in
float64 when the weights are loaded.
"""

from __future__ import annotations

import keras
import numpy as np

from psr.errors import CheckpointError

BATCH_NORM_EPSILON = 1e-3  # torchvision's BasicConv2d, as in the TF graph
FEATURE_DIM = 2048

# === Layers ===


def _conv(x, name: str, filters: int, kernel_size, strides: int = 1, padded: bool = False):
    """torch BasicConv2d. Every padded torch conv here has stride 1 and padding (k − 1)/2: "same"."""
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same" if padded else "valid",
        activation="relu", use_bias=True, name=name,
    )(x)


def _average_pool_counting_padding(x, name: str):
    """torch `avg_pool2d(x, 3, stride=1, padding=1)`: the zero padding counts in every mean."""
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.AveragePooling2D(3, strides=1, padding="valid", name=name)(x)


def _average_pool_ignoring_padding(x, name: str):
    """torch `avg_pool2d(..., count_include_pad=False)`: TF's "same" average excludes padding."""
    return keras.layers.AveragePooling2D(3, strides=1, padding="same", name=name)(x)


def _max_pool_padded(x, name: str):
    """torch `max_pool2d(x, 3, stride=1, padding=1)` (padding never wins a max)."""
    return keras.layers.MaxPooling2D(3, strides=1, padding="same", name=name)(x)


def _max_pool_strided(x, name: str):
    """torch `max_pool2d(x, 3, stride=2)`, no padding, floor mode."""
    return keras.layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)


# === Blocks ===
# Each class mirrors the torch module of the same name; the FID subclasses only
# swap the pool branch, exactly as pytorch-fid patches torchvision's blocks.


class InceptionA:
    pool_branch = staticmethod(_average_pool_counting_padding)

    def __init__(self, pool_features: int):
        self.pool_features = pool_features

    def __call__(self, x, name: str):
        branch1x1 = _conv(x, f"{name}.branch1x1", 64, 1)
        branch5x5 = _conv(x, f"{name}.branch5x5_1", 48, 1)
        branch5x5 = _conv(branch5x5, f"{name}.branch5x5_2", 64, 5, padded=True)
        branch3x3dbl = _conv(x, f"{name}.branch3x3dbl_1", 64, 1)
        branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 96, 3, padded=True)
        branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_3", 96, 3, padded=True)
        branch_pool = self.pool_branch(x, f"{name}.pool")
        branch_pool = _conv(branch_pool, f"{name}.branch_pool", self.pool_features, 1)
        return keras.layers.Concatenate(name=name)([branch1x1, branch5x5, branch3x3dbl, branch_pool])


class FIDInceptionA(InceptionA):
    pool_branch = staticmethod(_average_pool_ignoring_padding)


class InceptionB:
    def __call__(self, x, name: str):
        branch3x3 = _conv(x, f"{name}.branch3x3", 384, 3, strides=2)
        branch3x3dbl = _conv(x, f"{name}.branch3x3dbl_1", 64, 1)
        branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 96, 3, padded=True)
        branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_3", 96, 3, strides=2)
        branch_pool = _max_pool_strided(x, f"{name}.pool")
        return keras.layers.Concatenate(name=name)([branch3x3, branch3x3dbl, branch_pool])


class InceptionC:
    pool_branch = staticmethod(_average_pool_counting_padding)

    def __init__(self, channels_7x7: int):
        self.channels_7x7 = channels_7x7

    def __call__(self, x, name: str):
        c7 = self.channels_7x7
        branch1x1 = _conv(x, f"{name}.branch1x1", 192, 1)
        branch7x7 = _conv(x, f"{name}.branch7x7_1", c7, 1)
        branch7x7 = _conv(branch7x7, f"{name}.branch7x7_2", c7, (1, 7), padded=True)
        branch7x7 = _conv(branch7x7, f"{name}.branch7x7_3", 192, (7, 1), padded=True)
        branch7x7dbl = _conv(x, f"{name}.branch7x7dbl_1", c7, 1)
        branch7x7dbl = _conv(branch7x7dbl, f"{name}.branch7x7dbl_2", c7, (7, 1), padded=True)
        branch7x7dbl = _conv(branch7x7dbl, f"{name}.branch7x7dbl_3", c7, (1, 7), padded=True)
        branch7x7dbl = _conv(branch7x7dbl, f"{name}.branch7x7dbl_4", c7, (7, 1), padded=True)
        branch7x7dbl = _conv(branch7x7dbl, f"{name}.branch7x7dbl_5", 192, (1, 7), padded=True)
        branch_pool = self.pool_branch(x, f"{name}.pool")
        branch_pool = _conv(branch_pool, f"{name}.branch_pool", 192, 1)
        return keras.layers.Concatenate(name=name)([branch1x1, branch7x7, branch7x7dbl, branch_pool])


class FIDInceptionC(InceptionC):
    pool_branch = staticmethod(_average_pool_ignoring_padding)


class InceptionD:
    def __call__(self, x, name: str):
        branch3x3 = _conv(x, f"{name}.branch3x3_1", 192, 1)
        branch3x3 = _conv(branch3x3, f"{name}.branch3x3_2", 320, 3, strides=2)
        branch7x7x3 = _conv(x, f"{name}.branch7x7x3_1", 192, 1)
        branch7x7x3 = _conv(branch7x7x3, f"{name}.branch7x7x3_2", 192, (1, 7), padded=True)
        branch7x7x3 = _conv(branch7x7x3, f"{name}.branch7x7x3_3", 192, (7, 1), padded=True)
        branch7x7x3 = _conv(branch7x7x3, f"{name}.branch7x7x3_4", 192, 3, strides=2)
        branch_pool = _max_pool_strided(x, f"{name}.pool")
        return keras.layers.Concatenate(name=name)([branch3x3, branch7x7x3, branch_pool])


class InceptionE:
    pool_branch = staticmethod(_average_pool_counting_padding)

    def __call__(self, x, name: str):
        branch1x1 = _conv(x, f"{name}.branch1x1", 320, 1)
        branch3x3 = _conv(x, f"{name}.branch3x3_1", 384, 1)
        branch3x3 = keras.layers.Concatenate(name=f"{name}.branch3x3")([
            _conv(branch3x3, f"{name}.branch3x3_2a", 384, (1, 3), padded=True),
            _conv(branch3x3, f"{name}.branch3x3_2b", 384, (3, 1), padded=True),
        ])
        branch3x3dbl = _conv(x, f"{name}.branch3x3dbl_1", 448, 1)
        branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 384, 3, padded=True)
        branch3x3dbl = keras.layers.Concatenate(name=f"{name}.branch3x3dbl")([
            _conv(branch3x3dbl, f"{name}.branch3x3dbl_3a", 384, (1, 3), padded=True),
            _conv(branch3x3dbl, f"{name}.branch3x3dbl_3b", 384, (3, 1), padded=True),
        ])
        branch_pool = self.pool_branch(x, f"{name}.pool")
        branch_pool = _conv(branch_pool, f"{name}.branch_pool", 192, 1)
        return keras.layers.Concatenate(name=name)([branch1x1, branch3x3, branch3x3dbl, branch_pool])


class FIDInceptionE_1(InceptionE):  # noqa: N801  (pytorch-fid's class name)
    pool_branch = staticmethod(_average_pool_ignoring_padding)


class FIDInceptionE_2(InceptionE):  # noqa: N801
    # pytorch-fid: the 2015 FID graph max-pools here (the Inception paper averages).
    pool_branch = staticmethod(_max_pool_padded)


# === Architecture tables ===

# (torch module name, block role, block arguments), in forward order.
_MIXED_LAYOUT = (
    ("Mixed_5b", "A", {"pool_features": 32}),
    ("Mixed_5c", "A", {"pool_features": 64}),
    ("Mixed_5d", "A", {"pool_features": 64}),
    ("Mixed_6a", "B", {}),
    ("Mixed_6b", "C", {"channels_7x7": 128}),
    ("Mixed_6c", "C", {"channels_7x7": 160}),
    ("Mixed_6d", "C", {"channels_7x7": 160}),
    ("Mixed_6e", "C", {"channels_7x7": 192}),
    ("Mixed_7a", "D", {}),
    ("Mixed_7b", "E_1", {}),
    ("Mixed_7c", "E_2", {}),
)

# Block role → class, per variant: the only place the two networks differ.
BLOCK_CLASSES = {
    "pytorch-fid": {
        "A": FIDInceptionA, "B": InceptionB, "C": FIDInceptionC, "D": InceptionD,
        "E_1": FIDInceptionE_1, "E_2": FIDInceptionE_2,
    },
    "torchvision": {
        "A": InceptionA, "B": InceptionB, "C": InceptionC, "D": InceptionD,
        "E_1": InceptionE, "E_2": InceptionE,
    },
}

# Classifier size of each weights file (unused for features; tells the files apart).
NUM_CLASSES = {"pytorch-fid": 1008, "torchvision": 1000}

VARIANTS = tuple(BLOCK_CLASSES)


# === Functional Model ===


def build_inception_v3(variant: str, image_size: int | None = 299) -> keras.Model:
    """The Inception-v3 feature network of `variant` (random weights; see `load_torch_inception_weights`).

    Args:
        variant: `"pytorch-fid"` or `"torchvision"` (see the module docstring).
        image_size: side of the square input; `None` accepts any size >= 75.

    Returns:
        A `keras.Model` mapping float32 `[B, H, W, 3]` (already normalised) to `[B, 2048]`.
    """
    if variant not in BLOCK_CLASSES:
        raise ValueError(f"Unknown Inception variant; valid: {', '.join(VARIANTS)}. Received: variant={variant!r}")
    if image_size is not None and image_size < 75:
        # Below 75×75 the stride-2 stages leave no spatial output.
        raise ValueError(f"Argument `image_size` must be >= 75. Received: image_size={image_size}")
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = _conv(inputs, "Conv2d_1a_3x3", 32, 3, strides=2)
    x = _conv(x, "Conv2d_2a_3x3", 32, 3)
    x = _conv(x, "Conv2d_2b_3x3", 64, 3, padded=True)
    x = _max_pool_strided(x, "maxpool1")
    x = _conv(x, "Conv2d_3b_1x1", 80, 1)
    x = _conv(x, "Conv2d_4a_3x3", 192, 3)
    x = _max_pool_strided(x, "maxpool2")
    blocks = BLOCK_CLASSES[variant]
    for name, role, arguments in _MIXED_LAYOUT:
        x = blocks[role](**arguments)(x, name)
    features = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(inputs, features, name=f"inception_v3_{variant.replace('-', '_')}")


# === Weights ===

_IGNORED_PREFIXES = ("fc.", "AuxLogits.")  # classifier heads: not part of the features


def check_weights_variant(state_dict: dict, variant: str, source: str) -> None:
    """Refuses the other variant's file, told apart by the classifier size (same conv shapes).

    Raises:
        CheckpointError: when `fc.weight` has the other variant's number of classes.
    """
    fc = state_dict.get("fc.weight")
    if fc is not None and fc.shape[0] != NUM_CLASSES[variant]:
        other = [name for name, count in NUM_CLASSES.items() if count == fc.shape[0]]
        hint = f" (it looks like the {other[0]} file)" if other else ""
        raise CheckpointError(
            f"{source} is not the {variant} Inception weights file{hint}: pass the file for "
            f"--features {variant}, or choose --features {other[0] if other else 'matching the file'}."
        )


def load_torch_inception_weights(model: keras.Model, state_dict: dict, variant: str, source: str) -> None:
    """Loads a torch Inception-v3 state dict into `build_inception_v3(variant)`, folding batch norm.

    For each conv: `kernel = W·s`, `bias = β − μ·s` with `s = γ / sqrt(σ² + 1e-3)`,
    computed in float64, so that `relu(conv(x) + bias)` is torch's conv → BN → ReLU.

    Args:
        model: from `build_inception_v3(variant)`.
        state_dict: `{key: array}` with torch's key names (`read_torch_state_dict`).
        variant: the model's variant; checks the file's classifier size.
        source: the file name, for error messages.

    Raises:
        CheckpointError: for missing, unexpected or mis-shaped tensors, or the
            other variant's weights file.
    """
    check_weights_variant(state_dict, variant, source)
    used = set()
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        prefix = layer.name
        keys = {part: f"{prefix}.{part}" for part in
                ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")}
        missing = [key for key in keys.values() if key not in state_dict]
        if missing:
            raise CheckpointError(
                f"{source} lacks {missing[0]} (and {len(missing) - 1} more of {prefix}): it is not an "
                f"Inception-v3 state dict for --features {variant}; download the right file."
            )
        weight = np.asarray(state_dict[keys["conv.weight"]], np.float64)  # [out, in, kh, kw]
        kernel_shape = tuple(layer.kernel.shape)  # [kh, kw, in, out]
        expected = (kernel_shape[3], kernel_shape[2], kernel_shape[0], kernel_shape[1])
        if weight.shape != expected:
            raise CheckpointError(
                f"{source}: {keys['conv.weight']} has shape {weight.shape}, expected {expected}: "
                f"the file does not match --features {variant}."
            )
        gamma, beta, mean, variance = (
            np.asarray(state_dict[keys[part]], np.float64).reshape(-1)
            for part in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")
        )
        if not all(vector.shape == (expected[0],) for vector in (gamma, beta, mean, variance)):
            raise CheckpointError(
                f"{source}: the batch norm of {prefix} does not have {expected[0]} channels: "
                f"the file does not match --features {variant}."
            )
        scale = gamma / np.sqrt(variance + BATCH_NORM_EPSILON)
        kernel = weight.transpose(2, 3, 1, 0) * scale
        layer.set_weights([kernel.astype(np.float32), (beta - mean * scale).astype(np.float32)])
        used.update(keys.values())
    unexpected = [
        key for key in state_dict
        if key not in used and not key.startswith(_IGNORED_PREFIXES) and not key.endswith(".num_batches_tracked")
    ]
    if unexpected:
        raise CheckpointError(
            f"{source} has {len(unexpected)} tensors that Inception-v3 lacks (first: {unexpected[0]}): "
            f"pass the Inception-v3 weights file for --features {variant}."
        )
