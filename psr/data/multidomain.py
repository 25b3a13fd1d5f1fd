"""Multi-domain training and validation data for StarGAN v2-style translation (spec multimodal.md §5, §6.1).

Layout: `<root>/train/<domain>/*` and `<root>/val/<domain>/*` (PNG or JPEG, any case, sub-folders
searched). The domains are the folder names in sorted order; a domain's label is its position.

Training data is a pure function of `(seed, global step)`: element n of the source stream and of the
reference stream each draw their own numbers from stateless ops seeded with `(seed, stream, n)`. So a
pipeline built again with the same seed gives the same batches, and `start_step=k` continues exactly
where a run stopped after k iterations (no iterator state to checkpoint).

Images are decoded with `psr.data.images.read_image` and resized with PIL bilinear (antialiased, as
torchvision resizes PIL images); the crop box follows torchvision's `RandomResizedCrop.get_params` and
is computed in graph from stateless uniforms, so parallel decoding cannot change which image gets
which numbers.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from psr.data.images import list_images, read_image, verify_images
from psr.data.pixels import to_unit_range
from psr.errors import DatasetError

SPLITS = ("train", "val")
# The official loader globs png, jpg, jpeg and JPG; psr accepts every case of those.
MULTIDOMAIN_EXTENSIONS = (".png", ".jpg", ".jpeg")

# torchvision RandomResizedCrop defaults as StarGAN v2 sets them (data_loader.py).
CROP_SCALE = (0.8, 1.0)
CROP_RATIO = (0.9, 1.1)
CROP_TRIES = 10
CROP_PROBABILITY = 0.5
FLIP_PROBABILITY = 0.5

# Independent random streams of one seed (the third seed word keeps them apart).
_SOURCE_STREAM = 1
_REFERENCE_STREAM = 2
# Uniforms per augmented image: 4 per crop try (area, log-ratio, top, left), crop-or-not, flip.
_AUGMENT_UNIFORMS = 4 * CROP_TRIES + 2


class Domain(NamedTuple):
    """One domain: its folder name and its sorted image files. The label is its index in the list."""

    name: str
    files: list[str]


# === Discovery ===


def _domain_folders(split_root: str) -> list[str]:
    return sorted(
        name
        for name in os.listdir(split_root)
        if not name.startswith(".") and name != "__MACOSX" and os.path.isdir(os.path.join(split_root, name))
    )


def _domain_images(folder: str, role: str) -> list[str]:
    try:
        found = list_images(folder, role=role)
    except DatasetError:
        found = []
    images = [path for path in found if path.lower().endswith(MULTIDOMAIN_EXTENSIONS)]
    if not images:
        raise DatasetError(
            f"Domain folder {folder} holds no PNG or JPEG image; add images there or remove the folder"
        )
    return images


def discover_domains(
    root: str | os.PathLike, split: str = "train", num_domains: Optional[int] = None, verify: bool = True
) -> list[Domain]:
    """Lists the domains of `<root>/<split>/` and their images.

    Args:
        root: dataset root holding `train/` and `val/`.
        split: "train" or "val".
        num_domains: the expected number of domains; None accepts any number ≥ 2.
        verify: check that every image can be decoded (`psr.data.images.verify_images`).

    Returns:
        `[Domain(name, files), ...]` sorted by name; the label of a domain is its position.

    Raises:
        DatasetError: missing root or split folder, a domain count other than `num_domains`, an
            empty domain, domain names that differ between train/ and val/, or an unreadable image.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    if num_domains is not None and (not isinstance(num_domains, int) or num_domains < 2):
        raise ValueError(f"`num_domains` must be an integer >= 2 or None. Received: num_domains={num_domains!r}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(
            f"Dataset root not found: {root}; point data.root at a folder holding train/<domain>/ and val/<domain>/"
        )
    split_root = os.path.join(root, split)
    if not os.path.isdir(split_root):
        raise DatasetError(
            f"Dataset root {root} has no {split}/ folder; expected {root}/{split}/<domain>/ with one folder per domain"
        )
    names = _domain_folders(split_root)
    expected = num_domains if num_domains is not None else 2
    if (num_domains is not None and len(names) != num_domains) or len(names) < expected:
        found = ", ".join(names) if names else "none"
        wanted = f"{num_domains}" if num_domains is not None else "at least 2"
        raise DatasetError(
            f"{split_root} holds {len(names)} domain folders ({found}) but {wanted} are expected; "
            "add or remove domain folders or change the number of domains"
        )
    other = os.path.join(root, "val" if split == "train" else "train")
    if os.path.isdir(other):
        other_names = _domain_folders(other)
        if other_names != names:
            raise DatasetError(
                f"Domain folders differ between {split_root} ({', '.join(names)}) and {other} "
                f"({', '.join(other_names) or 'none'}); give train/ and val/ the same domain folder names"
            )
    role = "training" if split == "train" else "validation"
    domains = [
        Domain(name, _domain_images(os.path.join(split_root, name), f"{role} images of domain {name}"))
        for name in names
    ]
    if verify:
        verify_images(path for domain in domains for path in domain.files)
    return domains


