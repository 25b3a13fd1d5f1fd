"""FID/KID feature extractors by name, as the papers compute them (`eval.features`).

| name | network and weights | preprocessing of uint8 images | used by |
|---|---|---|---|
| `pytorch-fid` | FID Inception, `pt_inception-2015-12-05-6726825d.pth` | /255, bilinear resize to 299 (half-pixel, no antialias), ×2 − 1 | single-modal and compression papers (spec single_modal §6, compression §6) |
| `torchvision` | ImageNet Inception-v3, `inception_v3_google-*.pth` | PIL bilinear resize to 256×256, then to 299×299 (8-bit), /255, ImageNet mean/std | StarGAN v2 protocol (spec multimodal §6.2) |
| `keras-imagenet` | Keras' `InceptionV3` ImageNet weights | see `psr.metrics.features.InceptionFeatures` | psr before paper-comparable FID |

`auto` is the paper protocol of the method (`PAPER_FEATURES`) and needs its
weights file. Weights files are looked up in the given path (a file, or a
folder to search), then in torch's hub cache (`$TORCH_HOME/hub/checkpoints`,
default `~/.cache/torch/hub/checkpoints`) and in `~/.keras/models`.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from psr.errors import CheckpointError, ConfigError
from psr.metrics.features import (
    BatchedFeatures,
    FeatureExtractor,
    InceptionFeatures,
    _file_sha256,
)
from psr.metrics.fid_inception import (
    build_inception_v3,
    check_weights_variant,
    load_torch_inception_weights,
)
from psr.registry import FEATURE_EXTRACTORS

# The evaluation protocol of each paper application → the extractor its tables used.
PAPER_FEATURES = {"single_modal": "pytorch-fid", "compression": "pytorch-fid", "multimodal": "torchvision"}


@dataclass(frozen=True)
class WeightsFile:
    """Where a network's official weights come from."""

    file_name: str  # the official file name
    pattern: str  # glob that also accepts other releases of the same weights
    url: str


