"""A tiny generated multi-domain dataset for the StarGAN v2 quickstart: one scene, three styles.

A scene is content only: a background tone (one of 3) and 1–3 discs, squares or triangles, each with a
position, a size and a material (one of 4). A domain is a global style that maps content to colours:

- `night`: dark background tones, pale material colours;
- `plain`: light background tones, saturated material colours;
- `striped`: `plain`, with the shapes' fill alternating with a dark colour every 2 rows (period 4, the
  stride of two 2× downsamplings).

So translating scene i from one domain to another has exactly one right answer: the same scene rendered
in the target style, which the dataset stores.

Layout (domains in sorted order are the labels: night 0, plain 1, striped 2)::

    root/
      multidomain_dataset.json       marker: generator, version, arguments (written last)
      train/<domain>/0000.png …      num_train scenes per domain, drawn independently (unpaired)
      val/<domain>/NNNN.png          num_val scenes per domain; NNNN numbers the val scenes over all
                                     domains (night 0…, plain num_val…, striped 2·num_val…), so a name is unique
      val_target/<domain>/NNNN.png   every val scene rendered in every domain (ground truth of any s→t)

Score translations with `psr.evaluation_multimodal.content_scores_by_task`. Drawing uses NumPy's `RandomState` (frozen stream) and
the stored-deflate PNG writer of `psr.data.synthetic`, so equal arguments give byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from psr.data.generated import is_complete, numbered_names, write_generated
from psr.data.synthetic import (
    SHAPE_KINDS,
    STRIPE_COLOR,
    STRIPE_WIDTH,
    encode_png,
    shape_mask,
)

MULTIDOMAIN_VERSION = 1
MARKER_NAME = "multidomain_dataset.json"
VAL_TARGET = "val_target"


class DomainStyle(NamedTuple):
    """How a domain colours content: background tone → colour, material → colour, stripes or not."""

    backgrounds: tuple[tuple[int, int, int], ...]
    materials: tuple[tuple[int, int, int], ...]
    striped: bool


_LIGHT = ((236, 232, 220), (214, 228, 236), (230, 214, 214))
_SATURATED = ((220, 40, 40), (40, 180, 60), (40, 80, 220), (240, 150, 20))
# Every colour of one domain differs from every other colour of it and from STRIPE_COLOR, so a
# rendering determines the content (tested).
STYLES: dict[str, DomainStyle] = {
    "night": DomainStyle(((20, 24, 48), (36, 20, 44), (16, 40, 44)),
                         ((236, 220, 120), (150, 220, 236), (236, 160, 220), (170, 240, 170)), False),
    "plain": DomainStyle(_LIGHT, _SATURATED, False),
    "striped": DomainStyle(_LIGHT, _SATURATED, True),
}
DOMAIN_NAMES = tuple(sorted(STYLES))
_MAX_SHAPES = 3
_TRAIN_STREAM, _VAL_STREAM = 1, 2


class Shape(NamedTuple):
    kind: str
    center_x: float
    center_y: float
    half_size: float
    material: int


class Scene(NamedTuple):
    """The content of one image; `render_scene` colours it in a domain's style."""

    background: int
    shapes: tuple[Shape, ...]


# === Drawing ===


def draw_scene(rng: np.random.RandomState, size: int) -> Scene:
    """Draws a background tone and 1–3 shapes (kind, centre, half size, material)."""
    background = int(rng.randint(len(_LIGHT)))
    shapes = []
    for _ in range(rng.randint(1, _MAX_SHAPES + 1)):
        kind = SHAPE_KINDS[rng.randint(len(SHAPE_KINDS))]
        half_size = float(rng.uniform(0.15, 0.3) * size)
        center_x, center_y = (float(value) for value in rng.uniform(half_size, size - half_size, size=2))
        shapes.append(Shape(kind, center_x, center_y, half_size, int(rng.randint(len(_SATURATED)))))
    return Scene(background, tuple(shapes))


