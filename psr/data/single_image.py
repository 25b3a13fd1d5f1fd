"""Single-image training data (SinCUT): random zoomed crops of one image per domain.

Upstream CUT's `singleimage` dataset with `preprocess zoom_and_patch`
(spec §4.7): for every sample, and for each domain independently,

1. zoom factors z_w, z_h ~ U(1 / random_scale_max, 1), one per axis;
2. resize the image bilinearly to (round(max(crop, W z_w)), round(max(crop, H z_h)));
3. take a crop x crop window of the resized image;
4. flip it horizontally with probability 1/2; scale to [-1, 1].

Here steps 2-3 are one `tf.image.crop_and_resize` per batch: the box is the
source-image region that the window of the resized image covers, with
half-pixel centres, so the crop equals "resize with `tf.image.resize`
bilinear (no antialias), then crop" exactly, without resizing the whole image.

Differences from upstream, all deliberate:
- Window position: upstream tiles the resized image with a grid of
  non-overlapping crop cells at a random offset and picks cell
  `index mod #cells` from a shuffled permutation. Here the window's top-left
  corner is drawn uniformly among all pixel-aligned positions of the resized
  image, [0, size - crop] per axis. Both cover the resized image uniformly;
  only the grid alignment between samples is lost.
- Resampling: TF's bilinear kernel does not low-pass filter when shrinking,
  PIL's (upstream) does, so strongly zoomed-out crops (down to 1/3) are
  slightly sharper / more aliased than upstream's.
- Images smaller than the crop on an axis are first stretched to the crop
  size on that axis (bilinear); upstream's `max(crop, ...)` does the same
  during the zoom, so crops are identical in distribution.

All randomness comes from stateless ops keyed by a per-batch seed from
`tf.data.Dataset.random`, so a `seed` makes the sequence of epochs
reproducible and every new iterator (one per Keras epoch) draws new crops.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from psr.data.images import read_image
from psr.data.pixels import to_unit_range

DOMAINS = ("A", "B")

# Upstream `__make_power_2(base=4)` at test time: full images are rounded to a
# multiple of 4 per side, so two 2x downsamplings give back the input size.
_FULL_IMAGE_MULTIPLE = 4

# make_sample_pair: where each image goes under `root`, upstream's layout.
SAMPLE_PAIR_FILES = ("trainA/rocket_painting.png", "trainB/rocket_photo.png")




class SingleImageDataset:
    """Random zoomed, flipped crops of one source image and one target image.

    One epoch is `steps_per_epoch = epoch_length // batch_size` batches
    (upstream declares 100,000 samples, i.e. 6,250 batches of 16).

    Args:
        path_a: the source-domain image (the painting in SinCUT's Monet run).
        path_b: the target-domain image (the photograph).
        crop_size: side of the square crops (64 upstream); at least 4.
        batch_size: crops per batch (16 upstream).
        random_scale_max: zoom factors are drawn from U(1 / random_scale_max, 1)
            per axis (3 upstream); 1 disables zooming.
        flip: random horizontal flips (p = 0.5, per crop).
        epoch_length: samples per epoch (100,000 upstream).
        seed: makes every random choice reproducible; None for fresh randomness.

    Raises:
        DatasetError: an image is missing or cannot be decoded (the message
            names the file).
    """

    def __init__(
        self,
        path_a: str | os.PathLike,
        path_b: str | os.PathLike,
        crop_size: int = 64,
        batch_size: int = 16,
        random_scale_max: float = 3.0,
        flip: bool = True,
        epoch_length: int = 100_000,
        seed: int | None = None,
    ):
        # === Argument checks ===
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 4:
            raise ValueError(f"`crop_size` must be an integer >= 4. Received: crop_size={crop_size!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
        if isinstance(random_scale_max, bool) or not isinstance(random_scale_max, (int, float)) or not (
            random_scale_max >= 1.0
        ):
            raise ValueError(
                f"`random_scale_max` must be a number >= 1. Received: random_scale_max={random_scale_max!r}"
            )
        if isinstance(epoch_length, bool) or not isinstance(epoch_length, int) or epoch_length < batch_size:
            raise ValueError(
                f"`epoch_length` must be an integer >= batch_size ({batch_size}). "
                f"Received: epoch_length={epoch_length!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")

        self.path_a = os.fspath(path_a)
        self.path_b = os.fspath(path_b)
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.random_scale_max = float(random_scale_max)
        self.flip = bool(flip)
        self.epoch_length = epoch_length
        self.seed = seed

        # === Images (decoded once) ===
        self._pixels = {"A": read_image(self.path_a), "B": read_image(self.path_b)}
        self._sources = {domain: self._prepare(pixels) for domain, pixels in self._pixels.items()}

    # === Properties ===

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch: `epoch_length // batch_size`."""
        return self.epoch_length // self.batch_size

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one crop."""
        return (self.crop_size, self.crop_size, 3)

    def image_size(self, domain: str) -> tuple[int, int]:
        """(height, width) of the original image of `domain` ("A" or "B")."""
        height, width = self._pixels[self._check_domain(domain)].shape[:2]
        return height, width

    # === Crops ===

    def _prepare(self, pixels: np.ndarray) -> tf.Tensor:
        """[1, H', W', 3] float32 in [-1, 1]; sides below crop_size stretched to it."""
        image = tf.constant(to_unit_range(pixels))[None]
        height, width = pixels.shape[:2]
        target = (max(height, self.crop_size), max(width, self.crop_size))
        if target != (height, width):
            # Half-pixel bilinear with edge clamping, what upstream's zoom resize
            # does on an axis where max(crop, side * zoom) = crop > side.
            image = tf.image.resize(image, target, method="bilinear", antialias=False)
        return image

    def _windows(self, source_size: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
        """Box corners (y1, x1, y2, x2), in source pixels, of one window per sample.

        Args:
            source_size: float [2], (height, width) of the (prepared) source image.
            uniforms: [B, 4] uniforms in [0, 1): zoom h, zoom w, offset h, offset w.
        """
        crop = float(self.crop_size)
        min_zoom = 1.0 / self.random_scale_max
        zoom = min_zoom + (1.0 - min_zoom) * uniforms[:, 0:2]
        # Upstream: int(round(max(crop, side * zoom))); both round half to even.
        resized = tf.round(tf.maximum(crop, source_size * zoom))
        offset = tf.floor(uniforms[:, 2:4] * (resized - crop + 1.0))
        offset = tf.minimum(offset, resized - crop)
        step = source_size / resized
        # Resized pixel j has its centre at source coordinate (j + 0.5) * step - 0.5.
        start = (offset + 0.5) * step - 0.5
        end = (offset + crop - 0.5) * step - 0.5
        return tf.concat([start, end], axis=1)

    def _crop_domain(self, domain: str, seed: tf.Tensor) -> tf.Tensor:
        source = self._sources[domain]
        size = tf.cast(tf.shape(source)[1:3], tf.float32)
        uniforms = tf.random.stateless_uniform([self.batch_size, 5], seed=seed)
        corners = self._windows(size, uniforms[:, :4])
        # crop_and_resize takes corners normalised by (side - 1): sample i of
        # crop c lies at y1 + i (y2 - y1) / (c - 1), which is the resized grid.
        boxes = corners / tf.tile(size - 1.0, [2])
        crops = tf.image.crop_and_resize(
            source, boxes, tf.zeros([self.batch_size], tf.int32), [self.crop_size, self.crop_size], method="bilinear"
        )
        if self.flip:
            flipped = uniforms[:, 4] < 0.5
            crops = tf.where(flipped[:, None, None, None], tf.reverse(crops, axis=[2]), crops)
        return crops

    def _batch(self, batch_seed: tf.Tensor):
        seeds = [tf.stack([batch_seed, tf.constant(index, tf.int64)]) for index in range(len(DOMAINS))]
        return self._crop_domain("A", seeds[0]), self._crop_domain("B", seeds[1])

    def dataset(self) -> tf.data.Dataset:
        """Returns one epoch of `(real_a, real_b)` batches.

        Each is float32 `[batch_size, crop_size, crop_size, 3]` in [-1, 1];
        there are exactly `steps_per_epoch` batches. Iterating the dataset
        again (Keras `fit` does so every epoch) draws new crops; with a `seed`
        the sequence of epochs is reproducible.
        """
        return (
            tf.data.Dataset.random(seed=self.seed, rerandomize_each_iteration=True)
            .take(self.steps_per_epoch)
            .map(self._batch, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )

    # === Whole images ===

    def full_image(self, domain: str) -> np.ndarray:
        """The whole image of `domain` ("A" or "B"), float32 `[H, W, 3]` in [-1, 1].

        As upstream's test-time `preprocess none`: each side is rounded to the
        nearest multiple of 4 (half to even), resizing with PIL bilinear only
        when that changes the size (Monet's 1200x966 becomes 1200x968).
        """
        pixels = self._pixels[self._check_domain(domain)]
        height, width = pixels.shape[:2]
        new_height = max(_FULL_IMAGE_MULTIPLE, int(round(height / _FULL_IMAGE_MULTIPLE) * _FULL_IMAGE_MULTIPLE))
        new_width = max(_FULL_IMAGE_MULTIPLE, int(round(width / _FULL_IMAGE_MULTIPLE) * _FULL_IMAGE_MULTIPLE))
        if (new_height, new_width) != (height, width):
            pixels = np.asarray(Image.fromarray(pixels).resize((new_width, new_height), Image.BILINEAR))
        return to_unit_range(pixels)

    @staticmethod
    def _check_domain(domain: str) -> str:
        if domain not in DOMAINS:
            raise ValueError(f"`domain` must be one of {DOMAINS}. Received: domain={domain!r}")
        return domain


# === Built-in sample pair ===


def _painterly(pixels: np.ndarray) -> np.ndarray:
    """A flat-colour "painting" of a photo: TV smoothing, superpixel colours, posterised."""
    from skimage import color, restoration, segmentation, util

    image = util.img_as_float(pixels)
    # Total-variation smoothing flattens textures but keeps edges (brush areas).
    smooth = restoration.denoise_tv_chambolle(image, weight=0.12, channel_axis=-1)
    # Superpixel mean colours give patch-like strokes; mixing keeps some shading.
    segments = segmentation.slic(smooth, n_segments=1500, compactness=20, start_label=1)
    strokes = color.label2rgb(segments, smooth, kind="avg", bg_label=0)
    mixed = 0.6 * strokes + 0.4 * smooth
    levels = 10
    posterised = np.round(np.clip(mixed, 0.0, 1.0) * (levels - 1)) / (levels - 1)
    return np.round(posterised * 255.0).astype(np.uint8)


def _write_png_atomically(pixels: np.ndarray, path: str) -> None:
    from psr.rundir import atomic_write_file

    atomic_write_file(path, lambda stream: Image.fromarray(pixels).save(stream, format="PNG"))


def sample_pair_ready(root: str | os.PathLike) -> bool:
    """Whether `root` holds both images of the built-in pair."""
    return all(os.path.isfile(os.path.join(os.fspath(root), *name.split("/"))) for name in SAMPLE_PAIR_FILES)


def make_sample_pair(root: str | os.PathLike) -> tuple[str, str]:
    """Writes (or reuses) a built-in single-image pair under `root`; returns (path_a, path_b).

    Both come from scikit-image's bundled `skimage.data.rocket()` photograph
    (427x640, a launch pad at dusk), mirroring upstream's Monet painting and
    photo of the same cliffs seen from elsewhere:
    - A, `root/trainA/rocket_painting.png`: the left 384 columns, turned into a
      flat-colour painting (total-variation smoothing, SLIC superpixel
      colours, 10 levels per channel);
    - B, `root/trainB/rocket_photo.png`: the right 384 columns, untouched (the
      two views overlap by 128 columns).
    Each is 427x384, small enough for a few hundred SinCUT steps on a CPU.
    Files that exist are kept (delete them to regenerate); new files are
    written under a temporary name and renamed, so no half-written image is
    ever left. The painting depends on the scikit-image version.

    Args:
        root: destination folder (created if needed).

    Returns:
        The paths of the source (painting) and target (photo) images.
    """
    root = os.fspath(root)
    path_a, path_b = (os.path.join(root, *name.split("/")) for name in SAMPLE_PAIR_FILES)
    if os.path.isfile(path_a) and os.path.isfile(path_b):
        return path_a, path_b
    from skimage import data

    photo = data.rocket()
    width = 384
    if not os.path.isfile(path_a):
        _write_png_atomically(_painterly(photo[:, :width]), path_a)
    if not os.path.isfile(path_b):
        _write_png_atomically(np.ascontiguousarray(photo[:, -width:]), path_b)
    return path_a, path_b
