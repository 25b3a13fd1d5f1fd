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

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import keras
import tensorflow as tf

from psr.data.pixels import to_uint8, to_unit_range

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
    return tf.io.encode_png(to_uint8(image))


def decode_image(data):
    """Encoded bytes → `[H, W, 3]` float32 in [-1, 1]; JPEG decoded exactly as PIL does."""
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False),
    )
    return to_unit_range(image)


def export_generator(
    generator: keras.Model,
    path: Union[str, Path],
    pad_multiple: int = 4,
    inputs: Sequence[Union[str, Path]] = (),
    force: bool = False,
    min_input_side: Optional[int] = None,
    fix: Optional[str] = None,
    metadata: Optional[dict] = None,
    per_image: bool = False,
) -> Path:
    """Writes a SavedModel with the float and bytes signatures into `path`, atomically.

    The model is written into a hidden staging folder and renamed into place (`psr.rundir.replace_folder`):
    an earlier psr export is replaced, a folder holding anything else is refused unless `force`
    (then the export's files are added and nothing of the folder's own is touched). `inputs` are
    paths the export must not be written into (the run directory's checkpoints and config).
    The smallest image side the generator accepts (`min_input_side`, by default derived from
    the generator) is recorded in the marker for `main.py translate`. `fix` replaces the advice
    given when `path` holds foreign files (`main.py run` has no --force). `metadata`: extra marker entries
    (a compressed student's channel configuration).

    `per_image` makes `serving_default` run the generator on one image at a time (a graph loop over
    the batch) instead of on the whole batch; the values are the same (psr's generators treat every
    image independently). On a 2-core CPU it is faster for batches (each image's maps stay in cache,
    and the student's instance norms take their one-image fused kernel); on a GPU keep the default.
    """
    from psr.rundir import replace_folder

    path = Path(path)

    def run_batch(images):
        return tf.cast(generator(images, training=False), tf.float32)

    def run(images):
        if not per_image:
            return run_batch(images)
        return tf.map_fn(lambda image: run_batch(image[None])[0], images, fn_output_signature=tf.float32)

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
    metadata = {**(metadata or {}), "pad_multiple": pad_multiple}
    if min_input_side is None:
        min_input_side = generator_min_input_side(generator, pad_multiple)
    if min_input_side is not None:
        metadata["min_input_side"] = int(min_input_side)
    options = {"fix": fix} if fix else {}
    return replace_folder(
        path, lambda staging: archive.write_out(str(staging), verbose=False), kind="export",
        inputs=inputs, force=force, metadata=metadata, **options,
    )


def is_saved_model(path: Union[str, Path]) -> bool:
    return (Path(path) / "saved_model.pb").is_file()


def generator_min_input_side(generator: keras.Model, pad_multiple: int = 4) -> Optional[int]:
    """The smallest image side a psr generator translates (`psr.config.minimum_image_side`), None if unknown."""
    from psr.config import GeneratorConfig, minimum_image_side
    from psr.models import ResnetGenerator, StyleGAN2Generator

    if isinstance(generator, ResnetGenerator):
        return minimum_image_side(GeneratorConfig(architecture="resnet", num_blocks=generator.num_blocks), pad_multiple)
    if isinstance(generator, StyleGAN2Generator):
        return minimum_image_side(GeneratorConfig(architecture="stylegan2"), pad_multiple)
    return None


def exported_min_input_side(path: Union[str, Path]) -> Optional[int]:
    """The smallest image side an export accepts, as recorded when it was written (None if unknown)."""
    from psr.rundir import read_output_marker

    value = (read_output_marker(path) or {}).get("min_input_side")
    return int(value) if isinstance(value, int) else None


# === Multi-modal export (method stargan2) ===

SIGNATURE_LATENT = "translate_latent"
SIGNATURE_REFERENCE = "translate_reference"


def latent_codes(count, latent_dim: int, seed):
    """`[count, latent_dim]` N(0, I) codes from an integer seed (the same codes on every machine and call)."""
    seed = tf.cast(seed, tf.int64)
    return tf.random.stateless_normal([count, latent_dim], seed=tf.stack([seed, tf.constant(0, tf.int64)]))