WEIGHTS_FILES = {
    "pytorch-fid": WeightsFile(
        "pt_inception-2015-12-05-6726825d.pth",
        "pt_inception-2015-12-05*.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    ),
    "torchvision": WeightsFile(
        "inception_v3_google-0cc3c7bd.pth",
        "inception_v3_google*.pth",
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    ),
}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# === Extractors ===


class TorchInceptionFeatures(BatchedFeatures):
    """Pool3 features (2048-d) of a torch Inception-v3 weights file; base of the two paper extractors.

    The Keras model is built and the weights read on the first call, so creating
    the extractor is cheap. Subclasses set `name`, `variant` and the input handling.

    Args:
        weights: path of the torch state dict (`.pth`).
        batch_size: images per forward pass, `>= 1`.

    Raises:
        CheckpointError: when `weights` does not exist (here), or cannot be read
            or does not match the network (on the first call).
    """

    name = ""
    variant = ""
    preprocessing_id = ""

    def __init__(self, weights: str | os.PathLike, batch_size: int = 50):
        super().__init__(batch_size)
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise CheckpointError(
                f"{self.name} weights file not found: {weights}. Download "
                f"{WEIGHTS_FILES[self.name].url} and pass it with --feature-weights PATH."
            )
        self.weights = weights

    def _compute_cache_key(self) -> str:
        digest = _file_sha256(self.weights)[:16]
        return f"{self.name}-inception_v3-pool3-sha256-{digest}-{self.preprocessing_id}"

    def _build(self) -> None:
        from psr.torch_weights import read_torch_state_dict

        state_dict = read_torch_state_dict(self.weights)
        source = os.path.basename(self.weights)
        check_weights_variant(state_dict, self.variant, source)  # before the slow build
        model = build_inception_v3(self.variant, image_size=299)
        load_torch_inception_weights(model, state_dict, self.variant, source)
        self._model = model
        self._forward = tf.function(
            lambda pixels: model(self._normalise(pixels), training=False),
            input_signature=[tf.TensorSpec([None, None, None, 3], self._forward_dtype)],
        )

    _forward_dtype = tf.float32

    def _normalise(self, pixels: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError


class PytorchFidFeatures(TorchInceptionFeatures):
    """pytorch-fid's features: its FID Inception on `pt_inception-2015-12-05-6726825d.pth`.

    Input handling of pytorch-fid's `InceptionV3(resize_input=True,
    normalize_input=True)`: uint8 → [0, 1] (ToTensor), `F.interpolate(size=299,
    mode="bilinear", align_corners=False)` (= TF's half-pixel bilinear resize
    without antialiasing), then `2x − 1`.
    """

    name = "pytorch-fid"
    variant = "pytorch-fid"
    preprocessing_id = "div255-bilinear299-noaa-pm1"
    _forward_dtype = tf.uint8

    def _normalise(self, pixels: tf.Tensor) -> tf.Tensor:
        pixels = tf.cast(pixels, tf.float32) / 255.0
        pixels = tf.image.resize(pixels, (299, 299), method="bilinear", antialias=False)
        return 2.0 * pixels - 1.0


class TorchvisionInceptionFeatures(TorchInceptionFeatures):
    """StarGAN v2's FID features: torchvision's ImageNet Inception-v3 (`inception_v3_google-*.pth`).

    Input handling of StarGAN v2's `get_eval_loader(imagenet_normalize=True)`:
    `transforms.Resize([256, 256])` and `Resize([299, 299])` on the PIL image
    (PIL bilinear, which antialiases when shrinking and rounds to 8 bits after
    each resize; an image already of the size is unchanged), `ToTensor`, and
    `Normalize` with the ImageNet mean/std. The network is called layer by layer,
    so torchvision's `transform_input` is not applied.
    """

    name = "torchvision"
    variant = "torchvision"
    preprocessing_id = "pil-bilinear256-bilinear299-imagenet-meanstd"
    _forward_dtype = tf.uint8

    def _host_preprocess(self, images: np.ndarray) -> np.ndarray:
        from PIL import Image

        resized = []
        for image in images:
            picture = Image.fromarray(image)
            for size in (256, 299):
                if picture.size != (size, size):
                    picture = picture.resize((size, size), Image.BILINEAR)
            resized.append(np.asarray(picture))
        return np.stack(resized)

    def _normalise(self, pixels: tf.Tensor) -> tf.Tensor:
        pixels = tf.cast(pixels, tf.float32) / 255.0
        return (pixels - tf.constant(_IMAGENET_MEAN)) / tf.constant(_IMAGENET_STD)


_EXTRACTOR_CLASSES = {"pytorch-fid": PytorchFidFeatures, "torchvision": TorchvisionInceptionFeatures}


# === Selection ===


def default_weight_folders() -> list[str]:
    """torch's hub cache and Keras' model folder, where downloads usually land."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch"
    )
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [os.path.join(torch_home, "hub", "checkpoints"), os.path.join(keras_home, "models")]


def find_weights_file(name: str, weights: str | os.PathLike | None = None) -> str | None:
    """The weights file of extractor `name`: `weights` if it is a file, else the first match of
    the official file name (then of any release) in `weights` (a folder) or the default folders."""
    spec = WEIGHTS_FILES[name]
    if weights is not None and os.path.isfile(weights):
        return os.fspath(weights)
    folders = [os.fspath(weights)] if weights is not None else default_weight_folders()
    for folder in folders:
        official = os.path.join(folder, spec.file_name)
        if os.path.isfile(official):
            return official
        matches = sorted(glob.glob(os.path.join(glob.escape(folder), spec.pattern)))
        if matches:
            return matches[0]
    return None


def resolve_feature_name(features: str, protocol: str = "single_modal") -> str:
    """`features` with `auto` replaced by the paper protocol's extractor."""
    if features not in FEATURE_EXTRACTORS:
        raise ConfigError(
            f"eval.features: {features!r} is not one of {', '.join(FEATURE_EXTRACTORS)}; pick one of them."
        )
    if features != "auto":
        return features
    if protocol not in PAPER_FEATURES:
        raise ValueError(f"Unknown protocol; valid: {', '.join(PAPER_FEATURES)}. Received: protocol={protocol!r}")
    return PAPER_FEATURES[protocol]


def make_feature_extractor(
    features: str = "auto",
    weights: str | os.PathLike | None = None,
    protocol: str = "single_modal",
    inception_weights: str | None = None,
    batch_size: int = 50,
) -> FeatureExtractor:
    """The extractor named by `eval.features` (see the module docstring).

    Args:
        features: `auto`, `pytorch-fid`, `torchvision` or `keras-imagenet`.
        weights: the extractor's weights: a file, or a folder to search
            (`eval.feature_weights`); `None` searches the default folders
            (Keras downloads its own for `keras-imagenet`).
        protocol: the method's evaluation protocol, for `auto`: `single_modal`,
            `compression` or `multimodal`.
        inception_weights: `eval.inception_weights`, the older key for the
            `keras-imagenet` weights file; used when `weights` is `None`.
        batch_size: images per forward pass.

    Raises:
        ConfigError: for an unknown name.
        CheckpointError: when the weights file is not found (one line naming the
            file and where to download it).
    """
    name = resolve_feature_name(features, protocol)
    if name == "keras-imagenet":
        return InceptionFeatures(weights=os.fspath(weights or inception_weights or "imagenet"), batch_size=batch_size)
    path = find_weights_file(name, weights)
    if path is None:
        spec = WEIGHTS_FILES[name]
        where = os.fspath(weights) if weights is not None else " or ".join(default_weight_folders())
        because = " (the paper protocol; --features keras-imagenet keeps Keras' weights)" if features == "auto" else ""
        raise CheckpointError(
            f"FID features {name}{because} need {spec.file_name}, not found in {where}: download "
            f"{spec.url} and pass it with --feature-weights PATH (eval.feature_weights) or put it in "
            f"{default_weight_folders()[0]}."
        )
    return _EXTRACTOR_CLASSES[name](path, batch_size=batch_size)


def extractor_name(extractor: FeatureExtractor) -> str:
    """The name results are tagged with: the extractor's `name`, else its class name."""
    return str(getattr(extractor, "name", "") or type(extractor).__name__)


__all__ = [
    "FEATURE_EXTRACTORS",
    "PAPER_FEATURES",
    "PytorchFidFeatures",
    "TorchInceptionFeatures",
    "TorchvisionInceptionFeatures",
    "WEIGHTS_FILES",
    "default_weight_folders",
    "extractor_name",
    "find_weights_file",
    "make_feature_extractor",
    "resolve_feature_name",
]
