"""SavedModel export for TF Serving, and inference at any resolution.

The exported model has two signatures:
- `serving_default`: `images` float32 `[N, H, W, 3]` in [-1, 1], any H and W →
  `{"images": translations}` of the same size;
- `translate_bytes`: `image_bytes` string `[N]` (encoded JPEG/PNG/BMP/GIF) →
  `{"output_bytes": PNG strings}`.

The generator needs sides divisible by its total stride (4 for CUT), so inputs
are reflect-padded up to the next multiple and the output is cropped back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Union

import keras
import tensorflow as tf

SIGNATURE_FLOAT = "serving_default"
SIGNATURE_BYTES = "translate_bytes"


def translate_any_size(generator: Callable, images, multiple: int = 4):
    """Runs `generator` on `[N, H, W, C]` images of any size: reflect-pad to `multiple`, crop back."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    padded = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")
    return generator(padded)[:, :height, :width, :]


def encode_png(image):
    """One `[H, W, 3]` image in [-1, 1] → PNG bytes, quantised like the official test script (clamp, truncate)."""
    pixels = tf.cast((tf.clip_by_value(image, -1.0, 1.0) + 1.0) / 2.0 * 255.0, tf.uint8)
    return tf.io.encode_png(pixels)


def decode_image(data):
    """Encoded bytes → `[H, W, 3]` float32 in [-1, 1]; JPEG decoded exactly as PIL does."""
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False),
    )
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def export_generator(generator: keras.Model, path: Union[str, Path], pad_multiple: int = 4) -> Path:
    """Writes a SavedModel with the float and bytes signatures. The folder is replaced atomically."""
    path = Path(path)

    def run(images):
        return tf.cast(generator(images, training=False), tf.float32)

    def translate_images(images):
        return {"images": translate_any_size(run, images, pad_multiple)}

    def translate_bytes(image_bytes):
        def one(data):
            image = decode_image(data)
            return encode_png(translate_any_size(run, image[None], pad_multiple)[0])

        return {"output_bytes": tf.map_fn(one, image_bytes, fn_output_signature=tf.string)}

    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.add_endpoint(
        SIGNATURE_FLOAT,
        tf.function(translate_images),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")],
    )
    archive.add_endpoint(
        SIGNATURE_BYTES,
        tf.function(translate_bytes),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        archive.write_out(str(staging / "model"), verbose=False)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(staging / "model", path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging / "model", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def is_saved_model(path: Union[str, Path]) -> bool:
    return (Path(path) / "saved_model.pb").is_file()
