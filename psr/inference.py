"""Translate image files with a run directory or an exported SavedModel, at any resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from psr.data.pixels import to_unit_range
from psr.errors import CheckpointError, ConfigError, DatasetError, OutputError
from psr.export import (
    SIGNATURE_FLOAT,
    exported_min_input_side,
    generator_min_input_side,
    is_saved_model,
    translate_any_size,
)


def load_run_generator(run_dir: Union[str, Path], checkpoint: str = "latest"):
    """`(network, config, checkpoint path)` of a run directory: its method's inference network (the
    generator for CUT / SinCUT) with the weights of the newest checkpoint."""
    from psr.config import load_run_config
    from psr.methods import get_method
    from psr.trainers.checkpoints import restore_generator

    cfg = load_run_config(run_dir)
    method = get_method(cfg.method)
    generator = method.inference_network_builder()(cfg.model, cfg.data.crop_size)
    path = restore_generator(run_dir, generator, which=checkpoint)
    select = method.hook("select_network")
    if select is not None:  # compression: the supernet at the searched configuration
        generator = select(generator, run_dir, cfg)
    return generator, cfg, path


def load_translator(model: Union[str, Path], checkpoint: str = "latest") -> Callable[[np.ndarray], np.ndarray]:
    """Returns `f(images [N, H, W, 3] float32 in [-1, 1]) -> translations` of the same size.

    `model` is a run directory (its `config.yaml` and checkpoint are used) or an
    exported SavedModel folder (`main.py export`).
    """
    model = Path(model)
    if is_saved_model(model):
        loaded = tf.saved_model.load(str(model))
        if SIGNATURE_FLOAT not in loaded.signatures:
            raise CheckpointError(f"{model} has no '{SIGNATURE_FLOAT}' signature; export it with `main.py export`.")
        signature = loaded.signatures[SIGNATURE_FLOAT]

        def run_saved(images: np.ndarray) -> np.ndarray:
            return signature(images=tf.constant(images, tf.float32))["images"].numpy()

        run_saved.saved_model = loaded  # keep the object (and its variables) alive
        run_saved.min_input_side = exported_min_input_side(model)
        return run_saved

    if not model.is_dir():
        raise CheckpointError(f"Model not found: {model}. Pass a run directory or an exported model folder.")
    generator, cfg, _ = load_run_generator(model, checkpoint)
    multiple = cfg.export.pad_multiple

    @tf.function(reduce_retracing=True)
    def run_keras(images):
        return translate_any_size(lambda x: generator(x, training=False), images, multiple)

    def run(images: np.ndarray) -> np.ndarray:
        return run_keras(tf.constant(images, tf.float32)).numpy()

    run.generator = generator
    run.min_input_side = generator_min_input_side(generator, multiple)  # None for a network psr cannot size
    return run


def expand_inputs(inputs: Iterable[Union[str, Path]]) -> list[Path]:
    """Files and folders (searched recursively for images) → a sorted, de-duplicated list of image files."""
    from psr.data.images import list_images

    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths.extend(Path(p) for p in list_images(item, role="images to translate"))
        elif item.is_file():
            paths.append(item)
        else:
            raise DatasetError(f"Input not found: {item}. Pass image files or folders of images.")
    if not paths:
        raise DatasetError("No input images given. Pass image files or folders of images.")
    return sorted(dict.fromkeys(paths))


def output_names(files: Sequence[Path]) -> list[str]:
    """`<stem>.png` per input; a stem seen before (same name in two folders) gets `_1`, `_2`, ..."""
    names = []
    stems: dict[str, int] = {}
    for path in files:
        count = stems.get(path.stem, 0)
        stems[path.stem] = count + 1
        names.append(f"{path.stem}.png" if count == 0 else f"{path.stem}_{count}.png")
    return names


def check_image_sizes(files: Sequence[Path], min_side: Optional[int]) -> None:
    """Refuses (before anything is translated) an image with a side below what the generator accepts."""
    from PIL import Image

    if not min_side:
        return
    for path in files:
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except (OSError, ValueError):
            continue  # `read_image` reports unreadable files with their own message
        if min(width, height) < min_side:
            raise DatasetError(
                f"{path} is {width}x{height} pixels; this generator needs at least {min_side} pixels per side. "
                "Upscale the image or leave it out."
            )


def translate_files(
    translator: Callable[[np.ndarray], np.ndarray],
    inputs: Iterable[Union[str, Path]],
    output_dir: Union[str, Path],
    progress: Optional[Callable[[int, int, Path], None]] = None,
    force: bool = False,
) -> list[Path]:
    """Translates every input image and saves `<output_dir>/<name>.png`; returns the written paths.

    `output_dir` may not be an input or lie inside one; a folder holding files psr did not write
    is refused unless `force`, and even then no existing file of its own is overwritten. Image
    sizes are checked against the translator's `min_input_side` before anything is written.
    """
    from psr.data.images import encode_image, read_image
    from psr.rundir import open_output_folder, resolve

    inputs = list(inputs)
    files = expand_inputs(inputs)
    # A translator with `suffixes` makes several images per input (multi-modal: one per style).
    suffixes = list(getattr(translator, "suffixes", None) or [""])
    names = [f"{name[:-4]}{suffix}.png" for name in output_names(files) for suffix in suffixes]
    check_image_sizes(files, getattr(translator, "min_input_side", None))
    sources = {resolve(path) for path in files}
    for name in names:  # an input file given by name inside the output folder (e.g. out/a.png -o out)
        if resolve(Path(output_dir) / name) in sources:
            raise OutputError(
                f"Translating into {output_dir} would overwrite the input {Path(output_dir) / name}; "
                "choose an output folder that holds no input."
            )
    folder = open_output_folder(output_dir, names, kind="translations", inputs=inputs, force=force)
    written = []
    for index, path in enumerate(files):
        image = to_unit_range(read_image(path))
        results = translator(image[None])
        for k, result in enumerate(results[: len(suffixes)]):
            name = names[index * len(suffixes) + k]
            data = encode_image(result, name)
            out = folder.write_file(name, lambda stream: stream.write(data))
            written.append(out)
        if progress is not None:
            progress(index + 1, len(files), out)
    return written


# === Multi-modal models (method stargan2) ===


def model_method(model: Union[str, Path]) -> Optional[str]:
    """The method of a run directory or export (None when unknown, e.g. an export of an older psr)."""
    from psr.rundir import read_output_marker

    model = Path(model)
    if is_saved_model(model):
        return (read_output_marker(model) or {}).get("method")
    if (model / "config.yaml").is_file():
        from psr.config import load_run_config

        return load_run_config(model).method
    return None


def load_multimodal_translator(model: Union[str, Path], domain: str, reference: Optional[Union[str, Path]] = None,
                               num: int = 1, seed: int = 0, checkpoint: str = "latest"):
    """`f(image [1, H, W, 3]) -> [K, H, W, 3]`: K = `num` latent-guided translations into `domain` (codes
    drawn from `seed`, as the export's `translate_latent` draws them), or one in the style of `reference`.

    `f.suffixes` names the outputs (`_<domain>_<k>` or `_<domain>_ref`).
    """
    from psr.data.images import read_image
    from psr.export import SIGNATURE_LATENT, SIGNATURE_REFERENCE, latent_codes
    from psr.models.multimodal import domain_index
    from psr.rundir import RunDir, read_output_marker

    model = Path(model)
    if num < 1:
        raise ConfigError(f"--num {num}: expected at least 1 output per image.")
    if is_saved_model(model):
        marker = read_output_marker(model) or {}
        names, side = list(marker.get("domains", [])), int(marker.get("reference_side", 256))
        min_side = marker.get("min_input_side")
        loaded = tf.saved_model.load(str(model))

        def latent(images, domains, seed_value):
            out = loaded.signatures[SIGNATURE_LATENT](images=images, target_domain=domains, seed=seed_value)
            return out["images"]

        def by_reference(images, refs, domains):
            out = loaded.signatures[SIGNATURE_REFERENCE](images=images, reference_images=refs, target_domain=domains)
            return out["images"]
    else:
        if not model.is_dir():
            raise CheckpointError(f"Model not found: {model}. Pass a run directory or an exported model folder.")
        translator, cfg, _ = load_run_generator(model, checkpoint)
        names, side = list(RunDir(model).domain_names()), cfg.data.crop_size
        multiple = cfg.export.pad_multiple
        min_side = None

        def latent(images, domains, seed_value):
            codes = latent_codes(tf.shape(images)[0], translator.latent_dim, seed_value)
            return translate_any_size(lambda x: translator.translate_latent(x, domains, codes), images, multiple)

        def by_reference(images, refs, domains):
            refs = tf.image.resize(refs, (side, side), antialias=True)
            return translate_any_size(lambda x: translator.translate_reference(x, refs, domains), images, multiple)

    index = domain_index(names, domain)
    if reference is not None:
        ref = to_unit_range(read_image(str(reference)))[None]

        def run(images):
            images = tf.constant(images, tf.float32)
            return np.asarray(by_reference(images, tf.constant(ref, tf.float32), tf.constant([index], tf.int32)))

        run.suffixes = [f"_{names[index]}_ref"]
    else:
        def run(images):
            images = tf.repeat(tf.constant(images, tf.float32), num, axis=0)
            domains = tf.fill([num], tf.constant(index, tf.int32))
            return np.asarray(latent(images, domains, tf.constant(seed, tf.int64)))

        run.suffixes = [f"_{names[index]}_{k}" for k in range(num)]
    run.min_input_side = min_side
    return run
