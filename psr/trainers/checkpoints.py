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
import re
import shutil
from pathlib import Path
from typing import Optional, Union

import keras

from psr.errors import CheckpointError, TrainingError
from psr.rundir import atomic_write_json, os_errors, remove_stale_staging, staged_folder

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
    return latest_checkpoint_in(Path(run_dir) / "checkpoints" / which)


def write_checkpoint(
    folder: Union[str, Path],
    epoch: int,
    step: int,
    generator: keras.Model,
    trainer: Optional[keras.Model] = None,
    keep: Optional[int] = None,
) -> Path:
    """Writes `folder/ckpt-<epoch>-<step>` atomically; keeps the newest `keep` checkpoints.

    The files go into a hidden staging folder that is fsynced and renamed into place, so a reader (or a
    run killed at any moment) sees only complete checkpoints. An OS fault (disk full, read-only folder)
    is one `StorageError` line and leaves no staging folder.
    """
    folder = Path(folder)
    with os_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(folder, "ckpt-")  # left by a write that was killed
    target = folder / f"ckpt-{epoch:05d}-{step:07d}"
    with staged_folder(target) as staging:
        if trainer is not None:
            trainer.save_weights(str(staging / TRAINER_FILE))
        generator.save_weights(str(staging / GENERATOR_FILE))
        atomic_write_json(staging / STATE_FILE, {"epoch": epoch, "step": step}, indent=None)
    if keep:
        for old in _complete(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


class TrainingState:
    """Saves and restores a trainer's full state under `<run>/checkpoints`.

    Works through the trainer contract (`psr.trainers.base.Trainer`): the whole trainer's weights, the
    inference network's weights, and the step counter, whose value is the truth about how far training got.

    Args:
        directory: `<run>/checkpoints`.
        trainer: a built trainer (networks, head and optimisers must have their variables).
        keep: how many epoch snapshots to keep.
        steps_per_epoch: iterations per epoch, to turn the step counter into (epoch, step in epoch).
    """

    def __init__(self, directory: Union[str, Path], trainer: keras.Model, keep: int = 3,
                 steps_per_epoch: Optional[int] = None):
        self.directory = Path(directory)
        self.trainer = trainer
        self.keep = keep
        self.steps_per_epoch = steps_per_epoch
        self.restored_from: Optional[Path] = None
        self.skipped: list[tuple[Path, str]] = []  # checkpoints that failed to load, newest first

    def position(self) -> tuple[int, int]:
        """(completed epochs, steps into the next epoch) of the trainer's step counter."""
        step = self.trainer.completed_steps
        if not self.steps_per_epoch:
            return 0, step
        return divmod(step, self.steps_per_epoch)

    def restore(self) -> tuple[int, int]:
        """Restores the newest loadable state; returns (completed epochs, steps into the next epoch).

        A checkpoint that fails to load (truncated, or of another model) is reported in `skipped` and the
        next older one is tried; nothing is deleted. Raises `CheckpointError` when checkpoints exist but
        none loads.
        """
        found = _complete(self.directory / "latest")
        for path in reversed(found):
            try:
                self.trainer.load_weights(str(path / TRAINER_FILE))
                state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
            except (ValueError, OSError, KeyError, TypeError) as err:
                self.skipped.append((path, _first_line(err)))
                continue
            self.restored_from = path
            if self.steps_per_epoch:
                return self.position()
            return int(state["epoch"]), int(state["step"])
        if self.skipped:
            path, reason = self.skipped[0]
            raise CheckpointError(
                f"Cannot resume from {path}: {reason}; no older checkpoint in {path.parent} loads either. "
                "If the run directory holds a different model, use a new log.run_dir."
            )
        return 0, 0

    def save(self, snapshot: bool = False) -> Path:
        """Writes the rolling checkpoint at the step counter (and an epoch snapshot).

        Refuses (`NonFiniteStateError`) a state holding NaN/inf: a checkpoint is always one to resume from.
        """
        bad = self.trainer.non_finite_variables()
        if bad:
            raise NonFiniteStateError(bad, latest_checkpoint_in(self.directory / "latest"))
        completed_epochs, step_in_epoch = self.position()
        network = self.trainer.inference_network()
        if snapshot:
            # Before the rolling checkpoint: a kill in between resumes before this point and redoes both.
            write_checkpoint(self.directory / "epochs", completed_epochs, 0, network, self.trainer, keep=self.keep)
        return write_checkpoint(self.directory / "latest", completed_epochs, step_in_epoch, network,
                                self.trainer, keep=2)


def resume_advice(last_good: Optional[Path]) -> str:
    """What to do after training diverged: where a rerun resumes, and the fix (these keys may change on resume)."""
    if last_good is not None:
        where = f"The last finite checkpoint is {last_good}; a rerun resumes from it."
    else:
        where = "No checkpoint was written before it, so a rerun starts from the beginning."
    return (f"{where} Lower train.learning_rate (e.g. --set train.learning_rate=...) or a loss weight, "
            "or check the data, then rerun.")


class NonFiniteStateError(TrainingError):
    """The trainer holds NaN/inf values; no checkpoint was written."""

    def __init__(self, variables: list[str], last_good: Optional[Path]):
        self.variables = variables
        self.last_good = last_good
        shown = ", ".join(variables[:3]) + (f" and {len(variables) - 3} more" if len(variables) > 3 else "")
        super().__init__(f"Training diverged: non-finite values in {shown}, not saved. {resume_advice(last_good)}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def latest_checkpoint_in(folder: Union[str, Path]) -> Optional[Path]:
    found = _complete(Path(folder))
    return found[-1] if found else None


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
