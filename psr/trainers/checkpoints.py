"""Resumable training state: networks, optimisers, Γ, epoch and step, written atomically.

`tf.train.CheckpointManager` writes the new checkpoint files first and only
then replaces the small `checkpoint` index file (atomic rename), so a run
killed mid-write (even with `kill -9`) leaves the previous checkpoint valid.

Layout under `<run>/checkpoints/`:
- `latest/`: rolling state written at every epoch end (and every
  `save_every_steps` steps); a rerun resumes from it;
- `epochs/`: snapshots every `checkpoint_every_epochs` epochs, the last
  `keep_checkpoints` of them kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import keras
import tensorflow as tf

from psr.errors import CheckpointError


class TrainingState:
    """Everything a resumed run needs, as one `tf.train.Checkpoint`.

    Args:
        directory: `<run>/checkpoints`.
        trainer: a built trainer (its networks, head and optimisers must have variables).
        keep: how many epoch snapshots to keep.
    """

    def __init__(self, directory: Union[str, Path], trainer: keras.Model, keep: int = 3):
        self.directory = Path(directory)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="completed_epochs")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_into_epoch")
        self.checkpoint = tf.train.Checkpoint(
            trainer=trainer,
            g_optimizer=trainer.g_optimizer,
            d_optimizer=trainer.d_optimizer,
            head_optimizer=trainer.head_optimizer,
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
        )
        self.latest = tf.train.CheckpointManager(self.checkpoint, str(self.directory / "latest"), max_to_keep=2)
        self.snapshots = tf.train.CheckpointManager(
            self.checkpoint, str(self.directory / "epochs"), max_to_keep=keep, checkpoint_name="epoch"
        )

    def restore(self) -> tuple[int, int]:
        """Restores the latest state if there is one; returns (completed epochs, steps into the next epoch)."""
        path = self.latest.latest_checkpoint
        if path is None:
            return 0, 0
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as err:
            raise CheckpointError(
                f"Cannot resume from {path}: {str(err).splitlines()[0]}. The run directory holds a checkpoint of a "
                "different model; use a new log.run_dir or delete the checkpoints folder to start over."
            ) from None
        return int(self.epoch.numpy()), int(self.step_in_epoch.numpy())

    def save(self, completed_epochs: int, step_in_epoch: int = 0, snapshot: bool = False) -> str:
        self.epoch.assign(completed_epochs)
        self.step_in_epoch.assign(step_in_epoch)
        path = self.latest.save(checkpoint_number=self._number(completed_epochs, step_in_epoch))
        if snapshot:
            self.snapshots.save(checkpoint_number=completed_epochs)
        return path

    @staticmethod
    def _number(epoch: int, step: int) -> int:
        # Monotonic id for the rolling checkpoints: epoch-major, step-minor.
        return epoch * 1_000_000 + step


class CheckpointSaver(keras.callbacks.Callback):
    """Saves the training state at epoch ends (snapshot every `every_epochs`) and every `save_every_steps`."""

    def __init__(self, state: TrainingState, every_epochs: int = 5, save_every_steps: int = 0, steps_offset: int = 0):
        super().__init__()
        self.state = state
        self.every_epochs = every_epochs
        self.save_every_steps = save_every_steps
        self.steps_offset = steps_offset  # steps already done in the first epoch (a mid-epoch resume)
        self._epoch = int(state.epoch.numpy())
        self._done = steps_offset

    def position(self) -> tuple[int, int]:
        """(epoch, steps completed in it) of the last finished step: where an interrupted run stands."""
        return self._epoch, self._done

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._done = self.steps_offset

    def on_train_batch_end(self, batch, logs=None):
        self._done = batch + 1 + self.steps_offset
        if self.save_every_steps and self._done % self.save_every_steps == 0:
            self.state.save(self._epoch, step_in_epoch=self._done)

    def on_epoch_end(self, epoch, logs=None):
        self.steps_offset = 0
        self.state.save(epoch + 1, snapshot=(epoch + 1) % self.every_epochs == 0)
        self._epoch, self._done = epoch + 1, 0


def restore_generator(run_dir: Union[str, Path], generator: keras.Model, which: str = "latest") -> str:
    """Loads only the generator's weights from a run's checkpoint (`which`: latest | best | epochs)."""
    directory = Path(run_dir) / "checkpoints" / which
    path = tf.train.latest_checkpoint(str(directory))
    if path is None:
        raise CheckpointError(
            f"No checkpoint in {directory}. Train first (`main.py run ...`) or pass an exported model folder."
        )
    # The same object path as TrainingState (root → trainer → generator) restores just that branch.
    partial = tf.train.Checkpoint(trainer=tf.train.Checkpoint(generator=generator))
    status = partial.restore(path)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as err:
        raise CheckpointError(
            f"The checkpoint {path} does not match the generator in {run_dir}/config.yaml: "
            f"{str(err).splitlines()[0]}"
        ) from None
    return path


def latest_checkpoint(run_dir: Union[str, Path], which: str = "latest") -> Optional[str]:
    return tf.train.latest_checkpoint(str(Path(run_dir) / "checkpoints" / which))
