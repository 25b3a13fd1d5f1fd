"""Callbacks that turn a `fit` into a monitored, resumable run — all of psr's, in one place.

Each callback has one job: drive the scheduled variables, switch the data
pipeline's crop jitter, log the learning rates and step time, write TensorBoard
scalars, write image grids, stop on a non-finite loss, save checkpoints, stop
cleanly on SIGTERM/SIGINT, evaluate periodically. They reach the trainer only
through the contract of `psr.trainers.base.Trainer` (step counter, optimisers,
schedules, sample grid, inference network), so every method gets them unchanged.
`GammaScheduler` is the same job as `ScheduleDriver` for plain Keras models.
"""

from __future__ import annotations

import json
import math
import numbers
import signal
import time
from pathlib import Path
from typing import Callable, Optional, Union

import keras
import numpy as np
import tensorflow as tf

from psr.config import DataConfig, EvalConfig
from psr.data.layout import domain_folders
from psr.errors import TrainingError
from psr.evaluation import make_extractor, resolve_paired_options, translate_split
from psr.metrics.records import append_record, extractor_record
from psr.rundir import RunDir, atomic_write_json


class CropJitterSwitch(keras.callbacks.Callback):
    """Turns the random-crop jitter off in decay epochs, as the official loader does (spec §5).

    Args:
        jitter: the dataset's boolean `tf.Variable`.
        n_epochs: epochs at the initial learning rate; epochs after it are decay epochs.
        jitter_in_decay_epochs: keep the jitter (a deviation from the official code).
    """

    def __init__(self, jitter: tf.Variable, n_epochs: int, jitter_in_decay_epochs: bool = False):
        super().__init__()
        self.jitter = jitter
        self.n_epochs = n_epochs
        self.jitter_in_decay_epochs = jitter_in_decay_epochs

    def on_epoch_begin(self, epoch, logs=None):
        # Keras epochs are 0-based; the official code's epoch e = epoch + 1 is a decay epoch when e > n_epochs.
        self.jitter.assign(self.jitter_in_decay_epochs or epoch + 1 <= self.n_epochs)


class ScheduleDriver(keras.callbacks.Callback):
    """Sets every scheduled variable of the trainer (`trainer.schedules()`) before each step.

    The value is a function of the trainer's step counter alone, so a resumed
    run reads exactly the values of an uninterrupted one, whatever the kill
    point. At each epoch end the values of the epoch's last step go into the logs
    (e.g. `Gamma` and `gamma`).
    """

    def _apply(self):
        step = self.model.completed_steps
        for scheduled in self.model.schedules():
            scheduled.variable.assign(scheduled.schedule(step))

    def on_train_begin(self, logs=None):
        self._apply()

    def on_train_batch_begin(self, batch, logs=None):
        self._apply()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for scheduled in self.model.schedules():
                logs.update(scheduled.logs())


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rates of the epoch to its logs (History, TensorBoard).

    `learning_rate` is the trainer's first optimiser's; when the optimisers' rates differ, each one is
    also logged as `learning_rate/<name>`.
    """

    def current(self) -> dict:
        return self.model.learning_rates()

    def on_epoch_begin(self, epoch, logs=None):
        # Read at the start: by the epoch's end the step counter already points into the next epoch.
        self._values = self.current()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._values:
            values = list(self._values.values())
            logs["learning_rate"] = values[0]
            if len(set(values)) > 1:
                logs.update({f"learning_rate/{name}": value for name, value in self._values.items()})


class StepTimer(keras.callbacks.Callback):
    """Mean wall-clock seconds per training step over the epoch → `logs["step_time"]`."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._steps:
            logs["step_time"] = (time.perf_counter() - self._start) / self._steps


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops with a clear `TrainingError` when a loss becomes NaN or infinite.

    Checkpoints are never written with non-finite values (`TrainingState.save` checks every variable),
    so the newest checkpoint in `checkpoint_dir` is always a finite one to resume from. The message names
    it (or says that none exists) and the fix; the keys it suggests changing are accepted on resume.
    """

    def __init__(self, checkpoint_dir: Optional[Path] = None):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for name, value in (logs or {}).items():
            value = float(value)
            if not math.isfinite(value):
                from psr.trainers.checkpoints import latest_checkpoint_in, resume_advice

                self.model.stop_training = True
                last = latest_checkpoint_in(self.checkpoint_dir) if self.checkpoint_dir else None
                raise TrainingError(
                    f"Loss '{name}' became {value} at epoch {self.epoch + 1}, step {batch + 1}. {resume_advice(last)}"
                )


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes every epoch log as a scalar, and the running step logs every `log_every_steps` steps.

    Put it after the callbacks that add to `logs` (Γ, learning rate, step time).

    Args:
        log_dir: the event-file folder (`RunDir.tensorboard_train`).
        log_every_steps: cadence of the `step/` scalars.
    """

    def __init__(self, log_dir: Path, log_every_steps: int = 100):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.log_every_steps = log_every_steps
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        return self._writer

    def _global_step(self) -> int:
        return self.model.completed_steps

    def on_train_batch_end(self, batch, logs=None):
        step = self._global_step()
        if logs and step % self.log_every_steps == 0:
            with self.writer.as_default(step=step):
                for name, value in logs.items():
                    tf.summary.scalar(f"step/{name}", float(value))

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default(step=epoch + 1):
            for name, value in (logs or {}).items():
                tf.summary.scalar(f"epoch/{name}", float(value))
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


