"""One training run: config → data → trainer → `fit` with callbacks → artifacts in the run directory.

Run directory (`log.run_dir`):
    config.yaml      resolved configuration (written before the first step)
    checkpoints/     latest/ (resume), epochs/ (snapshots), best/ (periodic evaluation)
    tensorboard/     train/ scalars, images/ grids, eval/ metrics
    samples/         epoch_XXXX.png grids: input | translation | target sample | identity
    export/          SavedModel for TF Serving (after training, or `main.py export`)

Rerunning the same command resumes from `checkpoints/latest`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from psr.config import ExperimentConfig, config_to_dict, dump_config
from psr.errors import ConfigError, DatasetError

# Keys whose change does not make a run directory a different experiment (epochs: extending a run).
_RESUMABLE_KEYS = {("log", "verbose"), ("log", "log_every_steps"), ("log", "sample_every_epochs"),
                   ("log", "save_every_steps"), ("export",), ("eval",), ("train", "jit_compile"),
                   ("train", "epochs"), ("train", "decay_epochs")}


def prepare_dataset_root(cfg: ExperimentConfig) -> Path:
    """Generates the embedded synthetic dataset on first use; returns the dataset root."""
    root = Path(cfg.data.root)
    s = cfg.data.synthetic
    if s is not None and s.kind == "shapes":
        from psr.data.synthetic import make_shapes_dataset

        make_shapes_dataset(root, image_size=s.image_size, num_train=s.num_train, num_test=s.num_test, seed=s.seed)
    elif s is not None and s.kind == "rocket_pair":
        from psr.data.single_image import make_sample_pair

        make_sample_pair(root)
    return root


def single_image_paths(cfg: ExperimentConfig) -> tuple[str, str]:
    """The one source and one target image of a single-image experiment (`root/trainA`, `root/trainB`)."""
    from psr.data.images import list_images

    source, target = domain_folders(cfg, "train")
    paths = []
    for folder in (source, target):
        found = list_images(folder, role="the single training image")
        if len(found) != 1:
            raise DatasetError(
                f"{folder} holds {len(found)} images; data.kind single_image expects exactly one image per domain."
            )
        paths.append(found[0])
    return paths[0], paths[1]


def build_training_data(cfg: ExperimentConfig):
    from psr.data.unaligned import UnalignedDataset

    root = prepare_dataset_root(cfg)
    if cfg.data.kind == "single_image":
        from psr.data.single_image import SingleImageDataset

        path_a, path_b = single_image_paths(cfg)
        return SingleImageDataset(
            path_a, path_b, crop_size=cfg.data.crop_size, batch_size=cfg.train.batch_size,
            random_scale_max=cfg.data.random_scale_max, flip=cfg.data.flip,
            epoch_length=cfg.data.epoch_length, seed=cfg.train.seed,
        )
    return UnalignedDataset(
        root,
        direction=cfg.data.direction,
        phase="train",
        load_size=cfg.data.load_size,
        crop_size=cfg.data.crop_size,
        preprocess=cfg.data.preprocess,
        flip=cfg.data.flip,
        batch_size=cfg.train.batch_size,
        max_dataset_size=cfg.data.max_dataset_size,
        seed=cfg.train.seed,
    )


def domain_folders(cfg: ExperimentConfig, phase: str = "test") -> tuple[Path, Path]:
    """(source, target) folders of a split, after the AtoB/BtoA swap."""
    root = Path(cfg.data.root)
    a, b = root / f"{phase}A", root / f"{phase}B"
    return (a, b) if cfg.data.direction == "AtoB" else (b, a)


def fixed_sample_batch(cfg: ExperimentConfig, data=None) -> tuple[np.ndarray, np.ndarray]:
    """The fixed images shown in every sample grid: the first test images (train images if no test split).

    Single-image experiments show the first crops the training data yields.
    """
    from psr.data.images import list_images
    from psr.data.unaligned import make_test_dataset

    if cfg.data.kind == "single_image":
        real_a, real_b = next(iter(data.dataset()))
        n = cfg.log.num_samples
        return np.asarray(real_a)[:n], np.asarray(real_b)[:n]

    def first(folder_test: Path, folder_train: Path) -> np.ndarray:
        folder = folder_test
        try:
            list_images(folder)
        except DatasetError:
            folder = folder_train
        dataset, _ = make_test_dataset(folder, image_size=cfg.data.crop_size, batch_size=1)
        images = [np.asarray(x)[0] for x, in zip(dataset.take(cfg.log.num_samples))]
        return np.stack(images)

    test_src, test_tgt = domain_folders(cfg, "test")
    train_src, train_tgt = domain_folders(cfg, "train")
    return first(test_src, train_src), first(test_tgt, train_tgt)


def _differences(old: dict, new: dict, prefix: tuple = ()) -> list[tuple]:
    keys = []
    for key in sorted(set(old) | set(new)):
        path = prefix + (key,)
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differences(a, b, path)
        elif a != b:
            keys.append(path)
    return keys


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def check_run_dir(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Refuses to resume a run directory that holds a different experiment."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    old.pop("resolved", None)
    changed = [
        k for k in _differences(old, config_to_dict(cfg))
        if not any(k[: len(p)] == p for p in _RESUMABLE_KEYS)
    ]
    if changed:
        names = ", ".join(".".join(k) for k in changed[:5])
        raise ConfigError(
            f"{run_dir} holds a run of a different configuration (changed: {names}). "
            "Use another run directory (--set log.run_dir=...) or delete it to start over."
        )


def train(cfg: ExperimentConfig, progress: bool = True, feature_extractor=None) -> Path:
    """Trains (or resumes) the experiment; returns the run directory.

    `feature_extractor` replaces InceptionV3 in periodic evaluation (tests use a small random network).
    """
    from psr.builders import build_cut_trainer, build_curriculum
    from psr.callbacks import (
        CropJitterSwitch,
        LearningRateLogger,
        NonFiniteLossGuard,
        SampleGrid,
        StepTimer,
        TensorBoardLogger,
    )
    from psr.schedules import GammaScheduler
    from psr.trainers.checkpoints import CheckpointSaver, TrainingState

    run_dir = Path(cfg.log.run_dir)
    check_run_dir(cfg, run_dir)
    if cfg.train.seed is not None:
        keras.utils.set_random_seed(cfg.train.seed)

    data = build_training_data(cfg)
    steps_per_epoch = cfg.train.steps_per_epoch or data.steps_per_epoch
    resolved = {
        "train_images_source": getattr(data, "num_a", 1),
        "train_images_target": getattr(data, "num_b", 1),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * cfg.train.total_epochs,
    }
    _write_text_atomic(run_dir / "config.yaml", dump_config(cfg, resolved))

    # Layers take the dtype policy in force when they are built; restore it so that nothing else inherits it.
    previous_policy = keras.config.dtype_policy()
    if cfg.train.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        trainer = build_cut_trainer(cfg, steps_per_epoch, seed=cfg.train.seed)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    state = TrainingState(run_dir / "checkpoints", trainer, keep=cfg.log.keep_checkpoints)
    epoch, step_in_epoch = state.restore()
    total = cfg.train.total_epochs
    if epoch or step_in_epoch:
        print(f"Resuming {run_dir} at epoch {epoch + 1}/{total}, step {step_in_epoch + 1}.", file=sys.stderr)

    real_a, real_b = fixed_sample_batch(cfg, data)
    saver = CheckpointSaver(state, every_epochs=cfg.log.checkpoint_every_epochs,
                            save_every_steps=cfg.log.save_every_steps, start_epoch=epoch, steps_offset=step_in_epoch)
    callbacks = []
    if hasattr(data, "jitter"):  # unaligned data: no crop jitter in decay epochs (spec §5)
        callbacks.append(CropJitterSwitch(data.jitter, cfg.train.epochs, cfg.data.jitter_in_decay_epochs))
    callbacks += [
        GammaScheduler(build_curriculum(cfg.loss.curriculum, total)),
        LearningRateLogger(),
        StepTimer(),
        NonFiniteLossGuard(run_dir / "checkpoints" / "latest"),
        saver,
        SampleGrid(real_a, real_b, run_dir / "samples", run_dir / "tensorboard", cfg.log.sample_every_epochs),
    ]
    callbacks += evaluation_callbacks(cfg, run_dir, feature_extractor)
    callbacks.append(TensorBoardLogger(run_dir / "tensorboard", cfg.log.log_every_steps))

    def epoch_data(steps: Optional[int] = None):
        dataset = data.dataset()
        if cfg.train.steps_per_epoch:
            dataset = dataset.repeat()
        return dataset.take(steps) if steps else dataset

    # A live progress bar (with ETA) on a terminal; one line per epoch when the output is a file.
    verbose = 0
    if progress and cfg.log.verbose:
        verbose = cfg.log.verbose if sys.stdout.isatty() else 2
    try:
        if step_in_epoch and epoch < total:
            # Finish the interrupted epoch, then go on with whole epochs.
            remaining = steps_per_epoch - step_in_epoch
            trainer.fit(epoch_data(remaining), epochs=epoch + 1, initial_epoch=epoch,
                        steps_per_epoch=remaining, callbacks=callbacks, verbose=verbose, shuffle=False)
            epoch += 1
        if epoch < total:
            trainer.fit(epoch_data(), epochs=total, initial_epoch=epoch,
                        steps_per_epoch=steps_per_epoch if cfg.train.steps_per_epoch else None,
                        callbacks=callbacks, verbose=verbose, shuffle=False)
    except KeyboardInterrupt:
        # The optimiser's step counter is the truth about the saved weights, wherever the interrupt landed.
        done_epoch, done_step = divmod(int(trainer.g_optimizer.iterations.numpy()), steps_per_epoch)
        state.save(done_epoch, step_in_epoch=done_step)
        print(f"\nInterrupted: state saved at epoch {done_epoch + 1}, step {done_step}. "
              "Rerun the same command to resume.", file=sys.stderr)
        raise

    if cfg.export.after_training:
        from psr.export import export_generator

        export_generator(trainer.generator, run_dir / "export", cfg.export.pad_multiple)
    if cfg.data.synthetic is not None and cfg.data.synthetic.kind == "shapes":
        report_content_scores(cfg, run_dir, trainer.generator)
    return run_dir


def evaluation_callbacks(cfg: ExperimentConfig, run_dir: Path, feature_extractor=None) -> list:
    """Periodic FID/KID during training (`eval.every_epochs`), keeping the best checkpoint and export."""
    if not cfg.eval.every_epochs:
        return []
    from psr.evaluation import PeriodicEvaluation

    return [PeriodicEvaluation(cfg, run_dir, extractor=feature_extractor)]


def report_content_scores(cfg: ExperimentConfig, run_dir: Path, generator) -> dict:
    """Synthetic data has ground-truth translations: PSNR/SSIM of G(testA) against them, and of the input."""
    from psr.export import translate_any_size
    from psr.inference import translate_files
    from psr.metrics.content import content_scores

    source, _ = domain_folders(cfg, "test")
    target = Path(cfg.data.root) / "testA_target"

    def translator(images):
        return translate_any_size(lambda x: generator(x, training=False), images, cfg.export.pad_multiple).numpy()

    out_dir = run_dir / "test_translations"
    translate_files(translator, [source], out_dir)
    scores = {
        "translation": content_scores(out_dir, target),
        "input_unchanged": content_scores(source, target),
    }
    _write_text_atomic(run_dir / "content_scores.json", json.dumps(scores, indent=2))
    t, i = scores["translation"], scores["input_unchanged"]
    print(
        f"Content preservation vs ground truth on {source}: PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f} "
        f"(input unchanged: PSNR {i['psnr']:.2f} dB, SSIM {i['ssim']:.3f}).",
        file=sys.stderr,
    )
    return scores

