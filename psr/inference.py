"""Translate image files with a run directory or an exported SavedModel, at any resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np
import tensorflow as tf

from psr.errors import CheckpointError, DatasetError
from psr.export import SIGNATURE_FLOAT, is_saved_model, translate_any_size


def load_run_generator(run_dir: Union[str, Path], checkpoint: str = "latest"):
    """`(network, config, checkpoint path)` of a run directory: its method's inference network (the
    generator for CUT / SinCUT) with the weights of the newest checkpoint."""
    from psr.config import load_run_config
    from psr.methods import get_method
    from psr.trainers.checkpoints import restore_generator

    cfg = load_run_config(run_dir)
    generator = get_method(cfg.method).inference_network_builder()(cfg.model, cfg.data.crop_size)
    path = restore_generator(run_dir, generator, which=checkpoint)
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


def translate_files(
    translator: Callable[[np.ndarray], np.ndarray],
    inputs: Iterable[Union[str, Path]],
    output_dir: Union[str, Path],
    progress: Optional[Callable[[int, int, Path], None]] = None,
) -> list[Path]:
    """Translates every input image and saves `<output_dir>/<name>.png`; returns the written paths."""
    from psr.data.images import read_image, save_image

    files = expand_inputs(inputs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    stems: dict[str, int] = {}
    for index, path in enumerate(files):
        image = read_image(path).astype(np.float32) / 127.5 - 1.0
        result = translator(image[None])[0]
        count = stems.get(path.stem, 0)
        stems[path.stem] = count + 1
        name = path.stem if count == 0 else f"{path.stem}_{count}"  # same stem in two folders
        out = output_dir / f"{name}.png"
        save_image(result, out)
        written.append(out)
        if progress is not None:
            progress(index + 1, len(files), out)
    return written