class SampleGrid(keras.callbacks.Callback):
    """Image grid of a fixed batch: input | translation | target-domain sample | identity G(y).

    Written to TensorBoard (`RunDir.tensorboard_images`) and as `RunDir.sample_grid(epoch)` every
    `every_epochs`.

    Args:
        real_a, real_b: fixed `[n, H, W, 3]` arrays in [-1, 1] (chosen once, before training).
        run: the run directory (`psr.rundir.RunDir`) whose samples and TensorBoard folders get the grid.
        every_epochs: cadence.
        translate: `images -> translations`; default: the trainer's own `sample_grid`.
    """

    def __init__(
        self,
        real_a: np.ndarray,
        real_b: np.ndarray,
        run,
        every_epochs: int = 1,
        translate: Optional[Callable] = None,
    ):
        super().__init__()
        self.real_a = np.asarray(real_a, np.float32)
        self.real_b = np.asarray(real_b, np.float32)
        self.run = run
        self.every_epochs = every_epochs
        self.translate = translate
        self._writer = None

    def grid(self) -> np.ndarray:
        from psr.trainers.base import translation_grid

        if self.translate is None:
            return self.model.sample_grid(self.real_a, self.real_b)
        return translation_grid(self.real_a, self.real_b, self.translate)

    def write(self, step: int) -> Path:
        from psr.data.images import save_image, to_uint8

        grid = self.grid()
        path = self.run.sample_grid(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.run.tensorboard_images))
        with self._writer.as_default(step=step):
            tf.summary.image("input|translation|target|identity", to_uint8(grid)[None], max_outputs=1)
        self._writer.flush()
        return path

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_epochs == 0:
            self.write(epoch + 1)


