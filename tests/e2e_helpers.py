"""Shared tiny settings for the end-to-end tests (16×16 synthetic images, a 4-filter network)."""

from pathlib import Path

import numpy as np
import yaml

from psr.config import config_from_dict


def tiny_raw(tmp_path: Path, **sections) -> dict:
    raw = {
        "name": "tiny",
        "data": {
            "root": str(tmp_path / "shapes"), "load_size": 16, "crop_size": 16, "preprocess": "crop",
            "synthetic": {"image_size": 16, "num_train": 8, "num_test": 4, "seed": 0},
        },
        "model": {
            "generator": {"filters": 4, "num_blocks": 1},
            "discriminator": {"filters": 4, "num_layers": 2},
            "head": {"units": 8, "num_patches": 16, "layers": [0, 4, 8, 12]},
        },
        "train": {"epochs": 1, "decay_epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "seed": 0},
        "log": {"run_dir": str(tmp_path / "run"), "num_samples": 2, "log_every_steps": 1,
                "checkpoint_every_epochs": 1, "verbose": 0},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def tiny_config(tmp_path: Path, **sections):
    return config_from_dict(tiny_raw(tmp_path, **sections))


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


class TinyExtractor:
    """Random-weight stand-in for InceptionV3 (no download): mean colour + a fixed random projection."""

    cache_key = "tiny-test-extractor-v1"

    def __init__(self):
        self.projection = np.random.default_rng(0).normal(size=(6, 6))

    def __call__(self, images):
        x = np.asarray(images, np.float64) / 255.0
        stats = np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)
        return (stats @ self.projection).astype(np.float32)


def make_tiny_run(tmp_path: Path, export: bool = True) -> Path:
    """A run directory as training leaves it (marker, config, a checkpoint of random weights, an export),
    without training: for tests of what other verbs do with a run."""
    from psr.builders import build_generator
    from psr.config import dump_config
    from psr.export import export_generator
    from psr.rundir import RunDir, atomic_write_text
    from psr.trainers.checkpoints import write_checkpoint

    cfg = tiny_config(tmp_path)
    run = RunDir(cfg.log.run_dir).claim()
    atomic_write_text(run.config, dump_config(cfg))
    generator = build_generator(cfg.model.generator, crop_size=cfg.data.crop_size)
    write_checkpoint(run.checkpoints_latest, 1, 0, generator)
    if export:
        export_generator(generator, run.export, cfg.export.pad_multiple)
    return run.path
