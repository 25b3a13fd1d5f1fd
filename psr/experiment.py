"""One training run: config → data → trainer (through its method) → `fit` with callbacks → artifacts.

Run directory (`log.run_dir`):
    config.yaml      resolved configuration (written before the first step)
    checkpoints/     latest/ (resume), epochs/ (snapshots), best/ (periodic evaluation)
    tensorboard/     train/ scalars, images/ grids, eval/ metrics
    samples/         epoch_XXXX.png grids: input | translation | target sample | identity
    export/          SavedModel for TF Serving (after training, or `main.py export`)

Rerunning the same command resumes from `checkpoints/latest`. This module knows
no method: the trainer comes from `psr.methods` and is used through the trainer
contract (`psr.trainers.base.Trainer`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import keras

from psr.config import ExperimentConfig, config_from_dict, config_to_dict, dump_config
from psr.errors import ConfigError, TrainingError

# Keys whose change does not make a run directory a different experiment. Changing them on resume is
# accepted (with a notice for the ones that change training): epochs extend a run; learning rate, loss
# weights and loss switches are the fixes a non-finite loss asks for; none of them changes a variable's shape.
RESUMABLE_KEYS = (
    ("log",), ("export",), ("eval",), ("name",),
    ("train", "jit_compile"), ("train", "epochs"), ("train", "decay_epochs"), ("train", "distribute"),
    ("train", "learning_rate"), ("train", "beta_1"), ("train", "beta_2"), ("train", "epsilon"),
    ("train", "deterministic"),
    ("loss", "lambda_gan"), ("loss", "lambda_contrastive"), ("loss", "lambda_src"), ("loss", "lambda_identity"),
    ("loss", "lambda_r1"), ("loss", "temperature"), ("loss", "contrastive"), ("loss", "src_divergence"),
    ("loss", "reported_value"), ("loss", "layer_reduction"), ("loss", "branch_reduction"),
    ("loss", "src_on_identity"), ("loss", "gan_mode"), ("loss", "curriculum"),
)
# Of those, the ones that only change bookkeeping (no notice).
_QUIET_KEYS = (("log",), ("export",), ("eval",), ("name",), ("train", "jit_compile"), ("train", "epochs"),
               ("train", "decay_epochs"))


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


def _value(tree: dict, path: tuple):
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_run_dir(cfg: ExperimentConfig, run_dir: Path) -> list[str]:
    """Refuses to resume a run directory that holds a different experiment.

    Returns notices for the resumable keys that changed (e.g. a lower learning rate after a NaN).
    """
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raw.pop("resolved", None)
    try:
        # Read back through the parser: files written before a key existed get its default (`method`, ...).
        old = config_to_dict(config_from_dict(raw))
    except ConfigError:
        old = raw
    new = config_to_dict(cfg)
    changed = _differences(old, new)
    refused = [k for k in changed if not any(k[: len(p)] == p for p in RESUMABLE_KEYS)]
    if refused:
        names = ", ".join(".".join(k) for k in refused[:5])
        raise ConfigError(
            f"{run_dir} holds a run of a different configuration (changed: {names}). "
            "Use another run directory (--set log.run_dir=...) or delete it to start over."
        )
    return [
        f"{'.'.join(k)} {_value(old, k)!r} → {_value(new, k)!r}"
        for k in changed if not any(k[: len(p)] == p for p in _QUIET_KEYS)
    ]


# === Interruption ===


class Interrupted(KeyboardInterrupt):
    """Raised at a step boundary after SIGTERM / SIGINT, so the state can be saved exactly there."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


class StopOnSignal(keras.callbacks.Callback):
    """Turns SIGTERM and SIGINT into a clean stop after the current step.

    The handler only records the signal; the step in flight finishes, then `Interrupted` is raised from
    `on_train_batch_end`, where the trainer's state is consistent. A second SIGINT stops at once.
    """

    def __init__(self):
        super().__init__()
        self.received: Optional[str] = None

    def handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.received = name

    def on_train_batch_end(self, batch, logs=None):
        if self.received:
            raise Interrupted(self.received)


@contextmanager
def signal_handlers(stopper: StopOnSignal):
    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stopper.handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# === The run ===


def configure_determinism(cfg: ExperimentConfig) -> None:
    """Seeds Python/NumPy/TensorFlow; with `train.deterministic`, TensorFlow's deterministic kernels too."""
    import tensorflow as tf

    if cfg.train.seed is not None:
        keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()


def build_trainer(cfg: ExperimentConfig, inputs, strategy):
    """The method's trainer, built in the strategy's scope under the run's dtype policy."""
    from psr.methods import get_method

    builder = get_method(cfg.method).trainer_builder()
    # Layers take the dtype policy in force when they are built; restore it so that nothing else inherits it.
    previous_policy = keras.config.dtype_policy()
    if cfg.train.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with strategy.scope():
            return builder(cfg.model, cfg.loss, cfg.train, inputs)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def training_callbacks(cfg: ExperimentConfig, run_dir: Path, trainer, data, state, chief: bool,
                       feature_extractor=None) -> list:
    """Every callback of a run, in order; only the chief gets those that write files."""
    from psr.callbacks import (
        CropJitterSwitch,
        LearningRateLogger,
        NonFiniteLossGuard,
        SampleGrid,
        ScheduleDriver,
        StepTimer,
        TensorBoardLogger,
    )
    from psr.data.builders import fixed_sample_batch
    from psr.trainers.checkpoints import CheckpointSaver

    callbacks = [ScheduleDriver()]
    if hasattr(data, "jitter"):  # unaligned data: no crop jitter in decay epochs (spec §5)
        callbacks.append(CropJitterSwitch(data.jitter, cfg.train.epochs, cfg.data.jitter_in_decay_epochs))
    callbacks += [LearningRateLogger(), StepTimer(), NonFiniteLossGuard(run_dir / "checkpoints" / "latest")]
    if not chief:
        return callbacks
    real_a, real_b = fixed_sample_batch(cfg.data, cfg.log.num_samples, data)
    callbacks += [
        CheckpointSaver(state, every_epochs=cfg.log.checkpoint_every_epochs,
                        save_every_steps=cfg.log.save_every_steps, save_every_minutes=cfg.log.save_every_minutes),
        SampleGrid(real_a, real_b, run_dir / "samples", run_dir / "tensorboard", cfg.log.sample_every_epochs),
    ]
    callbacks += evaluation_callbacks(cfg, run_dir, feature_extractor)
    callbacks.append(TensorBoardLogger(run_dir / "tensorboard", cfg.log.log_every_steps))
    return callbacks


