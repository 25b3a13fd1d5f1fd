"""Data builders: the `data` section → the training dataset object and the fixed sample images.

The entries of `psr.registry.DATA_KINDS` live here. Each receives the typed
`DataConfig` plus the batch size and seed, never the whole experiment, and
returns an object with `dataset()` (one epoch of `(source, target)` batches),
`steps_per_epoch` and `describe()` (the sizes written into the run's config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from psr.config import DataConfig
from psr.data.layout import domain_folders
from psr.errors import DatasetError
from psr.registry import DATA_KINDS


def prepare_dataset_root(cfg: DataConfig) -> Path:
    """Generates the embedded synthetic dataset on first use; returns the dataset root."""
    root = Path(cfg.root)
    s = cfg.synthetic
    if s is not None and s.kind == "shapes":
        from psr.data.synthetic import make_shapes_dataset

        make_shapes_dataset(root, image_size=s.image_size, num_train=s.num_train, num_test=s.num_test, seed=s.seed)
    elif s is not None and s.kind == "rocket_pair":
        from psr.data.single_image import make_sample_pair

        make_sample_pair(root)
    return root


def single_image_paths(cfg: DataConfig) -> tuple[str, str]:
    """The one source and one target image of a single-image experiment (`root/trainA`, `root/trainB`)."""
    from psr.data.images import list_images

    paths = []
    for folder in domain_folders(cfg.root, cfg.direction, "train"):
        found = list_images(folder, role="the single training image")
        if len(found) != 1:
            raise DatasetError(
                f"{folder} holds {len(found)} images; data.kind single_image expects exactly one image per domain."
            )
        paths.append(found[0])
    return paths[0], paths[1]


def unaligned_training_data(cfg: DataConfig, batch_size: int, seed: Optional[int]):
    from psr.data.unaligned import UnalignedDataset

    return UnalignedDataset(
        prepare_dataset_root(cfg), direction=cfg.direction, phase="train", load_size=cfg.load_size,
        crop_size=cfg.crop_size, preprocess=cfg.preprocess, flip=cfg.flip, batch_size=batch_size,
        max_dataset_size=cfg.max_dataset_size, seed=seed,
    )


def single_image_training_data(cfg: DataConfig, batch_size: int, seed: Optional[int]):
    from psr.data.single_image import SingleImageDataset

    prepare_dataset_root(cfg)
    path_a, path_b = single_image_paths(cfg)
    return SingleImageDataset(
        path_a, path_b, crop_size=cfg.crop_size, batch_size=batch_size, random_scale_max=cfg.random_scale_max,
        flip=cfg.flip, epoch_length=cfg.epoch_length, seed=seed,
    )


def build_training_data(cfg: DataConfig, batch_size: int, seed: Optional[int] = None):
    """The training data object of `data.kind` (`psr.registry.DATA_KINDS`)."""
    return DATA_KINDS.get(cfg.kind)(cfg, batch_size, seed)


def fixed_sample_batch(cfg: DataConfig, num_samples: int, data=None) -> tuple[np.ndarray, np.ndarray]:
    """The fixed images shown in every sample grid: the first test images (train images if no test split).

    Single-image experiments show the first crops the training data yields.
    """
    from psr.data.images import list_images
    from psr.data.unaligned import make_test_dataset

    if cfg.kind == "single_image":
        real_a, real_b = next(iter(data.dataset()))
        return np.asarray(real_a)[:num_samples], np.asarray(real_b)[:num_samples]

    def first(folder_test: Path, folder_train: Path) -> np.ndarray:
        folder = folder_test
        try:
            list_images(folder)
        except DatasetError:
            folder = folder_train
        dataset, _ = make_test_dataset(folder, image_size=cfg.crop_size, batch_size=1)
        images = [np.asarray(x)[0] for x, in zip(dataset.take(num_samples))]
        return np.stack(images)

    test_src, test_tgt = domain_folders(cfg.root, cfg.direction, "test")
    train_src, train_tgt = domain_folders(cfg.root, cfg.direction, "train")
    return first(test_src, train_src), first(test_tgt, train_tgt)
