"""A tiny generated paired dataset (pix2pix `aligned` layout): plain shapes | the same shapes striped.

Every file holds one scene twice, side by side: the left half (domain A) is the scene with solid
fills, the right half (domain B) the same scene with the fills striped (`psr.data.synthetic`'s
renderer, stripes of period 4). So A→B is "add the stripes", B→A "remove them", and each pair is
its own ground truth.

Layout::

    root/
      paired_shapes_dataset.json    marker: generator, version, arguments (written last)
      train/0000.png …              num_train pairs, each image_size high and 2·image_size wide
      test/0000.png …               num_test pairs

The scenes come from the shapes dataset's per-phase random streams, so `test/NNNN.png` is exactly
`testA/NNNN.png | testA_target/NNNN.png` of `make_shapes_dataset` with the same arguments (and
`train/NNNN.png` shows `trainA/NNNN.png` on its left). Files are written with the stored-deflate PNG
encoder, so equal arguments give byte-identical files on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from psr.data.generated import is_complete, numbered_names, write_generated
from psr.data.synthetic import (
    SPLIT_STREAMS,
    check_shapes_arguments,
    draw_shapes,
    render_shapes,
    write_png_folder,
)

PAIRED_SHAPES_VERSION = 1
MARKER_NAME = "paired_shapes_dataset.json"
PHASES = ("train", "test")


def _marker(image_size: int, num_train: int, num_test: int, seed: int) -> dict:
    return {
        "generator": "psr.data.synthetic_paired.make_paired_shapes_dataset",
        "version": PAIRED_SHAPES_VERSION,
        "image_size": image_size,
        "num_train": num_train,
        "num_test": num_test,
        "seed": seed,
    }


def _expected(num_train: int, num_test: int) -> dict[str, list[str]]:
    return {"train": numbered_names(num_train), "test": numbered_names(num_test)}


def render_pair(background: np.ndarray, shapes: list, size: int) -> np.ndarray:
    """uint8 `[size, 2·size, 3]`: the scene with solid fills (left, A) beside it striped (right, B)."""
    plain = render_shapes(background, shapes, size, striped=False)
    striped = render_shapes(background, shapes, size, striped=True)
    return np.concatenate([plain, striped], axis=1)


def _generate(folder: Path, image_size: int, num_train: int, num_test: int, seed: int) -> None:
    for phase, count in (("train", num_train), ("test", num_test)):
        rng = np.random.RandomState([seed, SPLIT_STREAMS[phase]])
        pairs = [render_pair(*draw_shapes(rng, image_size), image_size) for _ in range(count)]
        write_png_folder(folder / phase, pairs)


def paired_shapes_dataset_ready(
    root, image_size: int = 32, num_train: int = 200, num_test: int = 20, seed: int = 0
) -> bool:
    """Whether `root` holds the complete dataset `make_paired_shapes_dataset` would write with these arguments."""
    return is_complete(Path(root), MARKER_NAME, _marker(image_size, num_train, num_test, seed),
                       _expected(num_train, num_test))


def make_paired_shapes_dataset(
    root: str | os.PathLike,
    image_size: int = 32,
    num_train: int = 200,
    num_test: int = 20,
    seed: int = 0,
) -> Path:
    """Writes (or reuses) the paired shapes dataset under `root`.

    The marker (`paired_shapes_dataset.json`) is written last; when it matches and every file is
    there, nothing is done. Otherwise the dataset is generated in a staging folder next to `root`
    and renamed into place, replacing an earlier generated copy (never a folder with other content).

    Args:
        root: destination folder.
        image_size: height and half width of each pair in pixels; a multiple of 4, from 16 to 512.
        num_train: pairs in `train/`.
        num_test: pairs in `test/`.
        seed: random seed; equal arguments give byte-identical files.

    Returns:
        `root` as a `Path`.

    Raises:
        DatasetError: `root` exists and holds something other than this dataset.
    """
    check_shapes_arguments(image_size, num_train, num_test, seed)
    return write_generated(
        Path(root), MARKER_NAME, _marker(image_size, num_train, num_test, seed), _expected(num_train, num_test),
        lambda staging: _generate(staging, image_size, num_train, num_test, seed), "paired shapes dataset",
    )
