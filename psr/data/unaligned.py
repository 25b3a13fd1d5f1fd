"""Unpaired two-domain training data and the deterministic test-time loader.

Images are decoded and resized with PIL inside `tf.numpy_function`, because
TensorFlow's bicubic kernel differs from PIL's and the reference code resizes
with PIL (spec §7 pitfall 13). All randomness (A order, B choice, crop offsets,
flips) is drawn by tf.data ops in front of that function, so the Python part is
a pure function of its inputs: parallel decoding stays deterministic under a
seed, and every new iterator (one per Keras epoch) draws new values.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import tensorflow as tf
from PIL import Image

from psr.data.images import list_images, read_image, verify_images
from psr.data.layout import domain_letters
from psr.data.pixels import to_unit_range
from psr.errors import DatasetError
from psr.registry import DIRECTIONS, PREPROCESS_MODES

PHASES = ("train", "test")

# Upstream rounds every image side to a multiple of 4 (`__make_power_2`, base 4),
# so that two stride-2 downsamplings and upsamplings give back the input size.
_SIZE_MULTIPLE = 4


# === Pure PIL / NumPy transforms (the reference's `get_transform`) ===


def _resize_bicubic(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.BICUBIC)


def _scale_width(image: Image.Image, target_width: int, crop_size: int) -> Image.Image:
    # Upstream `__scale_width`: width -> target_width, height keeps the aspect
    # ratio but never drops below crop_size (truncated, not rounded).
    width, height = image.size
    if width == target_width and height >= crop_size:
        return image
    return _resize_bicubic(image, target_width, int(max(target_width * height / width, crop_size)))


def _round_to_multiple_of_4(image: Image.Image) -> Image.Image:
    width, height = image.size
    # Python's round() (half to even) as upstream.
    return _resize_bicubic(
        image,
        int(round(width / _SIZE_MULTIPLE) * _SIZE_MULTIPLE),
        int(round(height / _SIZE_MULTIPLE) * _SIZE_MULTIPLE),
    )


def rounded_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) after `preprocess none`'s rounding of each side to a multiple of 4."""
    return tuple(int(round(side / _SIZE_MULTIPLE) * _SIZE_MULTIPLE) for side in (width, height))


def _random_crop(image: Image.Image, crop_size: int, unit_x: float, unit_y: float) -> Image.Image:
    """Crops crop_size×crop_size at offsets drawn uniformly from [0, side - crop]."""
    width, height = image.size
    if width == crop_size and height == crop_size:
        return image
    left = min(int(unit_x * (width - crop_size + 1)), width - crop_size)
    top = min(int(unit_y * (height - crop_size + 1)), height - crop_size)
    return image.crop((left, top, left + crop_size, top + crop_size))




def transform_image(
    pixels: np.ndarray,
    preprocess: str,
    load_size: int,
    crop_size: int,
    random_values: np.ndarray,
    flip: bool,
) -> np.ndarray:
    """Applies one training transform to a uint8 image (reference `get_transform`).

    Args:
        pixels: uint8 `[height, width, 3]`.
        preprocess: one of `PREPROCESS_MODES`.
        load_size: resize target (`resize_and_crop`: both sides;
            `scale_width_and_crop`: the width).
        crop_size: side of the random square crop.
        random_values: three numbers in [0, 1): crop x, crop y, flip (flip when
            the third is < 0.5).
        flip: whether random horizontal flips are enabled.

    Returns:
        float32 `[crop_size, crop_size, 3]` in [-1, 1] (`none`: the image rounded
        to a multiple of 4 per side).
    """
    image = Image.fromarray(pixels)
    unit_x, unit_y, unit_flip = (float(value) for value in random_values)
    if preprocess == "resize_and_crop":
        image = _random_crop(_resize_bicubic(image, load_size, load_size), crop_size, unit_x, unit_y)
    elif preprocess == "scale_width_and_crop":
        image = _random_crop(_scale_width(image, load_size, crop_size), crop_size, unit_x, unit_y)
    elif preprocess == "crop":
        image = _random_crop(image, crop_size, unit_x, unit_y)
    image = _round_to_multiple_of_4(image)
    if flip and unit_flip < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return to_unit_range(np.asarray(image))


