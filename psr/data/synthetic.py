"""A tiny generated dataset for the quickstart: plain shapes → striped shapes.

Domain A holds discs, squares and triangles in solid colours on a plain light
background; domain B holds other shapes of the same kinds whose fill alternates
the shape colour with a dark colour every 2 rows (horizontal stripes, period 4).
The translation A→B is "add stripes inside the shapes, keep everything else",
and `testA_target/` stores that translation of every test image, so a run can be
scored against ground truth. Stripes are anchored to image rows with period 4,
the total stride of the ResNet generator, so a small generator learns them in
minutes on a CPU.

Everything is drawn from NumPy's `RandomState` (its stream is frozen across
NumPy versions) and written by a small PNG encoder with uncompressed deflate
blocks, so the files are byte-identical on every machine, whatever zlib build
Pillow or Python links against.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from psr.data.generated import is_complete, numbered_names, write_generated

SHAPES_VERSION = 1
MARKER_NAME = "shapes_dataset.json"
SPLITS = ("trainA", "trainB", "testA", "testB", "testA_target")

STRIPE_COLOR = (24, 24, 24)
STRIPE_WIDTH = 2  # dark rows where (row // STRIPE_WIDTH) is odd: period 2 * STRIPE_WIDTH = 4
# Saturated colours: each has a channel >= 180 and one <= 60, so they stand out from
# the light backgrounds (all channels >= 190) and from the dark stripes.
SHAPE_COLORS = (
    (220, 40, 40),
    (40, 180, 60),
    (40, 80, 220),
    (240, 150, 20),
    (150, 50, 200),
    (20, 190, 200),
    (220, 40, 180),
    (230, 210, 30),
)
BACKGROUND_RANGE = (190, 256)
SHAPE_KINDS = ("disc", "square", "triangle")
_MAX_SHAPES = 3
# One random stream per phase; the paired dataset draws the same scenes from them.
SPLIT_STREAMS = {"train": 1, "test": 2}


# === Drawing ===


def shape_mask(kind: str, center_x: float, center_y: float, half_size: float, size: int) -> np.ndarray:
    """Boolean `[size, size]` mask of a disc, square or upward triangle (`SHAPE_KINDS`)."""
    # Pixel centres at integer + 0.5, hard edges (no anti-aliasing) so that the
    # shape mask is exact.
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if kind == "disc":
        return (x - center_x) ** 2 + (y - center_y) ** 2 <= half_size**2
    if kind == "square":
        return (np.abs(x - center_x) <= half_size) & (np.abs(y - center_y) <= half_size)
    # Upward triangle: apex at the top, base of width 2·half_size at the bottom.
    top = center_y - half_size
    rows = (y >= top) & (y <= center_y + half_size)
    return rows & (np.abs(x - center_x) <= (y - top) / 2.0)


def draw_shapes(rng: np.random.RandomState, size: int) -> tuple[np.ndarray, list[tuple[np.ndarray, tuple]]]:
    """Draws one background colour and 1–3 shapes as (mask, colour) pairs (shared by the paired dataset)."""
    background = tuple(int(value) for value in rng.randint(*BACKGROUND_RANGE, size=3))
    shapes = []
    for _ in range(rng.randint(1, _MAX_SHAPES + 1)):
        kind = SHAPE_KINDS[rng.randint(len(SHAPE_KINDS))]
        half_size = rng.uniform(0.15, 0.3) * size
        center_x, center_y = rng.uniform(half_size, size - half_size, size=2)
        color = SHAPE_COLORS[rng.randint(len(SHAPE_COLORS))]
        shapes.append((shape_mask(kind, center_x, center_y, half_size, size), color))
    return np.array(background, np.uint8), shapes


def render_shapes(background: np.ndarray, shapes: list, size: int, striped: bool) -> np.ndarray:
    """uint8 `[size, size, 3]` of a `draw_shapes` scene: solid fills, or striped ones (`STRIPE_COLOR` rows)."""
    image = np.empty((size, size, 3), np.uint8)
    image[...] = background
    dark_rows = (np.arange(size) // STRIPE_WIDTH) % 2 == 1
    for mask, color in shapes:
        fill = np.empty((size, size, 3), np.uint8)
        fill[...] = color
        if striped:
            fill[dark_rows] = STRIPE_COLOR
        image[mask] = fill[mask]
    return image


# === PNG encoding ===


def encode_png(pixels: np.ndarray) -> bytes:
    """Encodes uint8 RGB `[height, width, 3]` as a PNG with stored deflate blocks.

    No compression means no dependence on the zlib implementation, so equal
    pixels always give equal bytes.
    """
    height, width, _ = pixels.shape
    # Filter type 0 (none) before every row.
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))
    blocks = []
    for start in range(0, len(raw), 0xFFFF):
        piece = raw[start : start + 0xFFFF]
        is_last = start + 0xFFFF >= len(raw)
        blocks.append(struct.pack("<BHH", int(is_last), len(piece), len(piece) ^ 0xFFFF) + piece)
    # zlib header 0x78 0x01: deflate, 32 KiB window, check bits valid.
    stream = b"\x78\x01" + b"".join(blocks) + struct.pack(">I", zlib.adler32(raw))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


# === Dataset folder ===


def _marker(image_size: int, num_train: int, num_test: int, seed: int) -> dict:
    return {
        "generator": "psr.data.synthetic.make_shapes_dataset",
        "version": SHAPES_VERSION,
        "image_size": image_size,
        "num_train": num_train,
        "num_test": num_test,
        "seed": seed,
    }


def _expected(num_train: int, num_test: int) -> dict[str, list[str]]:
    return {split: numbered_names(num_train if split.startswith("train") else num_test) for split in SPLITS}


def write_png_folder(folder: Path, images: list[np.ndarray]) -> None:
    """Creates `folder` (inside a staging folder) and writes `images` as `0000.png`, `0001.png`, …"""
    folder.mkdir()
    for name, image in zip(numbered_names(len(images)), images):
        (folder / name).write_bytes(encode_png(image))


def _generate(folder: Path, image_size: int, num_train: int, num_test: int, seed: int) -> None:
    for phase, count in (("train", num_train), ("test", num_test)):
        # One stream per phase, so the test images do not depend on num_train.
        rng = np.random.RandomState([seed, SPLIT_STREAMS[phase]])
        plain, target, striped = [], [], []
        for _ in range(count):
            background, shapes = draw_shapes(rng, image_size)
            plain.append(render_shapes(background, shapes, image_size, striped=False))
            target.append(render_shapes(background, shapes, image_size, striped=True))
        for _ in range(count):
            background, shapes = draw_shapes(rng, image_size)
            striped.append(render_shapes(background, shapes, image_size, striped=True))
        write_png_folder(folder / f"{phase}A", plain)
        write_png_folder(folder / f"{phase}B", striped)
        if phase == "test":
            write_png_folder(folder / "testA_target", target)


def check_shapes_arguments(image_size: int, num_train: int, num_test: int, seed: int) -> None:
    """The argument checks of the shapes generators (this one and the paired one)."""
    if not isinstance(image_size, int) or image_size % 4 or not 16 <= image_size <= 512:
        raise ValueError(
            f"`image_size` must be a multiple of 4 between 16 and 512. Received: image_size={image_size}"
        )
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed}")


def shapes_dataset_ready(root, image_size: int = 32, num_train: int = 200, num_test: int = 20, seed: int = 0) -> bool:
    """Whether `root` holds the complete dataset `make_shapes_dataset` would write with these arguments."""
    return is_complete(Path(root), MARKER_NAME, _marker(image_size, num_train, num_test, seed),
                       _expected(num_train, num_test))


def make_shapes_dataset(
    root: str | os.PathLike,
    image_size: int = 32,
    num_train: int = 200,
    num_test: int = 20,
    seed: int = 0,
) -> Path:
    """Writes (or reuses) the shapes dataset under `root`.

    Layout: `root/trainA, trainB, testA, testB` (PNG, `0000.png`, …) and
    `root/testA_target/` with the striped version of each testA image under the
    same name. A marker file (`shapes_dataset.json`, holding the generator
    version and the arguments) is written last; when it matches and every file
    is there, nothing is done. Otherwise the dataset is generated in a temporary
    folder next to `root` and moved into place, replacing an earlier generated
    copy (never a folder with other content).

    Args:
        root: destination folder.
        image_size: image side in pixels; a multiple of 4, from 16 to 512.
        num_train: images per training domain (trainA and trainB).
        num_test: images in testA, testB and testA_target.
        seed: random seed; equal arguments give byte-identical files.

    Returns:
        `root` as a `Path`.

    Raises:
        DatasetError: `root` exists and holds something other than this dataset.
    """
    check_shapes_arguments(image_size, num_train, num_test, seed)
    root = Path(root)
    return write_generated(
        root, MARKER_NAME, _marker(image_size, num_train, num_test, seed), _expected(num_train, num_test),
        lambda staging: _generate(staging, image_size, num_train, num_test, seed), "shapes dataset",
    )
