"""Image features for FID/KID: the Inception-v3 extractor and folder streaming.

Preprocessing of `InceptionFeatures` (fixed; part of its `cache_key`):

1. Images are read as uint8 RGB `[H, W, 3]`. That is the only quantisation:
   generated images are quantised when they are saved as 8-bit PNGs, and the
   resized values below stay float.
2. Cast to float32 and resize to 299×299 with `tf.image.resize(method="bilinear",
   antialias=False)`. TF2 uses half-pixel centres, which is the same sampling as
   PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` that
   pytorch-fid uses (no antialiasing in either).
3. `keras.applications.inception_v3.preprocess_input`: x / 127.5 − 1, i.e. [−1, 1],
   the range pytorch-fid also feeds its network.
4. `keras.applications.InceptionV3(include_top=False, pooling="avg")`: the 2048-d
   global-average-pooled output of the last mixed block ("pool3").

How the numbers relate to pytorch-fid (the paper's tool, spec §6): the
architecture, the resize and the input range match, but the weights do not.
pytorch-fid uses `pt_inception-2015-12-05`, a port of the 2015 TensorFlow graph of
the original FID code; Keras ships a later ImageNet training of Inception-v3. The
features differ, so these FID/KID are comparable with each other (same psr
version, same weights) but NOT with published pytorch-fid numbers. The papers'
own extractors (`pytorch-fid`, `torchvision`) are in `psr.metrics.extractors`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import uuid
from typing import Protocol, runtime_checkable

import keras
import numpy as np
import tensorflow as tf

from psr.errors import CheckpointError, DatasetError
from psr.metrics.distances import FeatureStatistics

INCEPTION_WEIGHTS_FILENAME = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_FEATURE_DIM = 2048


@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything that maps uint8 images to feature vectors.

    Attributes:
        cache_key: identifies the weights and the preprocessing; part of the
            cache key of folder statistics, so change it whenever the features
            would change.
    """

    cache_key: str

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Maps uint8 images `[B, H, W, 3]` (all the same size) to features `[B, d]`."""
        ...


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class BatchedFeatures(FeatureExtractor):
    """Shared machinery of psr's extractors: a lazily built `_forward` graph run batch by batch, and a
    cache key computed once (`_compute_cache_key`). Subclasses implement `_build` (setting `_forward`)."""

    feature_dim = INCEPTION_FEATURE_DIM

    def __init__(self, batch_size: int = 50):
        if batch_size < 1:
            raise ValueError(f"Argument `batch_size` must be >= 1. Received: batch_size={batch_size}")
        self.batch_size = int(batch_size)
        self._model: keras.Model | None = None
        self._forward = None
        self._cache_key: str | None = None

    @property
    def cache_key(self) -> str:
        if self._cache_key is None:
            self._cache_key = self._compute_cache_key()
        return self._cache_key

    def _compute_cache_key(self) -> str:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError

    def _host_preprocess(self, images: np.ndarray) -> np.ndarray:
        """Work done on the host before the graph (none by default)."""
        return images

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features `[B, feature_dim]` float32 of uint8 images `[B, H, W, 3]` of one size."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                "Expected uint8 images of shape [B, H, W, 3]. "
                f"Received: dtype={images.dtype}, shape={images.shape}"
            )
        if self._model is None:
            self._build()
        outputs = [
            self._forward(tf.constant(self._host_preprocess(images[start : start + self.batch_size]))).numpy()
            for start in range(0, images.shape[0], self.batch_size)
        ]
        if not outputs:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(outputs, axis=0).astype(np.float32)


class InceptionFeatures(BatchedFeatures):
    """Inception-v3 pool features (2048-d) of uint8 images, for FID and KID.

    The Keras model is built on the first call, not at construction, so that
    creating the extractor (e.g. while parsing options) is cheap.

    Args:
        weights: `"imagenet"` (Keras downloads
            `inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5` once into
            `~/.keras/models/`), a path to a local weights file (`.h5` as
            downloaded, or `.keras`/`.weights.h5`), or `None` for random weights
            (tests only: the features are meaningless).
        batch_size: images per forward pass, `>= 1`.
        image_size: side of the square network input, `>= 75`; 299 for FID.

    Raises:
        CheckpointError: when a local weights file does not exist (here), or
            when the weights cannot be downloaded or loaded (on the first call).
    """

    name = "keras-imagenet"  # the `eval.features` name; tags results

    def __init__(self, weights: str | None = "imagenet", batch_size: int = 50, image_size: int = 299):
        super().__init__(batch_size)
        if image_size < 75:
            # InceptionV3 has no spatial output left below 75×75.
            raise ValueError(f"Argument `image_size` must be >= 75. Received: image_size={image_size}")
        if weights is not None and weights != "imagenet":
            weights = os.fspath(weights)
            if not os.path.isfile(weights):
                raise CheckpointError(
                    f"Inception weights file not found: {weights}. Pass an existing file "
                    f"(e.g. {INCEPTION_WEIGHTS_FILENAME}) with --inception-weights PATH."
                )
        self.weights = weights
        self.image_size = int(image_size)

    def _compute_cache_key(self) -> str:
        if self.weights == "imagenet":
            weights_id = "keras-imagenet"
        elif self.weights is None:
            # Random weights differ per instance: never share a cache entry.
            weights_id = f"random-{uuid.uuid4().hex}"
        else:
            weights_id = f"sha256-{_file_sha256(self.weights)[:16]}"
        return f"inception_v3-pool-{weights_id}-{self.image_size}px-bilinear-noaa-uint8-pm1"

    def _build(self) -> None:
        input_shape = (self.image_size, self.image_size, 3)
        try:
            model = keras.applications.InceptionV3(
                include_top=False, weights=self.weights, input_shape=input_shape, pooling="avg"
            )
        except Exception as error:  # keras' get_file raises a bare Exception offline.
            if self.weights == "imagenet":
                raise CheckpointError(
                    f"Cannot download the ImageNet Inception-v3 weights ({_one_line(error)}): on a "
                    f"machine with internet download {INCEPTION_WEIGHTS_FILENAME} (Keras "
                    "applications) and pass it with --inception-weights PATH, or put it in "
                    "~/.keras/models/."
                ) from error
            raise CheckpointError(
                f"Cannot load Inception-v3 weights from {self.weights} ({_one_line(error)}): "
                f"pass the notop file {INCEPTION_WEIGHTS_FILENAME} with --inception-weights PATH."
            ) from error
        self._model = model
        size = (self.image_size, self.image_size)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def forward(images):
            pixels = tf.cast(images, tf.float32)
            pixels = tf.image.resize(pixels, size, method="bilinear", antialias=False)
            pixels = keras.applications.inception_v3.preprocess_input(pixels)
            return model(pixels, training=False)

        self._forward = forward


# === Folders ===


def _list_folder_images(folder: str) -> list[str]:
    from psr.data.images import list_images

    paths = list_images(folder, role="images to evaluate")
    if not paths:
        raise DatasetError(f"No images found in {folder}: add .png/.jpg images or fix the path.")
    return paths


def _features_of_paths(
    paths: list[str], extractor: FeatureExtractor, batch_size: int, progress: bool
) -> np.ndarray:
    from psr.data.images import read_image

    if batch_size < 1:
        raise ValueError(f"Argument `batch_size` must be >= 1. Received: batch_size={batch_size}")
    progress_bar = None
    if progress:
        # Progbar prints to sys.stdout; the bar goes to stderr to keep stdout for results.
        with contextlib.redirect_stdout(sys.stderr):
            progress_bar = keras.utils.Progbar(len(paths), unit_name="image")

    feature_blocks: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    done = 0

    def flush() -> None:
        nonlocal done
        if not pending:
            return
        features = np.asarray(extractor(np.stack(pending)))
        if features.ndim != 2 or features.shape[0] != len(pending):
            raise ValueError(
                f"The feature extractor must return [batch, d] for {len(pending)} images. "
                f"Received: shape {features.shape}"
            )
        feature_blocks.append(features.astype(np.float32))
        done += len(pending)
        pending.clear()
        if progress_bar is not None:
            with contextlib.redirect_stdout(sys.stderr):
                progress_bar.update(done)

    for path in paths:
        image = read_image(path)
        # A batch holds images of one size; a different size closes the batch, so
        # folders of mixed sizes work (in smaller batches).
        if pending and image.shape != pending[0].shape:
            flush()
        pending.append(image)
        if len(pending) == batch_size:
            flush()
    flush()
    return np.concatenate(feature_blocks, axis=0)


def folder_features(
    folder: str, extractor: FeatureExtractor, batch_size: int = 50, progress: bool = True
) -> np.ndarray:
    """Features of every image in `folder` (recursive, sorted paths), in path order.

    Images are read one at a time and passed to `extractor` in batches of up to
    `batch_size` consecutive images of the same size, so memory stays bounded for
    folders of any size and images of any size are handled.

    Args:
        folder: image folder.
        extractor: a `FeatureExtractor`, e.g. `InceptionFeatures()`.
        batch_size: images read per extractor call, `>= 1`.
        progress: show a `keras.utils.Progbar` on stderr.

    Returns:
        float32 array `[num_images, d]`.

    Raises:
        DatasetError: for a missing or empty folder, or an unreadable image.
    """
    folder = os.fspath(folder)
    return _features_of_paths(_list_folder_images(folder), extractor, batch_size, progress)


_CACHE_FORMAT = "psr-feature-statistics-v1"


def _folder_fingerprint(folder: str, paths: list[str], extractor: FeatureExtractor) -> str:
    """Hash of the folder content (names, sizes, mtimes) and the extractor's cache key."""
    digest = hashlib.sha256()
    digest.update(f"{_CACHE_FORMAT}\n{extractor.cache_key}\n".encode())
    for relative_name, path in sorted((os.path.relpath(path, folder), path) for path in paths):
        status = os.stat(path)
        digest.update(f"{relative_name}\t{status.st_size}\t{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def folder_statistics(
    folder: str,
    extractor: FeatureExtractor,
    cache_dir: str | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> FeatureStatistics:
    """`FeatureStatistics` of the images in `folder`, cached in `cache_dir`.

    The cache file is `cache_dir/<sha256>.npz`, where the hash covers the sorted
    relative file names, their sizes and modification times, and
    `extractor.cache_key`: adding, removing, rewriting or touching an image, or
    changing the extractor, gives a new entry. Writes are atomic; an unreadable
    cache file is recomputed and replaced.

    Args:
        folder: image folder.
        extractor: a `FeatureExtractor`.
        cache_dir: folder of cached statistics; `None` disables caching.
        batch_size: images per extractor call.
        progress: show a progress bar on stderr while computing.

    Raises:
        DatasetError: for a missing/empty folder, fewer than 2 images, or an
            unreadable image.
    """
    folder = os.fspath(folder)
    paths = _list_folder_images(folder)
    if len(paths) < 2:
        raise DatasetError(
            f"Feature statistics need at least 2 images, but {folder} has {len(paths)}: add images."
        )
    cache_path = None
    if cache_dir is not None:
        cache_path = os.path.join(
            os.fspath(cache_dir), _folder_fingerprint(folder, paths, extractor) + ".npz"
        )
        if os.path.isfile(cache_path):
            try:
                return FeatureStatistics.load_npz(cache_path)
            except DatasetError:
                pass  # A damaged cache entry is recomputed and overwritten below.
    statistics = FeatureStatistics.from_features(
        _features_of_paths(paths, extractor, batch_size, progress)
    )
    if cache_path is not None:
        statistics.save_npz(cache_path)
    return statistics