# === Training dataset ===


def check_loader_arguments(direction, phase, phases, preprocess, crop_size, load_size, batch_size,
                           max_dataset_size) -> None:
    """The argument checks shared by the unaligned and the aligned training data (`ValueError`s for code
    mistakes, a `DatasetError` for a setting the data cannot meet)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"`direction` must be one of {DIRECTIONS}. Received: direction={direction!r}")
    if phase not in phases:
        raise ValueError(f"`phase` must be one of {phases}. Received: phase={phase!r}")
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(
            f"`preprocess` must be one of {PREPROCESS_MODES}. Received: preprocess={preprocess!r}"
        )
    if not isinstance(crop_size, int) or crop_size <= 0 or crop_size % _SIZE_MULTIPLE:
        raise ValueError(f"`crop_size` must be a positive multiple of 4. Received: crop_size={crop_size}")
    if not isinstance(load_size, int) or load_size < crop_size:
        raise ValueError(
            f"`load_size` must be an integer >= crop_size ({crop_size}). Received: load_size={load_size}"
        )
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size}")
    if max_dataset_size is not None and max_dataset_size <= 0:
        raise ValueError(
            f"`max_dataset_size` must be positive or None. Received: max_dataset_size={max_dataset_size}"
        )
    if preprocess == "none" and batch_size != 1:
        raise DatasetError(
            f"preprocess 'none' keeps each image's own size, so batch_size must be 1 (got {batch_size}); "
            "set batch_size to 1 or use preprocess 'resize_and_crop'"
        )


class UnalignedDataset:
    """Unpaired images of two domains, as the reference `UnalignedDataset`.

    Reads `root/{phase}A` and `root/{phase}B` (swapped for `BtoA`, so `real_a`
    is always the source domain). One epoch has `max(num_a, num_b)` samples
    (rounded down to whole batches): the source images in a new random order
    every epoch (index modulo `num_a` when the target folder is larger), each
    paired with a target image drawn uniformly at random (unpaired training,
    spec §5). Source and target get independent crops and flips.

    `jitter` switches the crop jitter: while it is True, images are resized to
    `load_size` and randomly cropped to `crop_size`; once set to False (the
    reference does this during the learning-rate decay epochs) the resize target
    becomes `crop_size`, so `resize_and_crop` makes no crop (flips are kept). It
    is read when each image is processed, so a change applies to the next
    epoch's iterator without rebuilding the dataset.

    Args:
        root: dataset root holding trainA, trainB, testA, testB.
        direction: "AtoB" or "BtoA" (which folder is the source).
        phase: "train" or "test" (folder prefix).
        load_size: resize target before cropping.
        crop_size: side of the training crops; a multiple of 4.
        preprocess: "resize_and_crop" (resize to load_size², random crop),
            "crop" (random crop of the original image), "scale_width_and_crop"
            (width to load_size, keep aspect ratio, random crop) or "none"
            (whole image, sides rounded to a multiple of 4; batch_size 1 only).
        flip: random horizontal flips.
        batch_size: images per batch (incomplete last batch dropped).
        max_dataset_size: use at most this many (sorted) images per domain;
            None for all.
        seed: makes every random choice reproducible; None for fresh randomness.

    Raises:
        DatasetError: missing folders, no or unreadable images, a batch larger
            than the dataset, or images too small for `crop`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        direction: str = "AtoB",
        phase: str = "train",
        load_size: int = 286,
        crop_size: int = 256,
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        batch_size: int = 1,
        max_dataset_size: int | None = None,
        seed: int | None = None,
    ):
        # === Argument checks ===
        check_loader_arguments(direction, phase, PHASES, preprocess, crop_size, load_size, batch_size,
                               max_dataset_size)

        self.root = os.fspath(root)
        self.direction = direction
        self.phase = phase
        self.load_size = load_size
        self.crop_size = crop_size
        self.preprocess = preprocess
        self.flip = flip
        self.batch_size = batch_size
        self.max_dataset_size = max_dataset_size
        self.seed = seed

        # === Files ===
        source, target = domain_letters(direction)
        phase_words = "training" if phase == "train" else "test"
        self._paths_a = self._list(source, f"{phase_words} images of domain {source}, the source")
        self._paths_b = self._list(target, f"{phase_words} images of domain {target}, the target")
        verify_images(self._paths_a + self._paths_b)
        if preprocess == "crop":
            self._check_large_enough(self._paths_a + self._paths_b)
        if preprocess == "none":
            self._check_one_size(self._paths_a + self._paths_b)
        if self.steps_per_epoch == 0:
            largest = max(self.num_a, self.num_b)
            raise DatasetError(
                f"batch_size {batch_size} is larger than the dataset ({largest} images in the larger "
                f"domain under {self.root}); lower batch_size"
            )

        # A plain variable so that a callback can flip it between epochs without
        # retracing the input pipeline.
        self.jitter = tf.Variable(True, trainable=False, dtype=tf.bool, name="crop_jitter")

    def _list(self, domain: str, role: str) -> list[str]:
        paths = list_images(os.path.join(self.root, f"{self.phase}{domain}"), role=role)
        return paths if self.max_dataset_size is None else paths[: self.max_dataset_size]

    def _check_large_enough(self, paths: list[str]) -> None:
        for path in paths:
            with Image.open(path) as image:
                width, height = image.size
            if width < self.crop_size or height < self.crop_size:
                raise DatasetError(
                    f"Image {path} is {width}x{height}, smaller than crop_size {self.crop_size} needed by "
                    "preprocess 'crop'; use preprocess 'resize_and_crop' or a smaller crop_size"
                )

    def _check_one_size(self, paths: list[str]) -> None:
        """preprocess 'none' trains on whole images, so all must have one size (after rounding to 4)."""
        first = None
        for path in paths:
            with Image.open(path) as image:
                width, height = image.size
            size = rounded_size(width, height)
            if first is None:
                first = (path, width, height, size)
            elif size != first[3]:
                raise DatasetError(
                    f"preprocess 'none' needs images of one size, but {first[0]} is {first[1]}x{first[2]} and "
                    f"{path} is {width}x{height}; resize the images to one size or use preprocess 'resize_and_crop'"
                )

    # === Properties ===

    @property
    def paths_a(self) -> list[str]:
        """Sorted source-domain image paths."""
        return list(self._paths_a)

    @property
    def paths_b(self) -> list[str]:
        """Sorted target-domain image paths."""
        return list(self._paths_b)

    @property
    def num_a(self) -> int:
        """Number of source-domain images."""
        return len(self._paths_a)

    @property
    def num_b(self) -> int:
        """Number of target-domain images."""
        return len(self._paths_b)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch: `max(num_a, num_b) // batch_size`."""
        return max(self.num_a, self.num_b) // self.batch_size

    @property
    def image_shape(self) -> tuple[int | None, int | None, int]:
        """Shape of one image (`(None, None, 3)` for preprocess "none")."""
        if self.preprocess == "none":
            return (None, None, 3)
        return (self.crop_size, self.crop_size, 3)

    # === tf.data pipeline ===

    def _load_numpy(self, path: bytes, load_size: np.ndarray, random_values: np.ndarray) -> np.ndarray:
        return transform_image(
            read_image(path.decode("utf-8")),
            self.preprocess,
            int(load_size),
            self.crop_size,
            random_values,
            self.flip,
        )

    def _load(self, path: tf.Tensor, load_size: tf.Tensor, random_values: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(
            self._load_numpy, [path, load_size, random_values], tf.float32, stateful=False
        )
        return tf.ensure_shape(image, self.image_shape)

    def _load_pair(self, index_a: tf.Tensor, index_b: tf.Tensor, element_seed: tf.Tensor):
        # Three uniforms per image (crop x, crop y, flip), from a per-element seed so
        # that parallel decoding cannot change which image gets which numbers.
        random_values = tf.random.stateless_uniform(
            [2, 3], seed=tf.stack([element_seed, tf.constant(0, tf.int64)])
        )
        load_size = tf.where(self.jitter, self.load_size, self.crop_size)
        real_a = self._load(tf.gather(self._paths_a_tensor, index_a), load_size, random_values[0])
        real_b = self._load(tf.gather(self._paths_b_tensor, index_b), load_size, random_values[1])
        return real_a, real_b

    def dataset(self) -> tf.data.Dataset:
        """Returns one epoch of `(real_a, real_b)` batches.

        Each is float32 `[batch_size, crop_size, crop_size, 3]` in [-1, 1];
        there are exactly `steps_per_epoch` batches. Iterating the dataset again
        (Keras `fit` does so every epoch) draws a new A order, new B partners,
        crops and flips; with a `seed` the sequence of epochs is reproducible.
        """
        length = self.steps_per_epoch * self.batch_size
        seeds = (None, None, None) if self.seed is None else (self.seed, self.seed + 1, self.seed + 2)
        self._paths_a_tensor = tf.constant(self._paths_a)
        self._paths_b_tensor = tf.constant(self._paths_b)
        num_a = tf.constant(self.num_a, tf.int64)
        num_b = tf.constant(self.num_b, tf.int64)
        # Reference: a DataLoader shuffles range(length) and reads A[index % num_a].
        source_indices = (
            tf.data.Dataset.range(length)
            .shuffle(length, seed=seeds[0], reshuffle_each_iteration=True)
            .map(lambda index: index % num_a)
        )
        # Reference: random.randint(0, num_b - 1) for every sample.
        target_indices = tf.data.Dataset.random(seed=seeds[1], rerandomize_each_iteration=True).map(
            lambda value: value % num_b
        )
        element_seeds = tf.data.Dataset.random(seed=seeds[2], rerandomize_each_iteration=True)
        pairs = tf.data.Dataset.zip(source_indices, target_indices, element_seeds)
        return (
            pairs.map(self._load_pair, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(self.batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )


# === Test-time loading ===


def resize_for_test(pixels: np.ndarray, image_size: int | None) -> np.ndarray:
    """The test-time transform of one uint8 image: PIL bicubic to `image_size`² (None: each side rounded
    to a multiple of 4), then float32 in [-1, 1]. No crop, no flip."""
    image = Image.fromarray(pixels)
    if image_size is None:
        image = _round_to_multiple_of_4(image)
    else:
        image = _resize_bicubic(image, image_size, image_size)
    return to_unit_range(np.asarray(image))


def _make_test_loader(image_size: int | None) -> Callable[[bytes], np.ndarray]:
    def load(path: bytes) -> np.ndarray:
        return resize_for_test(read_image(path.decode("utf-8")), image_size)

    return load


def make_test_dataset(
    folder: str | os.PathLike, image_size: int | None = 256, batch_size: int = 1
) -> tuple[tf.data.Dataset, list[str]]:
    """Deterministic loader for generation and evaluation (reference `test.py`).

    Images are read in sorted order, never flipped or cropped, and resized with
    PIL bicubic to `image_size × image_size` (`load_size = crop_size` in the
    reference). With `image_size=None` each image keeps its size, rounded to a
    multiple of 4 per side as the reference's `preprocess none` does.

    Args:
        folder: folder of images (searched recursively).
        image_size: output side, or None to keep each image's size.
        batch_size: images per batch; the last batch may be smaller. Must be 1
            when `image_size` is None.

    Returns:
        `(dataset, paths)`: batches of float32 `[batch, size, size, 3]` in
        [-1, 1], and the image paths in the same order (to name outputs).
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise ValueError(
            f"`image_size` must be a positive integer or None. Received: image_size={image_size}"
        )
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size}")
    if image_size is None and batch_size != 1:
        raise DatasetError(
            f"Test images keep their own sizes when image_size is None, so batch_size must be 1 "
            f"(got {batch_size}); set batch_size to 1 or give an image_size"
        )
    paths = list_images(folder, role="test images")
    verify_images(paths)
    load = _make_test_loader(image_size)
    shape = (None, None, 3) if image_size is None else (image_size, image_size, 3)

    def load_tensor(path: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(load, [path], tf.float32, stateful=False)
        return tf.ensure_shape(image, shape)

    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(paths))
        .map(load_tensor, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    return dataset, paths