def steps_per_epoch(domains: Sequence[Domain], batch_size: int) -> int:
    """Iterations per epoch: the number of training images // batch_size (the last batch is dropped)."""
    return sum(len(domain.files) for domain in domains) // batch_size


# === Augmentation ===


def random_resized_crop_box(height, width, uniforms, scale=CROP_SCALE, ratio=CROP_RATIO):
    """The crop box of torchvision's `RandomResizedCrop.get_params`, from pre-drawn uniforms.

    Try t (of `CROP_TRIES`) uses `uniforms[t] = (u_area, u_ratio, u_top, u_left)`: area fraction
    `scale[0] + u_area·(scale[1] − scale[0])`, aspect ratio `exp(log r0 + u_ratio·(log r1 − log r0))`,
    `w = round(sqrt(area·ratio))`, `h = round(sqrt(area/ratio))` (half to even, as Python's round);
    the first try with `0 < w ≤ width` and `0 < h ≤ height` wins, with `top = ⌊u_top·(height − h + 1)⌋`
    and `left = ⌊u_left·(width − w + 1)⌋` (torch.randint's range). Without one, the centre crop of the
    largest box whose aspect ratio is clamped into `ratio`.

    Args:
        height, width: image size (scalar int tensors).
        uniforms: float `[CROP_TRIES, 4]` in [0, 1).

    Returns:
        int32 `[4]`: top, left, crop height, crop width.
    """
    height64 = tf.cast(height, tf.float64)
    width64 = tf.cast(width, tf.float64)
    uniforms = tf.cast(uniforms, tf.float64)
    area = height64 * width64
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    target_area = area * (scale[0] + uniforms[:, 0] * (scale[1] - scale[0]))
    aspect = tf.exp(log_low + uniforms[:, 1] * (log_high - log_low))
    crop_w = tf.round(tf.sqrt(target_area * aspect))
    crop_h = tf.round(tf.sqrt(target_area / aspect))
    valid = (crop_w > 0) & (crop_w <= width64) & (crop_h > 0) & (crop_h <= height64)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
    h_try, w_try = crop_h[first], crop_w[first]
    top_try = tf.minimum(tf.floor(uniforms[first, 2] * (height64 - h_try + 1)), height64 - h_try)
    left_try = tf.minimum(tf.floor(uniforms[first, 3] * (width64 - w_try + 1)), width64 - w_try)

    # Fallback: the whole image, its aspect ratio clamped into [ratio[0], ratio[1]], centred.
    in_ratio = width64 / height64
    w_centre = tf.where(
        in_ratio < ratio[0], width64, tf.where(in_ratio > ratio[1], tf.round(height64 * ratio[1]), width64)
    )
    h_centre = tf.where(
        in_ratio < ratio[0], tf.round(width64 / ratio[0]), height64
    )
    top_centre = tf.floor((height64 - h_centre) / 2)
    left_centre = tf.floor((width64 - w_centre) / 2)

    found = tf.reduce_any(valid)
    box = tf.where(
        found,
        tf.stack([top_try, left_try, h_try, w_try]),
        tf.stack([top_centre, left_centre, h_centre, w_centre]),
    )
    return tf.cast(box, tf.int32)


