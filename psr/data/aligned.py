"""Paired ("aligned") training data and the deterministic test-time loader (pix2pix `aligned` mode).

Every file of `root/<phase>` (phase train, val or test) holds one pair side by side: domain A on
the left half, domain B on the right half (compression spec §2; maps: A = satellite, B = map;
Cityscapes: A = photo, B = label colours). Both halves get the same transform with the same random
numbers, so a crop or flip of the source is the same crop or flip of its target.

As in `psr.data.unaligned`, images are decoded and transformed with PIL inside `tf.numpy_function`
(PIL's bicubic, as the reference), and all randomness (order, crop offsets, flips) is drawn by
tf.data ops in front of that pure function: deterministic under a seed, new draws every epoch.

Odd widths: both halves get `width // 2` columns (the last column is dropped). Upstream gives B
one column more, which its resize to `load_size`² absorbs; equal halves keep `crop` and `none`
exact, where upstream's two halves would differ in size.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import tensorflow as tf
from PIL import Image

from psr.data.images import list_images, read_image, verify_images
from psr.data.unaligned import check_loader_arguments, resize_for_test, rounded_size, transform_image
from psr.errors import DatasetError
from psr.registry import DIRECTIONS

PHASES = ("train", "val", "test")


# === Pure NumPy / PIL part ===


def split_pair(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Splits a uint8 `[height, width, 3]` A|B image at half width into (A, B), each `width // 2` wide."""
    half = pixels.shape[1] // 2
    return pixels[:, :half], pixels[:, half : 2 * half]


def source_and_target(pixels: np.ndarray, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) halves of an A|B image: (A, B) for AtoB, (B, A) for BtoA."""
    half_a, half_b = split_pair(pixels)
    return (half_a, half_b) if direction == "AtoB" else (half_b, half_a)


def transform_pair(
    pixels: np.ndarray,
    direction: str,
    preprocess: str,
    load_size: int,
    crop_size: int,
    random_values: np.ndarray,
    flip: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One training transform of an A|B image: `transform_image` on both halves with the same numbers.

    The halves have one size, so the same `random_values` (crop x, crop y, flip) give the same crop
    offsets and the same flip for both.

    Returns:
        (source, target), float32 `[crop_size, crop_size, 3]` in [-1, 1] each (`none`: the halves'
        size rounded to a multiple of 4).
    """
    source, target = source_and_target(pixels, direction)
    return tuple(
        transform_image(np.ascontiguousarray(half), preprocess, load_size, crop_size, random_values, flip)
        for half in (source, target)
    )


def _half_size(path: str) -> tuple[int, int]:
    """(width // 2, height) of an A|B file, from its header; refuses files narrower than 2 pixels."""
    with Image.open(path) as image:
        width, height = image.size
    if width < 2:
        raise DatasetError(
            f"Image {path} is {width}x{height}: a paired image holds A|B side by side and needs a width of at "
            "least 2; remove the file or replace it with an A|B image"
        )
    return width // 2, height


def _pair_paths(root: str, phase: str, max_dataset_size: int | None = None) -> list[str]:
    role = f"{phase} pairs, each file A|B side by side"
    paths = list_images(os.path.join(root, phase), role=role)
    paths = paths if max_dataset_size is None else paths[:max_dataset_size]
    verify_images(paths)
    return paths


# === Training dataset ===


