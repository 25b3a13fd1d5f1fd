"""Data builders: the `data` section → the training dataset object and the fixed sample images.

The entries of `psr.registry.DATA_KINDS` live here. Each receives the typed
`DataConfig` plus the batch size and seed, never the whole experiment, and
returns an object with `dataset()` (one epoch of `(source, target)` batches),
`steps_per_epoch` and `describe()` (the sizes written into the run's config).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from psr.config import DataConfig
from psr.data.layout import domain_folders
from psr.errors import DatasetError
from psr.registry import DATA_KINDS


def prepare_dataset_root(cfg: DataConfig, create: bool = True, wait_seconds: float = 900.0) -> Path:
    """Generates the embedded synthetic dataset on first use; returns the dataset root.

    `create=False` (the non-chief workers of a multi-worker run, which share the folder) waits for the
    chief to finish generating it instead of writing it a second time.
    """
    from psr.data.single_image import make_sample_pair, sample_pair_ready
    from psr.data.synthetic import make_shapes_dataset, shapes_dataset_ready
    from psr.data.synthetic_multidomain import (
        make_multidomain_dataset,
        multidomain_dataset_ready,
    )
    from psr.data.synthetic_paired import make_paired_shapes_dataset, paired_shapes_dataset_ready

    root = Path(cfg.root)
    s = cfg.synthetic
    if s is None:
        return root
    if s.kind == "shapes":
        args = dict(image_size=s.image_size, num_train=s.num_train, num_test=s.num_test, seed=s.seed)
        make, ready = (lambda: make_shapes_dataset(root, **args)), (lambda: shapes_dataset_ready(root, **args))
    elif s.kind == "scenes":  # num_test = validation scenes per domain
        args = dict(image_size=s.image_size, num_train=s.num_train, num_val=s.num_test, seed=s.seed)
        make = lambda: make_multidomain_dataset(root, **args)  # noqa: E731
        ready = lambda: multidomain_dataset_ready(root, **args)  # noqa: E731
    elif s.kind == "paired_shapes":
        args = dict(image_size=s.image_size, num_train=s.num_train, num_test=s.num_test, seed=s.seed)
        make = lambda: make_paired_shapes_dataset(root, **args)  # noqa: E731
        ready = lambda: paired_shapes_dataset_ready(root, **args)  # noqa: E731
    else:
        make, ready = (lambda: make_sample_pair(root)), (lambda: sample_pair_ready(root))
    if create:
        make()
        return root
    deadline = time.monotonic() + wait_seconds
    while not ready():
        if time.monotonic() > deadline:
            raise DatasetError(
                f"Waited {wait_seconds:.0f} s for the chief worker to generate the dataset in {root}; "
                "check the chief's log (all workers must see the same data.root)."
            )
        time.sleep(0.5)
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


def unaligned_training_data(cfg: DataConfig, batch_size: int, seed: Optional[int], create: bool = True):
    from psr.data.unaligned import UnalignedDataset

    return UnalignedDataset(
        prepare_dataset_root(cfg, create), direction=cfg.direction, phase="train", load_size=cfg.load_size,
        crop_size=cfg.crop_size, preprocess=cfg.preprocess, flip=cfg.flip, batch_size=batch_size,
        max_dataset_size=cfg.max_dataset_size, seed=seed,
    )


def aligned_training_data(cfg: DataConfig, batch_size: int, seed: Optional[int], create: bool = True):
    """Paired A|B files in `root/train` (pix2pix `aligned` mode, compression spec §2)."""
    from psr.data.aligned import AlignedDataset

    return AlignedDataset(
        prepare_dataset_root(cfg, create), direction=cfg.direction, phase="train", load_size=cfg.load_size,
        crop_size=cfg.crop_size, preprocess=cfg.preprocess, flip=cfg.flip, batch_size=batch_size,
        max_dataset_size=cfg.max_dataset_size, seed=seed,
    )


def aligned_samples(cfg: DataConfig, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """`(sources, targets)` of the first test pairs (`root/test`, else `root/val`, else `root/train`)."""
    from psr.data.aligned import aligned_test_pairs

    root = Path(cfg.root)
    phase = "test" if (root / "test").is_dir() or (root / "val").is_dir() else "train"
    dataset, _ = aligned_test_pairs(root, phase, cfg.direction, image_size=cfg.crop_size, batch_size=num_samples)
    sources, targets = next(iter(dataset))
    return np.asarray(sources), np.asarray(targets)


def single_image_training_data(cfg: DataConfig, batch_size: int, seed: Optional[int], create: bool = True):
    from psr.data.single_image import SingleImageDataset

    prepare_dataset_root(cfg, create)
    path_a, path_b = single_image_paths(cfg)
    return SingleImageDataset(
        path_a, path_b, crop_size=cfg.crop_size, batch_size=batch_size, random_scale_max=cfg.random_scale_max,
        flip=cfg.flip, epoch_length=cfg.epoch_length, seed=seed,
    )


def multidomain_training_data(cfg: DataConfig, batch_size: int, seed: Optional[int], create: bool = True):
    """StarGAN v2-style data `root/{train,val}/<domain>/` at `crop_size`² (multimodal spec §5); the domain
    count is checked against `model.num_domains` by the run."""
    from psr.data.multidomain import MultiDomainTrainingData

    root = prepare_dataset_root(cfg, create)
    return MultiDomainTrainingData(root, image_size=cfg.crop_size, batch_size=batch_size, seed=seed,
                                   crop_probability=cfg.random_resized_crop, flip=cfg.flip)


def multidomain_samples(cfg: DataConfig, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """`(sources, references)` of multi-domain sample grids: sources taken from the domains in turn,
    and one reference per domain, in label order (validation images; training images without a val split)."""
    from psr.data.multidomain import discover_domains, val_images

    try:
        domains = discover_domains(cfg.root, "val")
    except DatasetError:
        domains = discover_domains(cfg.root, "train")
    per_domain = -(-num_samples // len(domains))
    firsts = []
    for domain in domains:
        dataset, _ = val_images(domain, cfg.crop_size, batch_size=per_domain)
        firsts.append(np.asarray(next(iter(dataset))))
    sources = [firsts[i % len(domains)][i // len(domains)] for i in range(num_samples)
               if i // len(domains) < len(firsts[i % len(domains)])]
    return np.stack(sources), np.stack([images[0] for images in firsts])


def build_training_data(cfg: DataConfig, batch_size: int, seed: Optional[int] = None, create: bool = True):
    """The training data object of `data.kind` (`psr.registry.DATA_KINDS`).

    `create=False`: do not generate embedded synthetic data, wait for the chief worker to (multi-worker).
    """
    return DATA_KINDS.get(cfg.kind)(cfg, batch_size, seed, create)


def fixed_sample_batch(cfg: DataConfig, num_samples: int, data=None) -> tuple[np.ndarray, np.ndarray]:
    """The fixed images shown in every sample grid: the first test images (train images if no test split).

    Aligned data shows the first test (else val) pairs, source and its own target. Single-image
    experiments show the first crops the training data yields.
    """
    from psr.data.images import list_images
    from psr.data.unaligned import make_test_dataset

    if cfg.kind == "multidomain":
        return multidomain_samples(cfg, num_samples)
    if cfg.kind == "aligned":
        return aligned_samples(cfg, num_samples)
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
