"""Resumable training state: networks, head, optimisers, Γ, epoch and step, written atomically.

A checkpoint is a folder `ckpt-<epoch>-<step>/` holding
- `trainer.weights.h5`: everything Keras tracks on the trainer (G, D, head,
  the three optimisers with their step counters, Γ);
- `generator.weights.h5`: the generator alone (for export / translate / eval);
- `state.json`: completed epochs and steps into the next epoch.
It is written into a hidden temporary folder and renamed into place, so a run
killed at any moment (even with `kill -9`) leaves only complete checkpoints.

Layout under `<run>/checkpoints/`:
- `latest/`: rolling state written at every epoch end (and every
  `save_every_steps` steps); a rerun resumes from the newest;
- `epochs/`: snapshots every `checkpoint_every_epochs` epochs, the last
  `keep_checkpoints` of them kept;
- `best/`: the generator with the best evaluation score (periodic evaluation).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional, Union

import keras

from psr.errors import CheckpointError

TRAINER_FILE = "trainer.weights.h5"
GENERATOR_FILE = "generator.weights.h5"
STATE_FILE = "state.json"
_NAME = re.compile(r"^ckpt-(\d+)-(\d+)$")


def _complete(folder: Path) -> list[Path]:
    """Finished checkpoints in `folder`, oldest first (temporary folders start with a dot)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: tuple(int(v) for v in _NAME.match(p.name).groups()))


def latest_checkpoint(run_dir: Union[str, Path], which: str = "latest") -> Optional[Path]:
    """Newest complete checkpoint folder of `<run>/checkpoints/<which>`, or None."""
    found = _complete(Path(run_dir) / "checkpoints" / which)
    return found[-1] if found else None


def write_checkpoint(
    folder: Union[str, Path],
    epoch: int,
    step: int,
    generator: keras.Model,
    trainer: Optional[keras.Model] = None,
    keep: Optional[int] = None,
) -> Path:
    """Writes `folder/ckpt-<epoch>-<step>` atomically; keeps the newest `keep` checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{epoch:05d}-{step:07d}"
    staging = folder / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if trainer is not None:
        trainer.save_weights(str(staging / TRAINER_FILE))
    generator.save_weights(str(staging / GENERATOR_FILE))
    (staging / STATE_FILE).write_text(json.dumps({"epoch": epoch, "step": step}), encoding="utf-8")
    target = folder / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    if keep:
        for old in _complete(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


class TrainingState:
    """Saves and restores a trainer's full state under `<run>/checkpoints`.

    Args:
        directory: `<run>/checkpoints`.
        trainer: a built trainer (networks, head and optimisers must have their variables).
        keep: how many epoch snapshots to keep.
    """

    def __init__(self, directory: Union[str, Path], trainer: keras.Model, keep: int = 3):
        self.directory = Path(directory)
        self.trainer = trainer
        self.keep = keep

    def restore(self) -> tuple[int, int]:
        """Restores the newest state if there is one; returns (completed epochs, steps into the next epoch)."""
        found = _complete(self.directory / "latest")
        if not found:
            return 0, 0
        path = found[-1]
        try:
            self.trainer.load_weights(str(path / TRAINER_FILE))
        except (ValueError, OSError, KeyError) as err:
            raise CheckpointError(
                f"Cannot resume from {path}: {str(err).splitlines()[0]}. The run directory holds a checkpoint of a "
                "different model; use a new log.run_dir or delete its checkpoints folder to start over."
            ) from None
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        return int(state["epoch"]), int(state["step"])

    def save(self, completed_epochs: int, step_in_epoch: int = 0, snapshot: bool = False) -> Path:
        generator = self.trainer.generator
        path = write_checkpoint(self.directory / "latest", completed_epochs, step_in_epoch, generator,
                                self.trainer, keep=2)
        if snapshot:
            write_checkpoint(self.directory / "epochs", completed_epochs, 0, generator, self.trainer, keep=self.keep)
        return path


class CheckpointSaver(keras.callbacks.Callback):
    """Saves the training state at epoch ends (snapshot every `every_epochs`) and every `save_every_steps`."""

    def __init__(self, state: TrainingState, every_epochs: int = 5, save_every_steps: int = 0,
                 start_epoch: int = 0, steps_offset: int = 0):
        super().__init__()
        self.state = state
        self.every_epochs = every_epochs
        self.save_every_steps = save_every_steps
        self.steps_offset = steps_offset  # steps already done in the first epoch (a mid-epoch resume)
        self._epoch = start_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1 + self.steps_offset
        if self.save_every_steps and done % self.save_every_steps == 0:
            self.state.save(self._epoch, step_in_epoch=done)

    def on_epoch_end(self, epoch, logs=None):
        self.steps_offset = 0
        self.state.save(epoch + 1, snapshot=(epoch + 1) % self.every_epochs == 0)


def restore_generator(run_dir: Union[str, Path], generator: keras.Model, which: str = "latest") -> Path:
    """Loads only the generator's weights from a run's newest checkpoint (`which`: latest | best | epochs)."""
    path = latest_checkpoint(run_dir, which)
    if path is None:
        raise CheckpointError(
            f"No checkpoint in {Path(run_dir) / 'checkpoints' / which}. Train first (`main.py run ...`) "
            "or pass an exported model folder."
        )
    try:
        generator.load_weights(str(path / GENERATOR_FILE))
    except (ValueError, OSError, KeyError) as err:
        raise CheckpointError(
            f"The checkpoint {path} does not match the generator in {run_dir}/config.yaml: "
            f"{str(err).splitlines()[0]}"
        ) from None
    return path
