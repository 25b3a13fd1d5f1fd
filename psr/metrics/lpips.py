"""LPIPS (learned perceptual image patch similarity, v0.1, AlexNet) as a Keras model.

The network is the one StarGAN v2's `metrics/lpips.py` evaluates with (spec
multimodal §6.3), which is the `lpips` package's `LPIPS(net="alex", version="0.1")`:

1. inputs in [-1, 1], shifted and scaled per channel: (x − shift) / scale with
   shift (−0.030, −0.088, −0.188), scale (0.458, 0.448, 0.450);
2. torchvision's AlexNet `features` (conv 64/11/4 pad 2, ReLU, maxpool 3/2,
   conv 192/5 pad 2, ReLU, maxpool 3/2, conv 384/3, ReLU, conv 256/3, ReLU,
   conv 256/3, ReLU); the five ReLU outputs are the taps;
3. per tap, each spatial feature vector is unit-normalised over channels,
   x · rsqrt(Σx² + 1e-10) (StarGAN v2; the `lpips` package divides by
   ‖x‖ + 1e-10 instead, which differs by < 1e-10/‖x‖ relative);
4. the squared difference goes through a 1×1 conv to one channel with
   non-negative weights and no bias (the v0.1 "lin" layers), is averaged over
   space, and the five layers are summed.

Weights: torchvision's `alexnet-owt-7be5be79.pth` (keys `features.{0,3,6,8,10}.*`)
and the `lpips` package's `lpips/weights/v0.1/alex.pth` (keys `lin{i}.model.1.weight`;
StarGAN v2's `metrics/lpips_weights.ckpt` holds the same floats under
`lpips_weights.{i}.main.1.weight`, also accepted).
"""

from __future__ import annotations

import itertools
import os
from typing import Sequence

import keras
import numpy as np
from keras import ops

from psr.errors import CheckpointError, DatasetError

ALEXNET_WEIGHTS_FILENAME = "alexnet-owt-7be5be79.pth"
LPIPS_WEIGHTS_FILENAME = "alex.pth"
ALEXNET_WEIGHTS_SOURCE = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LPIPS_WEIGHTS_SOURCE = "richzhang/PerceptualSimilarity lpips/weights/v0.1/alex.pth"

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# (torchvision `features` index, filters, kernel, stride, padding) of AlexNet's five convs.
_ALEXNET_CONVS = ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1), (8, 256, 3, 1, 1), (10, 256, 3, 1, 1))
# A 3×3 / 2 max pool follows the first two convs' ReLUs.
_POOL_AFTER = (0, 1)
TAP_CHANNELS = tuple(conv[1] for conv in _ALEXNET_CONVS)


@keras.saving.register_keras_serializable(package="psr")
class LPIPS(keras.Model):
    """LPIPS distance between two batches of images.

    Call it on `(x, y)`, two float tensors `[B, H, W, 3]` in [-1, 1] of the same
    shape (H, W ≥ 32 for AlexNet's strides); returns `[B]` distances.

    Formula:
        d(x, y) = Σ_l mean_hw( w_l · (x̂_l − ŷ_l)² ),  x̂_l = f_l(x) · rsqrt(Σ_c f_l(x)² + eps)

    Args:
        eps: added to the squared norm before the reciprocal square root.
    """

    def __init__(self, eps: float = 1e-10, **kwargs):
        super().__init__(**kwargs)
        if not eps >= 0:
            raise ValueError(f"Argument `eps` must be >= 0. Received: eps={eps}")
        self.eps = float(eps)
        self.convs = []
        self.pads = []
        for index, filters, kernel, stride, padding in _ALEXNET_CONVS:
            # Explicit zero padding: TF's "same" pads asymmetrically at stride 4.
            self.pads.append(keras.layers.ZeroPadding2D(padding, name=f"features_{index}_pad"))
            self.convs.append(
                keras.layers.Conv2D(filters, kernel, strides=stride, activation="relu", name=f"features_{index}")
            )
        self.pools = [keras.layers.MaxPooling2D(3, strides=2, name=f"pool_{i}") for i in _POOL_AFTER]
        self.lins = [
            keras.layers.Conv2D(1, 1, use_bias=False, name=f"lin{i}", trainable=False)
            for i in range(len(_ALEXNET_CONVS))
        ]
        self._shift = np.asarray(LPIPS_SHIFT, np.float32)
        self._scale = np.asarray(LPIPS_SCALE, np.float32)

    def build(self, input_shape):
        channels = 3
        for conv, lin in zip(self.convs, self.lins):
            conv.build((None, None, None, channels))
            channels = conv.filters
            lin.build((None, None, None, channels))
        self.built = True

    def features(self, images):
        """The five normalised AlexNet taps of images in [-1, 1]."""
        x = (images - self._shift) / self._scale
        taps = []
        for i, (pad, conv) in enumerate(zip(self.pads, self.convs)):
            x = conv(pad(x))
            taps.append(x * ops.rsqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + self.eps))
            if i in _POOL_AFTER:
                x = self.pools[_POOL_AFTER.index(i)](x)
        return taps

    def call(self, inputs):
        x, y = inputs
        x = ops.convert_to_tensor(x, "float32")
        y = ops.convert_to_tensor(y, "float32")
        distance = 0.0
        for lin, x_tap, y_tap in zip(self.lins, self.features(x), self.features(y)):
            distance = distance + ops.mean(lin(ops.square(x_tap - y_tap)), axis=(1, 2, 3))
        return distance

    def get_config(self):
        config = super().get_config()
        config.update({"eps": self.eps})
        return config