def _resize_bilinear(image: Image.Image, image_size: int) -> Image.Image:
    # PIL returns a copy when the size already matches, as torchvision's Resize then does.
    return image.resize((image_size, image_size), Image.BILINEAR)


def _crop_resize_numpy(pixels: np.ndarray, box: np.ndarray, image_size: np.ndarray) -> np.ndarray:
    top, left, height, width = (int(value) for value in box)
    image = Image.fromarray(pixels).crop((left, top, left + width, top + height))
    return np.asarray(_resize_bilinear(image, int(image_size)))


def _path_text(path) -> str:
    # Graph mode hands numpy_function bytes; eager mode a 0-d object array holding them.
    return (path.item() if isinstance(path, np.ndarray) else path).decode("utf-8")


def _decode_numpy(path) -> np.ndarray:
    return read_image(_path_text(path))


def _decode(path: tf.Tensor) -> tf.Tensor:
    pixels = tf.numpy_function(_decode_numpy, [path], tf.uint8, stateful=False)
    return tf.ensure_shape(pixels, (None, None, 3))


def augment_image(path: tf.Tensor, image_size: int, uniforms: tf.Tensor, crop_probability: float = CROP_PROBABILITY,
                  flip: bool = True) -> tf.Tensor:
    """Reads one training image and applies the StarGAN v2 train transform (spec §5).

    With probability 0.5 (`uniforms[-2] < 0.5`) a random-resized crop (`random_resized_crop_box`
    on `uniforms[:-2]`), then a bilinear resize to `image_size²` (PIL, antialiased; aspect not kept),
    a horizontal flip with probability 0.5 (`uniforms[-1] < 0.5`) and scaling to [-1, 1].

    Args:
        path: scalar string tensor.
        image_size: output side.
        uniforms: float32 `[4·CROP_TRIES + 2]` in [0, 1).
        crop_probability: probability of the random-resized crop (`data.random_resized_crop`; 0.5 official).
        flip: allow the horizontal flip (`data.flip`).

    Returns:
        float32 `[image_size, image_size, 3]` in [-1, 1].
    """
    pixels = _decode(path)
    shape = tf.shape(pixels)
    crop_box = random_resized_crop_box(shape[0], shape[1], tf.reshape(uniforms[: 4 * CROP_TRIES], [CROP_TRIES, 4]))
    whole = tf.stack([0, 0, shape[0], shape[1]])
    box = tf.where(uniforms[-2] < crop_probability, crop_box, whole)
    resized = tf.numpy_function(
        _crop_resize_numpy, [pixels, box, tf.constant(image_size, tf.int32)], tf.uint8, stateful=False
    )
    resized = tf.ensure_shape(resized, (image_size, image_size, 3))
    if flip:
        resized = tf.cond(uniforms[-1] < FLIP_PROBABILITY, lambda: tf.reverse(resized, axis=[1]), lambda: resized)
    return to_unit_range(resized)


# === Training streams ===