class GammaScheduler(keras.callbacks.Callback):
    """Writes `curriculum(epoch)` into the model's Γ variable during `fit`.

    The model must own a `keras.Variable` named by `variable_name` (the one
    handed to `HardDCELoss(weight_temperature=...)`); assigning it changes the
    value the compiled train step reads without retracing.

    Args:
        curriculum: a `GammaCurriculum` (any callable of the 1-based epoch).
        variable_name: attribute of the model holding the variable.
        per_step: False (official): Γ is set once at each epoch begin to
            `curriculum(epoch + 1)` (Keras epochs are 0-based). True: Γ is set
            before every batch to `curriculum(epoch + (batch + 1) / steps_per_epoch)`,
            a smooth version of the same curve whose value on an epoch's last
            batch equals the per-epoch value, so both modes agree at epoch ends
            and the step (`e > step_epoch`) begins on the same epoch.
        steps_per_epoch: needed for `per_step=True`; None takes `fit`'s
            `steps` (known when the dataset has a length).

    At every epoch end `logs["Gamma"]` (Γ) and `logs["gamma"]` (1/Γ) are set,
    so they reach `History` and any later callback (list this callback
    before `keras.callbacks.TensorBoard`).
    """

    def __init__(self, curriculum, variable_name="weight_temperature", per_step=False, steps_per_epoch=None):
        super().__init__()
        if not (steps_per_epoch is None or (isinstance(steps_per_epoch, numbers.Integral) and steps_per_epoch >= 1)):
            raise ValueError(
                f"Argument `steps_per_epoch` must be None or an integer >= 1. Received: steps_per_epoch={steps_per_epoch!r}"
            )
        self.curriculum = curriculum
        self.variable_name = variable_name
        self.per_step = per_step
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0

    def _variable(self):
        variable = getattr(self.model, self.variable_name, None)
        if not hasattr(variable, "assign"):
            raise ValueError(
                f"GammaScheduler needs a keras.Variable at `model.{self.variable_name}` "
                f"(pass it to HardDCELoss as weight_temperature). "
                f"Received: {type(self.model).__name__}.{self.variable_name}={variable!r}"
            )
        return variable

    def _steps_per_epoch(self):
        steps = self.steps_per_epoch or (self.params or {}).get("steps")
        if not steps:
            raise ValueError(
                "GammaScheduler(per_step=True) needs the number of steps per epoch: pass "
                "`steps_per_epoch` or give `fit` a dataset of known length. Received: steps_per_epoch=None"
            )
        return steps

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._variable().assign(self.curriculum(epoch + 1))

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step:
            fractional_epoch = self._epoch + (batch + 1) / self._steps_per_epoch()
            self._variable().assign(self.curriculum(fractional_epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            value = float(self._variable())
            logs["Gamma"] = value
            logs["gamma"] = 1.0 / value


class CheckpointSaver(keras.callbacks.Callback):
    """Saves the training state at epoch ends (snapshot every `every_epochs`), every `save_every_steps`
    iterations and every `save_every_minutes` of wall-clock time (0 turns either off)."""

    def __init__(self, state, every_epochs: int = 5, save_every_steps: int = 0,
                 save_every_minutes: float = 0.0, clock=time.monotonic):
        super().__init__()
        self.state = state
        self.every_epochs = every_epochs
        self.save_every_steps = save_every_steps
        self.save_every_seconds = 60.0 * save_every_minutes
        self.clock = clock
        self._last_save = clock()

    def _save(self, snapshot: bool = False) -> None:
        self.state.save(snapshot=snapshot)
        self._last_save = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        step = self.state.trainer.completed_steps
        if self.state.steps_per_epoch and step % self.state.steps_per_epoch == 0:
            # An epoch's last step: the epoch-end save follows once the epoch's other work (sample grid,
            # evaluation, logs) is done. Saving here would let a kill in between skip that work on resume.
            return
        if self.save_every_steps and step % self.save_every_steps == 0:
            self._save()
        elif self.save_every_seconds and self.clock() - self._last_save >= self.save_every_seconds:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._save(snapshot=(epoch + 1) % self.every_epochs == 0)


class Interrupted(KeyboardInterrupt):
    """Raised at a step boundary after SIGTERM / SIGINT, so the state can be saved exactly there."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


class StopOnSignal(keras.callbacks.Callback):
    """Turns SIGTERM and SIGINT into a clean stop after the current step.

    The handler only records the signal; the step in flight finishes, then `Interrupted` is raised from
    `on_train_batch_end`, where the trainer's state is consistent. On an epoch's last step it waits for
    `on_epoch_end`, so the epoch's own work (sample grid, evaluation, its checkpoint) is done first; list
    this callback last. A second SIGINT stops at once.
    """

    def __init__(self, steps_per_epoch: int):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.received: Optional[str] = None

    def handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.received = name

    def on_train_batch_end(self, batch, logs=None):
        if self.received and self.model.completed_steps % self.steps_per_epoch:
            raise Interrupted(self.received)

    def on_epoch_end(self, epoch, logs=None):
        if self.received:
            raise Interrupted(self.received)


class PeriodicEvaluation(keras.callbacks.Callback):
    """Every `eval.every_epochs`: translate the test split, compute the metrics, keep the best.

    The best generator (by `eval.best_metric`: lower is better, except for the
    segmentation scores, see `psr.metrics.paired.higher_is_better`) is saved to
    `checkpoints/best/` and exported to `export_best/`. Metric values are added
    to the epoch logs as `eval_<name>` (so the TensorBoard logger writes them).

    Args:
        eval_cfg: the `eval` section (metrics, best metric, extractor, paired-metric options).
        data: the `data` section (test split, crop size).
        pad_multiple: `export.pad_multiple`, for any-size translation and the best export.
        protocol: the method's paper evaluation protocol (which FID features `auto` means).
        run_dir: the run directory.
        extractor: replaces the configured feature extractor (tests).
    """

    def __init__(self, eval_cfg: EvalConfig, data: DataConfig, pad_multiple: int, protocol: str,
                 run_dir: Union[str, Path], extractor=None, exporter: Optional[Callable] = None):
        super().__init__()
        self.eval_cfg = eval_cfg
        self.data = data
        self.pad_multiple = pad_multiple
        self.protocol = protocol
        self.run = RunDir(run_dir)
        if exporter is None:
            from psr.export import export_generator as exporter
        self.exporter = exporter  # writes the best model's SavedModel (the method's export)
        # Resolved here, before training starts: a missing weights file is an error at start-up.
        from psr.metrics.paired import split_metric_names

        if extractor is None and split_metric_names(eval_cfg.metrics)[0]:
            extractor = make_extractor(eval_cfg.features, eval_cfg.feature_weights, eval_cfg.inception_weights,
                                       protocol=protocol)
        self.extractor = extractor
        self.best_file = self.run.best_json
        self.best = json.loads(self.best_file.read_text())["value"] if self.best_file.is_file() else None

    def _evaluate_multimodal(self) -> dict:
        from psr.evaluation_multimodal import evaluate_translator, flatten_scores

        lpips = None
        if "lpips" in self.eval_cfg.metrics:
            from psr.metrics.lpips import build_lpips

            lpips = build_lpips(self.eval_cfg.lpips_alexnet_weights, self.eval_cfg.lpips_weights)
        results = evaluate_translator(
            self.model.inference_network(), self.data.root, self.data.crop_size, self.eval_cfg.metrics,
            extractor=self.extractor, lpips=lpips, cache_dir=str(Path(self.data.root) / ".psr_cache"),
            max_images=self.eval_cfg.max_images,
        )
        return flatten_scores(results)

    def evaluate(self, epoch: int) -> dict:
        if self.protocol == "multimodal":
            scores = self._evaluate_multimodal()
            append_record(self.run.eval_jsonl, {"epoch": epoch, **extractor_record(self.extractor), **scores})
            return scores
        configs = getattr(self.model, "evaluated_configs", None)
        if configs is None:
            return self._evaluate_network(self.model.inference_network(), epoch)
        # A supernet (compression): the widest and the narrowest sub-network (spec compression §5.3); the
        # widest's scores are the unsuffixed ones (and choose the best checkpoint), the others get a suffix.
        supernet = self.model.inference_network()
        scores = {}
        for index, (label, config) in enumerate(configs()):
            supernet.set_channel_config(config)
            values = self._evaluate_network(supernet, epoch, record=False)
            scores.update(values if index == 0 else {f"{k}_{label}": v for k, v in values.items()})
        supernet.set_channel_config(configs()[0][1])
        append_record(self.run.eval_jsonl, {"epoch": epoch, **extractor_record(self.extractor), **scores})
        return scores

    def _evaluate_network(self, generator, epoch: int, record: bool = True) -> dict:
        from psr.export import translate_any_size
        from psr.metrics.paired import (
            PairedInputs,
            compute_paired_metrics,
            split_metric_names,
        )
        from psr.metrics.registry import evaluate_folders

        multiple = self.pad_multiple

        @tf.function(reduce_retracing=True)
        def run(images):
            return translate_any_size(lambda x: generator(x, training=False), images, multiple)

        source, reference = domain_folders(self.data.root, self.data.direction, "test")
        generated = translate_split(
            lambda x: run(tf.constant(x)).numpy(), source, self.run.eval_during_training,
            image_size=self.data.crop_size, max_images=self.eval_cfg.max_images, inputs=[reference],
        )
        distribution_metrics, paired_metrics = split_metric_names(self.eval_cfg.metrics)
        scores = {}
        if distribution_metrics:
            scores.update(evaluate_folders(
                generated, reference, distribution_metrics, extractor=self.extractor,
                cache_dir=str(Path(self.data.root) / ".psr_cache"),
                kid_subset_size=self.eval_cfg.kid_subset_size, progress=False,
            ))
        if paired_metrics:
            options = resolve_paired_options(self.eval_cfg, None)
            labels_dir = options.pop("segmentation_labels")
            inputs = PairedInputs(str(generated), str(source), str(reference), labels_dir)
            scores.update(compute_paired_metrics(paired_metrics, inputs, **options))
        if record:
            append_record(self.run.eval_jsonl, {"epoch": epoch, **extractor_record(self.extractor), **scores})
        return scores

    def on_train_begin(self, logs=None):
        # Missing weights or labels of a paired metric fail now, not after the first epochs.
        from psr.metrics.paired import check_paired_requirements, split_metric_names

        _, paired_metrics = split_metric_names(self.eval_cfg.metrics)
        if self.protocol == "multimodal":
            paired_metrics = []  # lpips here is the diversity score (checked when it is built)
        if paired_metrics:
            options = resolve_paired_options(self.eval_cfg, None)
            labels_dir = options.pop("segmentation_labels")
            check_paired_requirements(paired_metrics, labels_dir is not None, **options)

    def on_epoch_end(self, epoch, logs=None):
        from psr.metrics.paired import higher_is_better, result_key

        if (epoch + 1) % self.eval_cfg.every_epochs:
            return
        scores = self.evaluate(epoch + 1)
        value = float(scores[result_key(self.eval_cfg.best_metric)])
        if logs is not None:
            logs.update({f"eval_{k}": float(v) for k, v in scores.items()})
        improved = self.best is None or (
            value > self.best if higher_is_better(self.eval_cfg.best_metric) else value < self.best
        )
        if improved:
            self.best = value
            from psr.trainers.checkpoints import write_checkpoint

            network = self.model.inference_network()
            write_checkpoint(self.run.checkpoints_best, epoch + 1, 0, network, keep=1)
            options = {"domains": self.run.domain_names()} if self.run.domain_names() else {}
            self.exporter(network, self.run.export_best, self.pad_multiple, inputs=self.run.inputs, **options)
            atomic_write_json(self.best_file, {"metric": self.eval_cfg.best_metric, "value": value, "epoch": epoch + 1})