# === Weights ===


def _missing_file_error(path: str, what: str, filename: str, source: str, option: str) -> CheckpointError:
    return CheckpointError(
        f"{what} weights not found: {path}; download {filename} ({source}) and pass it with {option}"
    )


def _lin_weight(state_dict: dict, index: int) -> np.ndarray | None:
    for key in (f"lin{index}.model.1.weight", f"lpips_weights.{index}.main.1.weight"):
        if key in state_dict:
            return state_dict[key]
    return None


def load_lpips_weights(model: LPIPS, alexnet_path: str | os.PathLike, lin_path: str | os.PathLike) -> None:
    """Assigns torchvision AlexNet and LPIPS v0.1 lin weights (two `.pth` files) to `model`.

    Args:
        model: an `LPIPS` model (built here if needed).
        alexnet_path: torchvision `alexnet-owt-*.pth` (the `classifier.*` keys are ignored).
        lin_path: LPIPS `v0.1/alex.pth` or StarGAN v2's `lpips_weights.ckpt`.

    Raises:
        CheckpointError: a file is missing or unreadable, or a tensor is missing
            or mis-shaped (nothing is assigned then).
    """
    from psr.torch_weights import read_torch_state_dict

    alexnet_path, lin_path = os.fspath(alexnet_path), os.fspath(lin_path)
    if not os.path.isfile(alexnet_path):
        raise _missing_file_error(alexnet_path, "AlexNet", ALEXNET_WEIGHTS_FILENAME, ALEXNET_WEIGHTS_SOURCE,
                                  "--lpips-alexnet-weights (eval.lpips_alexnet_weights)")
    if not os.path.isfile(lin_path):
        raise _missing_file_error(lin_path, "LPIPS v0.1 lin", LPIPS_WEIGHTS_FILENAME, LPIPS_WEIGHTS_SOURCE,
                                  "--lpips-weights (eval.lpips_weights)")
    backbone = read_torch_state_dict(alexnet_path)
    lins = read_torch_state_dict(lin_path)
    if not model.built:
        model.build((None, None, None, 3))
    assignments = []
    for conv, (index, filters, kernel, _, _) in zip(model.convs, _ALEXNET_CONVS):
        in_channels = conv.kernel.shape[2]
        for suffix, shape in (("weight", (filters, in_channels, kernel, kernel)), ("bias", (filters,))):
            key = f"features.{index}.{suffix}"
            value = backbone.get(key)
            if value is None or tuple(value.shape) != shape:
                found = "missing" if value is None else f"shape {tuple(value.shape)}"
                raise CheckpointError(
                    f"{alexnet_path} is not torchvision's AlexNet: {key} is {found} (expected {shape}); "
                    f"pass {ALEXNET_WEIGHTS_FILENAME}"
                )
        # [out, in, kh, kw] -> Keras [kh, kw, in, out].
        assignments.append((conv.kernel, np.transpose(backbone[f"features.{index}.weight"], (2, 3, 1, 0))))
        assignments.append((conv.bias, backbone[f"features.{index}.bias"]))
    for i, (lin, channels) in enumerate(zip(model.lins, TAP_CHANNELS)):
        value = _lin_weight(lins, i)
        if value is None or tuple(value.shape) != (1, channels, 1, 1):
            found = "missing" if value is None else f"shape {tuple(value.shape)}"
            raise CheckpointError(
                f"{lin_path} is not an LPIPS v0.1 AlexNet lin file: lin{i}.model.1.weight is {found} "
                f"(expected (1, {channels}, 1, 1)); pass {LPIPS_WEIGHTS_FILENAME}"
            )
        assignments.append((lin.kernel, np.transpose(value, (2, 3, 1, 0))))
    for variable, value in assignments:
        variable.assign(np.asarray(value, np.float32))