class AlignedDataset:
    """Paired images in one folder, each file A|B side by side (the reference `AlignedDataset`).

    One epoch is every pair once in a new random order (rounded down to whole batches). Source and
    target are the two halves of one file (`BtoA`: B, the right half, is the source), with the same
    resize, crop and flip.

    `jitter` switches the crop jitter as `UnalignedDataset.jitter` does: once set to False (the
    reference's decay epochs) the resize target becomes `crop_size`, so `resize_and_crop` makes no
    crop; read per image, so a change applies to the next epoch's iterator.

    Args:
        root: dataset root holding `train/`, `val/` or `test/`.
        direction: "AtoB" (left half → right half) or "BtoA".
        phase: "train", "val" or "test" (the folder read).
        load_size: resize target of each half before cropping.
        crop_size: side of the training crops; a multiple of 4.
        preprocess: "resize_and_crop", "crop", "scale_width_and_crop" or "none" (whole halves, sides
            rounded to a multiple of 4; batch_size 1 only), as `UnalignedDataset`.
        flip: random horizontal flips (of both halves together).
        batch_size: pairs per batch (incomplete last batch dropped).
        max_dataset_size: use at most this many (sorted) files; None for all.
        seed: makes the order, crops and flips reproducible; None for fresh randomness.

    Raises:
        DatasetError: a missing folder, no or unreadable images, an image narrower than 2 pixels,
            halves too small for `crop`, halves of different sizes for `none`, or a batch larger
            than the dataset.
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
        self._paths = _pair_paths(self.root, phase, max_dataset_size)
        self._check_sizes()
        if self.steps_per_epoch == 0:
            raise DatasetError(
                f"batch_size {batch_size} is larger than the dataset ({self.num_pairs} pairs in "
                f"{os.path.join(self.root, phase)}); lower batch_size"
            )

        # A plain variable so that a callback can flip it between epochs without retracing the pipeline.
        self.jitter = tf.Variable(True, trainable=False, dtype=tf.bool, name="crop_jitter")

    def _check_sizes(self) -> None:
        first = None
        for path in self._paths:
            width, height = _half_size(path)
            if self.preprocess == "crop" and (width < self.crop_size or height < self.crop_size):
                raise DatasetError(
                    f"Image {path} has halves of {width}x{height}, smaller than crop_size {self.crop_size} needed "
                    "by preprocess 'crop'; use preprocess 'resize_and_crop' or a smaller crop_size"
                )
            if self.preprocess == "none":
                size = rounded_size(width, height)
                if first is None:
                    first = (path, width, height, size)
                elif size != first[3]:
                    raise DatasetError(
                        f"preprocess 'none' needs pairs of one size, but {first[0]} has halves of "
                        f"{first[1]}x{first[2]} and {path} of {width}x{height}; resize the images to one size "
                        "or use preprocess 'resize_and_crop'"
                    )

    # === Properties ===

    @property
    def paths(self) -> list[str]:
        """Sorted paths of the A|B files."""
        return list(self._paths)

    @property
    def num_pairs(self) -> int:
        """Number of pairs (files)."""
        return len(self._paths)

    @property
    def num_a(self) -> int:
        """Source images (one per pair); named as `UnalignedDataset`'s for the run's resolved config."""
        return self.num_pairs

    @property
    def num_b(self) -> int:
        """Target images (one per pair)."""
        return self.num_pairs

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch: `num_pairs // batch_size`."""
        return self.num_pairs // self.batch_size

    @property
    def image_shape(self) -> tuple[int | None, int | None, int]:
        """Shape of one image (`(None, None, 3)` for preprocess "none")."""
        if self.preprocess == "none":
            return (None, None, 3)
        return (self.crop_size, self.crop_size, 3)

    def describe(self) -> dict:
        """Sizes for the run's resolved config."""
        return {"train_pairs": self.num_pairs, "steps_per_epoch": self.steps_per_epoch}

    # === tf.data pipeline ===

    def _load_numpy(self, path: bytes, load_size: np.ndarray, random_values: np.ndarray):
        return transform_pair(
            read_image(path.decode("utf-8")), self.direction, self.preprocess, int(load_size), self.crop_size,
            random_values, self.flip,
        )

    def _load_pair(self, index: tf.Tensor, element_seed: tf.Tensor):
        # One set of three uniforms (crop x, crop y, flip) per pair, shared by both halves, from a
        # per-element seed so that parallel decoding cannot change which pair gets which numbers.
        random_values = tf.random.stateless_uniform([3], seed=tf.stack([element_seed, tf.constant(0, tf.int64)]))
        load_size = tf.where(self.jitter, self.load_size, self.crop_size)
        source, target = tf.numpy_function(
            self._load_numpy, [tf.gather(self._paths_tensor, index), load_size, random_values],
            (tf.float32, tf.float32), stateful=False,
        )
        return tf.ensure_shape(source, self.image_shape), tf.ensure_shape(target, self.image_shape)

    def dataset(self) -> tf.data.Dataset:
        """Returns one epoch of `(source, target)` batches.

        Each is float32 `[batch_size, crop_size, crop_size, 3]` in [-1, 1]; there are exactly
        `steps_per_epoch` batches. Iterating again (Keras `fit` does so every epoch) draws a new
        order, crops and flips; with a `seed` the sequence of epochs is reproducible.
        """
        length = self.steps_per_epoch * self.batch_size
        seeds = (None, None) if self.seed is None else (self.seed, self.seed + 1)
        self._paths_tensor = tf.constant(self._paths)
        # Reference: a DataLoader shuffles range(len(dataset)); the dropped remainder differs per epoch.
        indices = tf.data.Dataset.range(self.num_pairs).shuffle(
            self.num_pairs, seed=seeds[0], reshuffle_each_iteration=True
        ).take(length)
        element_seeds = tf.data.Dataset.random(seed=seeds[1], rerandomize_each_iteration=True)
        return (
            tf.data.Dataset.zip(indices, element_seeds)
            .map(self._load_pair, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(self.batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )


# === Test-time loading ===


def resolve_test_phase(root: str | os.PathLike, phase: str = "test") -> str:
    """The split the test loader reads: `phase`, or "val" when `phase` is "test" and `root/test` is absent
    (pix2pix's maps and Cityscapes ship train/val only)."""
    if phase not in PHASES:
        raise ValueError(f"`phase` must be one of {PHASES}. Received: phase={phase!r}")
    root = os.fspath(root)
    if phase == "test" and not os.path.isdir(os.path.join(root, "test")) and os.path.isdir(os.path.join(root, "val")):
        return "val"
    return phase


def _make_test_pair_loader(direction: str, image_size: int | None) -> Callable:
    def load(path: bytes) -> tuple[np.ndarray, np.ndarray]:
        source, target = source_and_target(read_image(path.decode("utf-8")), direction)
        return tuple(resize_for_test(np.ascontiguousarray(half), image_size) for half in (source, target))

    return load


def aligned_test_pairs(
    root: str | os.PathLike,
    phase: str = "test",
    direction: str = "AtoB",
    image_size: int | None = 256,
    batch_size: int = 1,
) -> tuple[tf.data.Dataset, list[str]]:
    """Deterministic paired loader for evaluation and sample grids (reference `test.py`, aligned mode).

    Files are read in sorted order, split into halves, never cropped or flipped, and each half is
    resized with PIL bicubic to `image_size × image_size` (None: each side rounded to a multiple
    of 4, batch_size 1). `phase` "test" falls back to "val" when `root/test` does not exist.

    Args:
        root: dataset root.
        phase: "test", "val" or "train".
        direction: "AtoB" (source = left half) or "BtoA" (source = right half).
        image_size: output side, or None to keep each half's size.
        batch_size: pairs per batch; the last batch may be smaller.

    Returns:
        `(dataset, paths)`: batches of `(source, target)`, float32 `[batch, size, size, 3]` in [-1, 1],
        and the file paths in the same order (to name outputs).

    Raises:
        DatasetError: a missing folder, no or unreadable images, an image narrower than 2 pixels, or
            `image_size` None with batch_size > 1.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"`direction` must be one of {DIRECTIONS}. Received: direction={direction!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise ValueError(f"`image_size` must be a positive integer or None. Received: image_size={image_size}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size}")
    if image_size is None and batch_size != 1:
        raise DatasetError(
            f"Test pairs keep their own sizes when image_size is None, so batch_size must be 1 (got {batch_size}); "
            "set batch_size to 1 or give an image_size"
        )
    root = os.fspath(root)
    paths = _pair_paths(root, resolve_test_phase(root, phase))
    for path in paths:
        _half_size(path)
    load = _make_test_pair_loader(direction, image_size)
    shape = (None, None, 3) if image_size is None else (image_size, image_size, 3)

    def load_tensors(path: tf.Tensor):
        source, target = tf.numpy_function(load, [path], (tf.float32, tf.float32), stateful=False)
        return tf.ensure_shape(source, shape), tf.ensure_shape(target, shape)

    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(paths))
        .map(load_tensors, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    return dataset, paths