def train(cfg: ExperimentConfig, progress: bool = True, feature_extractor=None) -> Path:
    """Trains (or resumes) the experiment; returns the run directory.

    `feature_extractor` replaces InceptionV3 in periodic evaluation (tests use a small random network).
    """
    from psr.data.builders import build_training_data
    from psr.methods import TrainerInputs
    from psr.trainers.checkpoints import TrainingState
    from psr.trainers.distribution import is_chief, make_strategy

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow call of the process.
    strategy = make_strategy(cfg.train.distribute)
    chief = is_chief(strategy)
    run_dir = Path(cfg.log.run_dir)
    notices = check_run_dir(cfg, run_dir)
    configure_determinism(cfg)
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} is the global batch and must be divisible by the "
            f"{replicas} replicas of train.distribute {cfg.train.distribute}; set it to a multiple of {replicas}."
        )

    data = build_training_data(cfg.data, cfg.train.batch_size, cfg.train.seed)
    steps_per_epoch = cfg.train.steps_per_epoch or data.steps_per_epoch
    total = cfg.train.total_epochs
    resolved = {
        "train_images_source": getattr(data, "num_a", 1),
        "train_images_target": getattr(data, "num_b", 1),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * total,
        "replicas": replicas,
    }
    if chief:
        _write_text_atomic(run_dir / "config.yaml", dump_config(cfg, resolved))

    inputs = TrainerInputs(image_size=cfg.data.crop_size, steps_per_epoch=steps_per_epoch, seed=cfg.train.seed)
    trainer = build_trainer(cfg, inputs, strategy)
    state = TrainingState(run_dir / "checkpoints", trainer, keep=cfg.log.keep_checkpoints,
                          steps_per_epoch=steps_per_epoch)
    epoch, step_in_epoch = state.restore()
    for path, reason in state.skipped:
        print(f"Skipped checkpoint {path} (cannot be loaded: {reason}); using an older one.", file=sys.stderr)
    for notice in notices:
        print(f"Resuming with a changed setting: {notice}.", file=sys.stderr)
    done_steps = trainer.completed_steps
    if done_steps >= steps_per_epoch * total:
        print(f"{run_dir} already finished training ({total} epochs, {done_steps} steps); "
              "raise train.epochs or train.decay_epochs to train further.", file=sys.stderr)
    elif done_steps:
        print(f"Resuming {run_dir} at epoch {epoch + 1}/{total}, step {step_in_epoch + 1}.", file=sys.stderr)

    stopper = StopOnSignal()
    callbacks = [stopper] + training_callbacks(cfg, run_dir, trainer, data, state, chief, feature_extractor)

    def epoch_data(steps: Optional[int] = None):
        dataset = data.dataset()
        if cfg.train.steps_per_epoch:
            dataset = dataset.repeat()
        return dataset.take(steps) if steps else dataset

    # A live progress bar (with ETA) on a terminal; one line per epoch when the output is a file.
    verbose = 0
    if progress and cfg.log.verbose and chief:
        verbose = cfg.log.verbose if sys.stdout.isatty() else 2
    try:
        with signal_handlers(stopper):
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
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        if chief:
            path = state.save()
            done_epoch, done_step = state.position()
            print(f"\n{name}: state saved at epoch {done_epoch + 1}, step {done_step} ({path}). "
                  "Rerun the same command to resume.", file=sys.stderr)
        raise Interrupted(name) from None

    if chief:
        finish_run(cfg, run_dir, trainer.inference_network())
    return run_dir


def finish_run(cfg: ExperimentConfig, run_dir: Path, network) -> None:
    """After training: the export and, on the embedded synthetic data, the content scores."""
    if cfg.export.after_training:
        from psr.export import export_generator

        export_generator(network, run_dir / "export", cfg.export.pad_multiple)
    if cfg.data.synthetic is not None and cfg.data.synthetic.kind == "shapes":
        report_content_scores(cfg, run_dir, network)


def evaluation_callbacks(cfg: ExperimentConfig, run_dir: Path, feature_extractor=None) -> list:
    """Periodic FID/KID during training (`eval.every_epochs`), keeping the best checkpoint and export."""
    if not cfg.eval.every_epochs:
        return []
    from psr.evaluation import PeriodicEvaluation

    return [PeriodicEvaluation(cfg, run_dir, extractor=feature_extractor)]


def report_content_scores(cfg: ExperimentConfig, run_dir: Path, generator) -> dict:
    """Synthetic data has ground-truth translations: PSNR/SSIM of G(testA) against them, and of the input."""
    from psr.data.builders import domain_folders
    from psr.export import translate_any_size
    from psr.inference import translate_files
    from psr.metrics.content import content_scores

    source, _ = domain_folders(cfg.data.root, cfg.data.direction, "test")
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


__all__ = ["RESUMABLE_KEYS", "check_run_dir", "train"]