def export_multimodal(
    translator: keras.Model,
    path: Union[str, Path],
    pad_multiple: int = 4,
    inputs: Sequence[Union[str, Path]] = (),
    force: bool = False,
    fix: Optional[str] = None,
    domains: Sequence[str] = (),
) -> Path:
    """Writes a `stargan2` SavedModel (`MultimodalTranslator`) into `path`, atomically (as `export_generator`).

    Signatures (images float32 in [-1, 1], any H, W; they are reflect-padded to `pad_multiple`):
    - `serving_default` = `translate_latent(images [N,H,W,3], target_domain int32 [N], seed int64 [])`: the
      style comes from latent codes drawn from `seed` (one code per image);
    - `translate_reference(images, reference_images [N,h,w,3], target_domain int32 [N])`: the style of each
      reference (resized to the training side) in its domain;
    - `translate_bytes(image_bytes string [N], target_domain string [N], seed int64 [])`: encoded images
      in, PNGs out, the domain by name.
    The domain names (label order) are stored in the export's marker and inside the graph.
    """
    from psr.config import minimum_padded_side
    from psr.rundir import replace_folder

    path = Path(path)
    latent_dim = translator.latent_dim
    side = int(translator.style_encoder.image_size)
    names = [str(n) for n in domains] or [str(i) for i in range(translator.num_domains)]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(names), tf.range(len(names), dtype=tf.int32)), default_value=-1
    )

    def padded(fn, images):
        return translate_any_size(lambda x: tf.cast(fn(x), tf.float32), images, pad_multiple)

    def latent(images, target_domain, seed):
        codes = latent_codes(tf.shape(images)[0], latent_dim, seed)
        return {"images": padded(lambda x: translator.translate_latent(x, target_domain, codes), images)}

    def reference(images, reference_images, target_domain):
        refs = tf.image.resize(reference_images, (side, side), antialias=True)
        return {"images": padded(lambda x: translator.translate_reference(x, refs, target_domain), images)}

    def translate_bytes(image_bytes, target_domain, seed):
        index = table.lookup(target_domain)
        tf.debugging.assert_non_negative(index, message=f"target_domain must be one of {', '.join(names)}")
        codes = latent_codes(tf.shape(image_bytes)[0], latent_dim, seed)

        def one(args):
            data, domain, code = args
            image = decode_image(data)[None]
            out = padded(lambda x: translator.translate_latent(x, domain[None], code[None]), image)
            return encode_png(out[0])

        return {"output_bytes": tf.map_fn(one, (image_bytes, index, codes), fn_output_signature=tf.string)}

    images_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    domain_spec = tf.TensorSpec([None], tf.int32, name="target_domain")
    seed_spec = tf.TensorSpec([], tf.int64, name="seed")
    archive = keras.export.ExportArchive()
    archive.track(translator)
    archive.track(table)
    latent_fn = tf.function(latent)
    archive.add_endpoint(SIGNATURE_FLOAT, latent_fn, input_signature=[images_spec, domain_spec, seed_spec])
    archive.add_endpoint(SIGNATURE_LATENT, latent_fn, input_signature=[images_spec, domain_spec, seed_spec])
    archive.add_endpoint(SIGNATURE_REFERENCE, tf.function(reference), input_signature=[
        images_spec, tf.TensorSpec([None, None, None, 3], tf.float32, name="reference_images"), domain_spec])
    archive.add_endpoint(SIGNATURE_BYTES, tf.function(translate_bytes), input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes"), tf.TensorSpec([None], tf.string, name="target_domain"),
        seed_spec])
    metadata = {"pad_multiple": pad_multiple, "method": "stargan2", "domains": names, "reference_side": side,
                "latent_dim": latent_dim,
                # Two stride-2 convolutions: the padded side must be at least 4 (zero padding inside).
                "min_input_side": minimum_padded_side(4, pad_multiple)}
    options = {"fix": fix} if fix else {}
    return replace_folder(
        path, lambda staging: archive.write_out(str(staging), verbose=False), kind="export",
        inputs=inputs, force=force, metadata=metadata, **options,
    )
