"""Callbacks that turn a `fit` into a monitored, resumable run.

Each callback has one job: drive the scheduled variables, switch the data
pipeline's crop jitter, log the learning rates and step time, write TensorBoard
scalars, write image grids, stop on a non-finite loss. They reach the trainer
only through the contract of `psr.trainers.base.Trainer` (step counter,
optimisers, schedules, sample grid), so every method gets them unchanged.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from psr.errors import TrainingError


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
