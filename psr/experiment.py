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

import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import keras

from psr.callbacks import Interrupted, StopOnSignal
from psr.config import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ExportConfig,
    LogConfig,
    TrainConfig,
    dump_config,
    resume_notices,
)
from psr.errors import ConfigError
from psr.rundir import RunDir, atomic_write_json, atomic_write_text

# === Interruption ===


@contextmanager
def signal_handlers(stopper):
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


def configure_determinism(train: TrainConfig) -> None:
    """Seeds Python/NumPy/TensorFlow; with `train.deterministic`, TensorFlow's deterministic kernels too."""
    import tensorflow as tf

    if train.seed is not None:
        keras.utils.set_random_seed(train.seed)
    if train.deterministic:
        tf.config.experimental.enable_op_determinism()


# bfloat16 tensor-core kernels (cuDNN, cuBLAS) start at compute capability 8.0 (Ampere).
BFLOAT16_MIN_COMPUTE_CAPABILITY = (8, 0)


def check_mixed_precision_devices(train: TrainConfig, gpus=None) -> None:
    """`train.mixed_precision` (mixed_bfloat16) on a GPU older than Ampere: one line, before anything trains.

    `gpus`: (name, compute capability) pairs; default the GPUs TensorFlow sees. CPUs run bfloat16 everywhere
    (emulated without AVX-512-BF16 / AMX, hence slowly: see the README's Benchmarks).
    """
    if not train.mixed_precision:
        return
    if gpus is None:
        import tensorflow as tf

        gpus = []
        for device in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(device)
            gpus.append((details.get("device_name", device.name), details.get("compute_capability")))
    for name, capability in gpus:
        if capability is not None and tuple(capability) < BFLOAT16_MIN_COMPUTE_CAPABILITY:
            raise ConfigError(
                f"train.mixed_precision: true trains in bfloat16, which needs a GPU of compute capability 8.0 or "
                f"newer (Ampere, Hopper); {name} is {capability[0]}.{capability[1]}. "
                "Set train.mixed_precision: false on this GPU."
            )


def forced_fused_notices(model, train: TrainConfig) -> list:
    """One notice per `model.<network>.fused: true` that the measurements say costs time on this machine."""
    import dataclasses

    from psr.models.fused import forced_fused_notice

    policy = "mixed_bfloat16" if train.mixed_precision else "float32"
    notices = []
    for field in dataclasses.fields(model):
        section = getattr(model, field.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "fused"):
            notice = forced_fused_notice(f"model.{field.name}.fused", section.fused, policy)
            if notice:
                notices.append(notice)
    return notices


def build_trainer(method, model, loss, train: TrainConfig, inputs, strategy):
    """The method's trainer, built in the strategy's scope under the run's dtype policy."""
    builder = method.trainer_builder()
    # Layers take the dtype policy in force when they are built; restore it so that nothing else inherits it.
    previous_policy = keras.config.dtype_policy()
    if train.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with strategy.scope():
            return builder(model, loss, train, inputs)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def training_callbacks(data_cfg: DataConfig, log: LogConfig, epochs: int, run: RunDir, data, state, chief: bool,
                       evaluation: list) -> list:
    """Every callback of a run, in order; only the chief gets those that write files.

    `epochs`: epochs at the initial learning rate (crop jitter stops after them); `evaluation`: the
    periodic-evaluation callbacks (chief only).
    """
    from psr.callbacks import (
        CheckpointSaver,
        CropJitterSwitch,
        LearningRateLogger,
        NonFiniteLossGuard,
        SampleGrid,
        ScheduleDriver,
        StepTimer,
        TensorBoardLogger,
    )
    from psr.data.builders import fixed_sample_batch

    callbacks = [ScheduleDriver()]
    if hasattr(data, "jitter"):  # unaligned data: no crop jitter in decay epochs (spec §5)
        callbacks.append(CropJitterSwitch(data.jitter, epochs, data_cfg.jitter_in_decay_epochs))
    callbacks += [LearningRateLogger(), StepTimer(), NonFiniteLossGuard(run.checkpoints_latest)]
    if not chief:
        return callbacks
    real_a, real_b = fixed_sample_batch(data_cfg, log.num_samples, data)
    callbacks.append(SampleGrid(real_a, real_b, run, log.sample_every_epochs))
    callbacks += evaluation
    callbacks.append(TensorBoardLogger(run.tensorboard_train, log.log_every_steps))
    # Last: an epoch's checkpoint is written once the epoch's other work is done, so a kill at any point
    # either resumes before that work (and redoes it) or after all of it.
    callbacks.append(CheckpointSaver(state, every_epochs=log.checkpoint_every_epochs,
                                     save_every_steps=log.save_every_steps,
                                     save_every_minutes=log.save_every_minutes))
    return callbacks


