"""Image files: finding, reading, checking and writing them.

Everything here works on plain NumPy arrays and PIL, without TensorFlow, so the
tools and the data pipeline share one definition of "an image" (which files
count, how odd pixel formats become 8-bit RGB, how results are written).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, features

from psr.data.pixels import to_uint8
from psr.errors import DatasetError

# The upstream CUT list (data/image_folder.py), plus WebP when this
# Pillow build can decode it. Matching is case-insensitive.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff") + (
    (".webp",) if features.check("webp") else ()
)

# What PIL raises for files it cannot decode: UnidentifiedImageError (an OSError),
# "image file is truncated" (OSError), bad chunk CRCs (SyntaxError in verify()),
# broken headers (ValueError), zip bombs (DecompressionBombError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _is_hidden(name: str) -> bool:
    # macOS archives carry "._name.jpg" resource forks and "__MACOSX/" folders that
    # have an image extension but are not images.
    return name.startswith(".") or name == "__MACOSX"


def _describe_non_images(files: list[str]) -> str:
    if not files:
        return "the folder is empty"
    suffixes = sorted({Path(name).suffix.lower() or "(no extension)" for name in files})
    shown = ", ".join(suffixes[:5]) + (", ..." if len(suffixes) > 5 else "")
    noun = "file" if len(files) == 1 else "files"
    return f"found {len(files)} {noun} ({shown}), none with an image extension"


def list_images(folder: str | os.PathLike, role: str = "") -> list[str]:
    """Returns the sorted paths of all images under `folder`, sub-folders included.

    Like upstream `make_dataset`, the walk is recursive and follows symlinks;
    hidden files and `__MACOSX` folders are skipped.

    Args:
        folder: folder to search.
        role: what the folder holds, e.g. "training images of domain A"; only
            used to make error messages say which folder of the layout is wrong.

    Returns:
        Sorted list of paths (strings) whose extension is in `IMAGE_EXTENSIONS`.

    Raises:
        DatasetError: the folder does not exist, or holds no image.
    """
    folder = os.fspath(folder)
    role_note = f" (role: {role})" if role else ""
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "not found"
        raise DatasetError(
            f"Dataset folder {what}: {folder}{role_note}. Expected the layout ROOT/trainA, trainB, "
            "testA, testB — see README 'Datasets'"
        )
    images, others = [], []
    for directory, subdirs, names in os.walk(folder, followlinks=True):
        subdirs[:] = [name for name in subdirs if not _is_hidden(name)]
        for name in names:
            if _is_hidden(name):
                continue
            (images if _has_image_extension(name) else others).append(os.path.join(directory, name))
    if not images:
        raise DatasetError(
            f"No images in {folder}{role_note}: {_describe_non_images(others)}; accepted extensions are "
            f"{' '.join(IMAGE_EXTENSIONS)} — add images there or point the dataset root elsewhere"
        )
    return sorted(images)


def _sixteen_bit_to_uint8(image: Image.Image) -> np.ndarray:
    # PIL's convert("L") clips 16-bit values at 255, which turns almost every pixel
    # white; divide by 257 instead so that 65535 -> 255 and 257*k -> k exactly.
    values = np.asarray(image).astype(np.int64)
    values = np.clip(values, 0, 65535)
    gray = ((values + 128) // 257).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as 8-bit RGB.

    Conversions (the upstream loader only calls `convert("RGB")`; these agree with
    it except for 16-bit images, where it would clip):
    - grayscale (`L`, `1`), palette (`P`, `PA`) and `CMYK`/`YCbCr`/`LAB`/`HSV`
      become RGB with PIL's own conversion;
    - alpha (`RGBA`, `LA`, `PA`) is dropped, not composited, as upstream does;
    - 16-bit grayscale (`I;16`, `I;16B`, `I`) is scaled by 1/257, so the full
      range 0..65535 maps to 0..255;
    - EXIF orientation is ignored (as upstream); multi-frame files give frame 0.

    Args:
        path: image file.

    Returns:
        `np.ndarray` of dtype uint8 and shape `[height, width, 3]`.

    Raises:
        DatasetError: the file cannot be opened or decoded, or has a pixel
            format without an unambiguous 8-bit meaning (32-bit float).
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                return _sixteen_bit_to_uint8(image)
            if image.mode == "F":
                raise DatasetError(
                    f"Image {path} has 32-bit float pixels, which psr cannot map to 8 bit unambiguously; "
                    "convert it to 8-bit RGB (PNG or JPEG)"
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DatasetError(f"Image file not found: {path}; check the dataset folder") from None
    except _DECODE_ERRORS as error:
        raise DatasetError(
            f"Cannot decode image {path} ({error}); delete or replace the file"
        ) from None


def _check_file(path: str) -> str | None:
    """Returns None when PIL can open and verify `path`, else the reason."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                # verify() reads only a JPEG's header. Decoding at 1/8 scale (DCT
                # draft mode) still walks the whole entropy-coded stream, so it finds
                # files cut short, at about a tenth of the cost of a full decode.
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
            else:
                image.verify()  # PNG: every chunk's CRC, and the file's end
    except _DECODE_ERRORS as error:
        return str(error) or type(error).__name__
    return None


def verify_images(paths: Iterable[str | os.PathLike]) -> None:
    """Checks that every file is an image PIL can open, before training starts.

    A fast check, so that a bad file stops the run at start-up rather than
    hours into training: `Image.open` + `verify()` (PNG chunk checksums), and
    for JPEGs a decode at 1/8 scale, which catches files cut short (about 1 ms
    per 256×256 JPEG). Non-images and empty files fail at `Image.open`.

    Args:
        paths: image files.

    Raises:
        DatasetError: one error naming the first bad file and how many are bad.
    """
    first_bad, first_reason, bad_count, total = None, None, 0, 0
    for path in paths:
        total += 1
        reason = _check_file(os.fspath(path))
        if reason is not None:
            bad_count += 1
            if first_bad is None:
                first_bad, first_reason = os.fspath(path), reason
    if bad_count:
        others = f" (and {bad_count - 1} more of {total} files)" if bad_count > 1 else ""
        raise DatasetError(
            f"Unreadable image {first_bad}{others}: {first_reason}; delete or replace the bad files"
        )


def _format_for(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise ValueError(
            f"Cannot tell the image format from the file name; use a .png or .jpg name. Received: path={path}"
        )
    return image_format


def encode_image(image: np.ndarray | Sequence, name: str | os.PathLike) -> bytes:
    """Encodes a generated image in the format `name`'s extension names (see `save_image`)."""
    name = os.fspath(name)
    pixels = to_uint8(image)
    if pixels.ndim == 4 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3):
        raise ValueError(f"Expected an image [height, width, 3]. Received: shape={np.shape(image)}")
    image_format = _format_for(name)
    options = {"quality": 100, "subsampling": 0} if image_format == "JPEG" else {}
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def save_image(image: np.ndarray | Sequence, path: str | os.PathLike) -> None:
    """Saves a generated image, atomically.

    Args:
        image: float array `[height, width, 3]` (or `[height, width, 1]`,
            `[height, width]`, or a batch of one) with values in [-1, 1];
            values outside are clipped. Converted with `to_uint8`.
        path: destination; the format follows the extension (PNG recommended,
            JPEG is written at quality 100 without chroma subsampling). Parent
            folders are created. The file is written to a temporary name first,
            fsynced and renamed (`psr.rundir.atomic_write_bytes`), so a crash
            never leaves a half-written image.
    """
    from psr.rundir import atomic_write_bytes

    atomic_write_bytes(path, encode_image(image, path))