class _FileTable:
    """Every training file in one flat list (domains in label order), with per-domain offsets and sizes."""

    def __init__(self, domains: Sequence[Domain]):
        if len(domains) < 2:
            raise DatasetError(f"Multi-domain data needs at least 2 domains, got {len(domains)}; add domain folders")
        self.paths = [path for domain in domains for path in domain.files]
        self.sizes = np.array([len(domain.files) for domain in domains], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.labels = np.repeat(np.arange(len(domains), dtype=np.int32), self.sizes)

    def tensors(self):
        return (tf.constant(self.paths), tf.constant(self.sizes), tf.constant(self.offsets))


def _check_arguments(domains: Sequence[Domain], image_size: int, batch_size: int, seed: int, start_step: int) -> None:
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"`image_size` must be a positive integer. Received: image_size={image_size!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    if not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"`start_step` must be a non-negative integer. Received: start_step={start_step!r}")
    if steps_per_epoch(domains, batch_size) == 0:
        total = sum(len(domain.files) for domain in domains)
        raise DatasetError(
            f"batch_size {batch_size} is larger than the {total} training images of all domains; lower batch_size"
        )


def _element_seeds(seed: int, stream: int, index: tf.Tensor, count: int) -> tf.Tensor:
    """`count` independent stateless seeds for element `index` of `stream`."""
    base = tf.stack([tf.constant(seed, tf.int64) * 4 + stream, tf.cast(index, tf.int64)])
    return tf.random.experimental.stateless_split(base, num=count)


def _sample_balanced(seeds: tf.Tensor, sizes: tf.Tensor, offsets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(flat file index, label): a domain uniformly, then a file of it uniformly (weight 1/|domain|)."""
    num_domains = tf.shape(sizes, out_type=tf.int64)[0]
    label = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=num_domains, dtype=tf.int64)
    within = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=sizes[label], dtype=tf.int64)
    return offsets[label] + within, tf.cast(label, tf.int32)


def _indices(start_step: int, batch_size: int, num_steps: Optional[int]) -> tf.data.Dataset:
    start = start_step * batch_size
    stop = None if num_steps is None else start + num_steps * batch_size
    if stop is None:
        return tf.data.Dataset.counter(start)
    return tf.data.Dataset.range(start, stop)


def source_dataset(
    domains: Sequence[Domain],
    image_size: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    num_steps: Optional[int] = None,
    augment: bool = True,
    crop_probability: float = CROP_PROBABILITY,
    flip: bool = True,
) -> tf.data.Dataset:
    """Source batches `(x, y_org)`: class-balanced sampling with replacement (spec §5 source loader).

    Each image is drawn independently: a domain with probability 1/num_domains, then one of its
    files uniformly (the official per-image weight 1/|domain|), then augmented (`augment_image`).

    Args:
        domains: `discover_domains(root, "train")`.
        image_size: output side.
        batch_size: images per batch (incomplete batches never occur: the stream is cut in whole batches).
        seed: non-negative integer; with `start_step` it fixes every batch.
        start_step: index of the first batch (resume after this many iterations).
        num_steps: number of batches; None for an endless stream.
        augment: apply the random crop/flip; False only resizes.
        crop_probability, flip: as `augment_image`.

    Returns:
        Dataset of `(x, y_org)`: float32 `[batch_size, image_size, image_size, 3]` in [-1, 1] and
        int32 `[batch_size]` domain labels.
    """
    _check_arguments(domains, image_size, batch_size, seed, start_step)
    table = _FileTable(domains)
    paths, sizes, offsets = table.tensors()

    def load(index):
        seeds = _element_seeds(seed, _SOURCE_STREAM, index, 3)
        file_index, label = _sample_balanced(seeds, sizes, offsets)
        image = _load_training_image(tf.gather(paths, file_index), image_size, seeds[2], augment,
                                     crop_probability, flip)
        return image, label

    return _batched(_indices(start_step, batch_size, num_steps).map(load, num_parallel_calls=tf.data.AUTOTUNE),
                    batch_size)


def reference_partners(domains: Sequence[Domain], seed: int) -> np.ndarray:
    """The fixed partner of every training file (flat index → flat index, same domain).

    A seeded random permutation of each domain's file list, made once (the official reference
    loader's `random.sample(fnames, len(fnames))`); a file can be its own partner.
    """
    table = _FileTable(domains)
    rng = np.random.RandomState([seed, _REFERENCE_STREAM])
    partners = np.empty(len(table.paths), np.int64)
    for offset, size in zip(table.offsets, table.sizes):
        partners[offset : offset + size] = offset + rng.permutation(size)
    return partners


def reference_dataset(
    domains: Sequence[Domain],
    image_size: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    num_steps: Optional[int] = None,
    augment: bool = True,
    crop_probability: float = CROP_PROBABILITY,
    flip: bool = True,
) -> tf.data.Dataset:
    """Reference batches `(x_ref, x_ref2, y_trg)` (spec §5 reference loader).

    x_ref is drawn as in `source_dataset` (its own random stream); x_ref2 is x_ref's fixed partner
    (`reference_partners(domains, seed)`), from the same domain; the two are augmented
    independently. y_trg is their domain label. Arguments as `source_dataset`.
    """
    _check_arguments(domains, image_size, batch_size, seed, start_step)
    table = _FileTable(domains)
    paths, sizes, offsets = table.tensors()
    partners = tf.constant(reference_partners(domains, seed))

    def load(index):
        seeds = _element_seeds(seed, _REFERENCE_STREAM, index, 4)
        file_index, label = _sample_balanced(seeds, sizes, offsets)
        x_ref = _load_training_image(tf.gather(paths, file_index), image_size, seeds[2], augment, crop_probability, flip)
        x_ref2 = _load_training_image(tf.gather(paths, tf.gather(partners, file_index)), image_size, seeds[3], augment,
                                      crop_probability, flip)
        return x_ref, x_ref2, label

    return _batched(_indices(start_step, batch_size, num_steps).map(load, num_parallel_calls=tf.data.AUTOTUNE),
                    batch_size)


def training_dataset(
    domains: Sequence[Domain],
    image_size: int,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    num_steps: Optional[int] = None,
    augment: bool = True,
    crop_probability: float = CROP_PROBABILITY,
    flip: bool = True,
) -> tf.data.Dataset:
    """One element per training iteration: `((x, y_org), (x_ref, x_ref2, y_trg))`.

    - `x`: float32 `[B, S, S, 3]` in [-1, 1], source images; `y_org`: int32 `[B]`, their labels.
    - `x_ref`, `x_ref2`: float32 `[B, S, S, 3]`, reference images and their fixed same-domain
      partners; `y_trg`: int32 `[B]`, the reference (target) labels. y_trg may equal y_org.

    A Keras `train_step(self, data)` unpacks it as `(x, y_org), (x_ref, x_ref2, y_trg) = data`.
    Element k is a pure function of `(seed, start_step + k)`: pass `start_step` = the completed
    iterations to resume. With `num_steps=None` the stream is endless: give `fit` a
    `steps_per_epoch` (e.g. `steps_per_epoch(domains, batch_size)`). Arguments as `source_dataset`.
    """
    source = source_dataset(domains, image_size, batch_size, seed, start_step, num_steps, augment,
                            crop_probability, flip)
    reference = reference_dataset(domains, image_size, batch_size, seed, start_step, num_steps, augment,
                                  crop_probability, flip)
    return tf.data.Dataset.zip(source, reference)


def _load_training_image(path: tf.Tensor, image_size: int, seed: tf.Tensor, augment: bool,
                         crop_probability: float = CROP_PROBABILITY, flip: bool = True) -> tf.Tensor:
    if augment:
        uniforms = tf.random.stateless_uniform([_AUGMENT_UNIFORMS], seed, dtype=tf.float32)
        return augment_image(path, image_size, uniforms, crop_probability, flip)
    return _load_resized(path, image_size)


def _batched(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


class MultiDomainTrainingData:
    """The training data object of a multi-domain experiment (builder contract of psr.data.builders).

    Args:
        root: dataset root (`train/<domain>/`, `val/<domain>/`).
        image_size: image side.
        batch_size: images per batch.
        seed: random seed (None → 0, so that runs stay resumable).
        num_domains: expected number of domains, or None.
        crop_probability, flip: the train transform's options (`augment_image`).
    """

    # `dataset(start_step=k)` continues a run after k iterations (the experiment runner relies on it).
    indexed_by_step = True

    def __init__(self, root, image_size: int, batch_size: int, seed: Optional[int] = None,
                 num_domains: Optional[int] = None, crop_probability: float = CROP_PROBABILITY, flip: bool = True):
        self.root = os.fspath(root)
        self.crop_probability = float(crop_probability)
        self.flip = bool(flip)
        self.domains = discover_domains(root, "train", num_domains)
        self.image_size = image_size
        self.batch_size = batch_size
        self.seed = 0 if seed is None else seed
        _check_arguments(self.domains, image_size, batch_size, self.seed, 0)

    @property
    def domain_names(self) -> list[str]:
        """Domain names in label order."""
        return [domain.name for domain in self.domains]

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    @property
    def num_images(self) -> int:
        """Training images of all domains."""
        return sum(len(domain.files) for domain in self.domains)

    @property
    def steps_per_epoch(self) -> int:
        """Training images // batch_size."""
        return steps_per_epoch(self.domains, self.batch_size)

    def dataset(self, start_step: int = 0, num_steps: Optional[int] = None) -> tf.data.Dataset:
        """`training_dataset` from iteration `start_step` (endless when `num_steps` is None)."""
        return training_dataset(self.domains, self.image_size, self.batch_size, self.seed, start_step, num_steps,
                                crop_probability=self.crop_probability, flip=self.flip)

    def describe(self) -> dict:
        """Sizes for the run's resolved config."""
        return {
            "domains": self.domain_names,
            "train_images_per_domain": {domain.name: len(domain.files) for domain in self.domains},
            "train_images": self.num_images,
            "steps_per_epoch": self.steps_per_epoch,
        }


# === Validation / evaluation ===


def _load_resized_numpy(path, image_size: np.ndarray) -> np.ndarray:
    image = Image.fromarray(read_image(_path_text(path)))
    return np.asarray(_resize_bilinear(image, int(image_size)))


def _load_resized(path: tf.Tensor, image_size: int) -> tf.Tensor:
    pixels = tf.numpy_function(
        _load_resized_numpy, [path, tf.constant(image_size, tf.int32)], tf.uint8, stateful=False
    )
    return to_unit_range(tf.ensure_shape(pixels, (image_size, image_size, 3)))


def val_images(
    domain: Domain,
    image_size: int,
    batch_size: int = 32,
    shuffle_seed: Optional[int] = None,
    drop_remainder: bool = False,
) -> tuple[tf.data.Dataset, list[str]]:
    """Batches of one domain's validation images for the spec §6.1 protocol.

    Images are resized to `image_size²` (PIL bilinear) and scaled to [-1, 1]; no augmentation.

    Args:
        domain: one entry of `discover_domains(root, "val")`.
        image_size: output side.
        batch_size: images per batch (32 in the official evaluation).
        shuffle_seed: None keeps the sorted file order; an integer shuffles it once with that seed
            (the official val loader shuffles).
        drop_remainder: keep full batches only (the reference images of the §6.1 reference mode).

    Returns:
        `(dataset, files)`: batches of float32 `[batch, image_size, image_size, 3]`, and the files in
        the order the dataset yields them (to name the outputs).
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"`image_size` must be a positive integer. Received: image_size={image_size!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    files = list(domain.files)
    if shuffle_seed is not None:
        order = np.random.RandomState(shuffle_seed).permutation(len(files))
        files = [files[index] for index in order]
    if drop_remainder and len(files) < batch_size:
        raise DatasetError(
            f"Domain {domain.name} has {len(files)} validation images, fewer than one batch of {batch_size}; "
            "lower the evaluation batch size or add validation images"
        )
    dataset = (
        tf.data.Dataset.from_tensor_slices(tf.constant(files))
        .map(lambda path: _load_resized(path, image_size), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=drop_remainder)
        .prefetch(tf.data.AUTOTUNE)
    )
    kept = len(files) // batch_size * batch_size if drop_remainder else len(files)
    return dataset, files[:kept]