def render_scene(scene: Scene, domain: str, size: int) -> np.ndarray:
    """uint8 `[size, size, 3]`: `scene` in the style of `domain` (later shapes cover earlier ones)."""
    style = STYLES[domain]
    image = np.empty((size, size, 3), np.uint8)
    image[...] = style.backgrounds[scene.background]
    dark_rows = (np.arange(size) // STRIPE_WIDTH) % 2 == 1
    for shape in scene.shapes:
        mask = shape_mask(shape.kind, shape.center_x, shape.center_y, shape.half_size, size)
        fill = np.empty((size, size, 3), np.uint8)
        fill[...] = style.materials[shape.material]
        if style.striped:
            fill[dark_rows] = STRIPE_COLOR
        image[mask] = fill[mask]
    return image


# === Dataset folder ===


def _marker(image_size: int, num_train: int, num_val: int, seed: int) -> dict:
    return {
        "generator": "psr.data.synthetic_multidomain.make_multidomain_dataset",
        "version": MULTIDOMAIN_VERSION,
        "domains": list(DOMAIN_NAMES),
        "image_size": image_size,
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
    }


def _val_names(domain_index: int, num_val: int) -> list[str]:
    return numbered_names((domain_index + 1) * num_val)[domain_index * num_val :]


def _expected(num_train: int, num_val: int) -> dict[str, list[str]]:
    expected = {f"train/{name}": numbered_names(num_train) for name in DOMAIN_NAMES}
    expected.update({f"val/{name}": _val_names(index, num_val) for index, name in enumerate(DOMAIN_NAMES)})
    all_val = numbered_names(len(DOMAIN_NAMES) * num_val)
    expected.update({f"{VAL_TARGET}/{name}": all_val for name in DOMAIN_NAMES})
    return expected


def _write_images(folder: Path, names: list[str], images: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for name, image in zip(names, images):
        (folder / name).write_bytes(encode_png(image))


def _generate(folder: Path, image_size: int, num_train: int, num_val: int, seed: int) -> None:
    for index, domain in enumerate(DOMAIN_NAMES):
        # One stream per domain: unpaired training scenes, independent of num_val.
        rng = np.random.RandomState([seed, _TRAIN_STREAM, index])
        scenes = [draw_scene(rng, image_size) for _ in range(num_train)]
        _write_images(folder / "train" / domain, numbered_names(num_train),
                      [render_scene(scene, domain, image_size) for scene in scenes])
    rng = np.random.RandomState([seed, _VAL_STREAM])
    val_scenes = [draw_scene(rng, image_size) for _ in range(len(DOMAIN_NAMES) * num_val)]
    all_names = numbered_names(len(val_scenes))
    for index, domain in enumerate(DOMAIN_NAMES):
        own = slice(index * num_val, (index + 1) * num_val)
        _write_images(folder / "val" / domain, all_names[own],
                      [render_scene(scene, domain, image_size) for scene in val_scenes[own]])
        _write_images(folder / VAL_TARGET / domain, all_names,
                      [render_scene(scene, domain, image_size) for scene in val_scenes])


def _check_arguments(image_size: int, num_train: int, num_val: int, seed: int) -> None:
    if not isinstance(image_size, int) or image_size % 4 or not 16 <= image_size <= 512:
        raise ValueError(
            f"`image_size` must be a multiple of 4 between 16 and 512. Received: image_size={image_size}"
        )
    for name, value in (("num_train", num_train), ("num_val", num_val)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed}")


def multidomain_dataset_ready(root, image_size: int = 32, num_train: int = 200, num_val: int = 10,
                              seed: int = 0) -> bool:
    """Whether `root` holds the complete dataset `make_multidomain_dataset` would write with these arguments."""
    return is_complete(Path(root), MARKER_NAME, _marker(image_size, num_train, num_val, seed),
                       _expected(num_train, num_val))


def make_multidomain_dataset(
    root: str | os.PathLike,
    image_size: int = 32,
    num_train: int = 200,
    num_val: int = 10,
    seed: int = 0,
) -> Path:
    """Writes (or reuses) the three-domain quickstart dataset under `root` (layout: module docstring).

    When the marker matches and every file is there, nothing is done. Otherwise the dataset is
    generated in a staging folder next to `root` and renamed into place, replacing an earlier
    generated copy (never a folder with other content).

    Args:
        root: destination folder.
        image_size: image side in pixels; a multiple of 4, from 16 to 512.
        num_train: training images per domain.
        num_val: validation scenes per domain.
        seed: random seed; equal arguments give byte-identical files.

    Returns:
        `root` as a `Path`.

    Raises:
        DatasetError: `root` exists and holds something other than this dataset.
    """
    _check_arguments(image_size, num_train, num_val, seed)
    return write_generated(
        Path(root), MARKER_NAME, _marker(image_size, num_train, num_val, seed), _expected(num_train, num_val),
        lambda staging: _generate(staging, image_size, num_train, num_val, seed), "multi-domain dataset",
    )