def train(cfg: ExperimentConfig, progress: bool = True, feature_extractor=None) -> Path:
    """Trains (or resumes) the experiment; returns the run directory.

    `feature_extractor` replaces InceptionV3 in periodic evaluation (tests use a small random network).
    """
    from psr.data.builders import build_training_data
    from psr.methods import TrainerInputs, get_method
    from psr.trainers.checkpoints import TrainingState
    from psr.trainers.distribution import is_chief, make_strategy

    # MultiWorkerMirroredStrategy must exist before any other TensorFlow call of the process.
    strategy = make_strategy(cfg.train.distribute)
    chief = is_chief(strategy)
    method = get_method(cfg.method)
    run = RunDir(cfg.log.run_dir)
    run_dir = run.path
    if chief:
        # Before anything is written: the folder must be new, empty or a psr run (marked now).
        run.claim()
    notices = resume_notices(run.config, cfg)
    check_mixed_precision_devices(cfg.train)
    configure_determinism(cfg.train)
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} is the global batch and must be divisible by the "
            f"{replicas} replicas of train.distribute {cfg.train.distribute}; set it to a multiple of {replicas}."
        )

    prepare = method.hook("prepare")
    if prepare is not None and chief:
        prepare(cfg)
        configure_determinism(cfg.train)  # the same seeds whether or not a teacher was trained just now
    data = build_training_data(cfg.data, cfg.train.batch_size, cfg.train.seed, create=chief)
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
        atomic_write_text(run.config, dump_config(cfg, resolved))

    domains = tuple(getattr(data, "domain_names", ()))
    if domains:
        expected = getattr(cfg.model, "num_domains", len(domains))
        if expected != len(domains):
            raise ConfigError(
                f"{cfg.data.root} holds {len(domains)} domains ({', '.join(domains)}) but model.num_domains is "
                f"{expected}; set model.num_domains: {len(domains)} or point data.root at the right dataset."
            )
        if chief:
            atomic_write_json(run.domains, list(domains))
    inputs = TrainerInputs(image_size=cfg.data.crop_size, steps_per_epoch=steps_per_epoch, seed=cfg.train.seed,
                           domains=domains, paired=cfg.data.kind == "aligned")
    trainer = build_trainer(method, cfg.model, cfg.loss, cfg.train, inputs, strategy)
    for notice in forced_fused_notices(cfg.model, cfg.train) if chief else ():
        print(f"Notice: {notice}.", file=sys.stderr)
    state = TrainingState(run.checkpoints, trainer, keep=cfg.log.keep_checkpoints,
                          steps_per_epoch=steps_per_epoch)
    epoch, step_in_epoch = state.restore()
    for path, reason in state.skipped:
        print(f"Skipped checkpoint {path} (cannot be loaded: {reason}); using an older one.", file=sys.stderr)
    for notice in notices:
        print(f"Resuming with a changed setting: {notice}.", file=sys.stderr)
    done_steps = trainer.completed_steps
    finished_before = done_steps >= steps_per_epoch * total
    if finished_before:
        print(f"{run_dir} already finished training ({total} epochs, {done_steps} steps); "
              "raise train.epochs or train.decay_epochs to train further.", file=sys.stderr)
    elif done_steps:
        print(f"Resuming {run_dir} at epoch {epoch + 1}/{total}, step {step_in_epoch + 1}.", file=sys.stderr)

    stopper = StopOnSignal(steps_per_epoch)
    evaluation = evaluation_callbacks(cfg.eval, cfg.data, cfg.export, method, run, feature_extractor) if chief else []
    callbacks = training_callbacks(cfg.data, cfg.log, cfg.train.epochs, run, data, state, chief, evaluation)
    callbacks.append(stopper)

    def epoch_data(steps: Optional[int] = None):
        if getattr(data, "indexed_by_step", False):
            # An endless stream that is a function of the iteration: continue where the run stopped.
            dataset = data.dataset(start_step=trainer.completed_steps)
        else:
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
                endless = cfg.train.steps_per_epoch or getattr(data, "indexed_by_step", False)
                trainer.fit(epoch_data(), epochs=total, initial_epoch=epoch,
                            steps_per_epoch=steps_per_epoch if endless else None,
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
        after = method.hook("after_training")
        if after is not None:  # compression: the evolution search and the chosen sub-network
            after(cfg, run, trainer.inference_network())
        finish_run(method, cfg.export, cfg.data, run, trainer.inference_network(), only_missing=finished_before)
    return run_dir


def finish_run(method, export: ExportConfig, data: DataConfig, run: RunDir, network,
               only_missing: bool = False) -> None:
    """After training: the method's export and, on embedded data with ground truth, its content scores.

    `only_missing` (a rerun of a finished run): write only what is not there yet, e.g. after a kill
    during the export.
    """
    from psr.export import is_saved_model

    if export.after_training and not (only_missing and is_saved_model(run.export)):
        options = {"domains": run.domain_names()} if run.domain_names() else {}
        method.exporter()(network, run.export, export.pad_multiple, inputs=run.inputs,
                          fix=f"move your files out of {run.export}", **options)
    reporter = method.reporter()
    if reporter is not None and data.synthetic is not None and not (only_missing and run.content_scores.is_file()):
        reporter(data, export.pad_multiple, run, network)


def evaluation_callbacks(eval_cfg: EvalConfig, data: DataConfig, export: ExportConfig, method,
                         run: RunDir, feature_extractor=None) -> list:
    """Periodic evaluation during training (`eval.every_epochs`), keeping the best checkpoint and export."""
    if not eval_cfg.every_epochs:
        return []
    from psr.callbacks import PeriodicEvaluation

    return [PeriodicEvaluation(eval_cfg, data, export.pad_multiple, method.eval_protocol, run.path,
                               extractor=feature_extractor, exporter=method.exporter())]


def report_content_scores(data: DataConfig, pad_multiple: int, run: RunDir, generator) -> Optional[dict]:
    """The shapes data has ground-truth translations: PSNR/SSIM of G(testA) against them, and of the input."""
    if data.synthetic is None or data.synthetic.kind != "shapes":
        return None
    from psr.data.layout import domain_folders
    from psr.export import translate_any_size
    from psr.inference import translate_files
    from psr.metrics.content import content_scores

    source, _ = domain_folders(data.root, data.direction, "test")
    target = Path(data.root) / "testA_target"

    def translator(images):
        return translate_any_size(lambda x: generator(x, training=False), images, pad_multiple).numpy()

    out_dir = run.test_translations
    translate_files(translator, [source], out_dir)
    scores = {
        "translation": content_scores(out_dir, target),
        "input_unchanged": content_scores(source, target),
    }
    atomic_write_json(run.content_scores, scores)
    t, i = scores["translation"], scores["input_unchanged"]
    print(
        f"Content preservation vs ground truth on {source}: PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f} "
        f"(input unchanged: PSNR {i['psnr']:.2f} dB, SSIM {i['ssim']:.3f}).",
        file=sys.stderr,
    )
    return scores


__all__ = ["train"]