def build_lpips(alexnet_weights: str | None, lin_weights: str | None) -> LPIPS:
    """An `LPIPS` model with the given weight files; `None` for both = random weights (tests only)."""
    model = LPIPS()
    model.build((None, None, None, 3))
    if alexnet_weights is None and lin_weights is None:
        return model
    load_lpips_weights(
        model,
        alexnet_weights if alexnet_weights is not None else ALEXNET_WEIGHTS_FILENAME,
        lin_weights if lin_weights is not None else LPIPS_WEIGHTS_FILENAME,
    )
    return model


# === Distances and diversity ===


def lpips_distances(model: LPIPS, x: np.ndarray, y: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Per-image LPIPS `[N]` of two float arrays `[N, H, W, 3]` in [-1, 1], in batches."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"Expected two [N, H, W, 3] arrays of one shape. Received: {x.shape} and {y.shape}")
    if batch_size < 1:
        raise ValueError(f"Argument `batch_size` must be >= 1. Received: batch_size={batch_size}")
    values = [
        ops.convert_to_numpy(model((x[i : i + batch_size], y[i : i + batch_size])))
        for i in range(0, x.shape[0], batch_size)
    ]
    return np.concatenate(values).astype(np.float64) if values else np.zeros((0,))


def lpips_diversity(model: LPIPS, outputs: Sequence[np.ndarray], batch_size: int = 16) -> float:
    """StarGAN v2's diversity score: mean LPIPS over all unordered pairs of K outputs.

    `outputs[k]` holds the k-th output `[N, H, W, 3]` (in [-1, 1]) for the same N
    inputs; each pair's LPIPS is averaged over the N images, then over the
    K(K−1)/2 pairs (spec multimodal §6.1; 45 pairs for K = 10).
    """
    if len(outputs) < 2:
        raise ValueError(f"Diversity needs at least 2 outputs per input. Received: {len(outputs)} outputs")
    pair_means = [
        float(np.mean(lpips_distances(model, outputs[i], outputs[j], batch_size)))
        for i, j in itertools.combinations(range(len(outputs)), 2)
    ]
    return float(np.mean(pair_means))


def images_to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [-1, 1] (x / 127.5 − 1), the range LPIPS takes."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def folder_lpips(model: LPIPS, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> float:
    """Mean LPIPS over (generated, reference) image file pairs.

    A reference of another size is resized to the generated image's size with
    PIL bicubic (the resize the test inputs got before translation).
    """
    from PIL import Image

    from psr.data.images import read_image

    if not pairs:
        raise DatasetError("LPIPS has no image pairs to compare: check the folders")
    values = []
    pending_x, pending_y = [], []

    def flush():
        if pending_x:
            values.extend(lpips_distances(model, np.stack(pending_x), np.stack(pending_y), batch_size))
            pending_x.clear()
            pending_y.clear()

    for generated_path, reference_path in pairs:
        generated = read_image(generated_path)
        reference = read_image(reference_path)
        if reference.shape != generated.shape:
            size = (generated.shape[1], generated.shape[0])
            reference = np.asarray(Image.fromarray(reference).resize(size, Image.BICUBIC))
        if pending_x and generated.shape != pending_x[0].shape:
            flush()
        pending_x.append(images_to_unit_range(generated))
        pending_y.append(images_to_unit_range(reference))
        if len(pending_x) == batch_size:
            flush()
    flush()
    return float(np.mean(values))
