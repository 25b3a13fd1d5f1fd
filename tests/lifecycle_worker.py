"""`main.py run SPEC` with test hooks, for the kill/resume tests (a subprocess body, not a test module).

    python tests/lifecycle_worker.py SPEC RECORD KILL

RECORD: a JSONL file; before every step one line {"step", "lr", "gamma"} is appended (the values the step
runs with). KILL: where the process sends itself SIGKILL — "none", "step:K" (after every callback of step K,
the checkpoint save included), "checkpoint:N" (inside the N-th checkpoint write, after its trainer file),
"export" (inside the SavedModel write), or "sleep" (sleep 0.2 s per step, for the signal tests).
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import keras

import psr.experiment as experiment
import psr.trainers.checkpoints as checkpoints


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class Recorder(keras.callbacks.Callback):
    def __init__(self, path, kill):
        super().__init__()
        self.path, self.kill = path, kill

    def on_train_batch_begin(self, batch, logs=None):
        trainer = self.model
        record = {
            "step": trainer.completed_steps,
            "lr": list(trainer.learning_rates().values())[0],
            "gamma": float(trainer.weight_temperature.numpy()),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_end(self, batch, logs=None):
        if self.kill == f"step:{self.model.completed_steps}":
            die()
        if self.kill == "sleep":
            time.sleep(0.2)


def install(record_path: str, kill: str, patch=setattr) -> None:
    """Installs the hooks; `patch(obj, name, value)` is `setattr` here, `monkeypatch.setattr` in tests."""
    original_callbacks = experiment.training_callbacks

    def callbacks(*args, **kwargs):
        # After the checkpoint saver, so "step:K" dies once step K is fully handled.
        return original_callbacks(*args, **kwargs) + [Recorder(record_path, kill)]

    patch(experiment, "training_callbacks", callbacks)

    if kill.startswith("checkpoint:"):
        target = int(kill.split(":")[1])
        original_write = checkpoints.write_checkpoint
        calls = []

        def write(folder, epoch, step, generator, trainer=None, keep=None):
            calls.append(1)
            if len(calls) == target:
                class Dying:
                    def save_weights(self, path):
                        die()

                return original_write(folder, epoch, step, Dying(), trainer, keep)
            return original_write(folder, epoch, step, generator, trainer, keep)

        patch(checkpoints, "write_checkpoint", write)

    if kill == "export":
        import psr.rundir as rundir

        original_fsync_tree = rundir.fsync_tree

        def fsync_tree(folder):
            if Path(folder).name.startswith(".export"):
                die()  # the SavedModel is complete in its staging folder, not yet renamed into place
            original_fsync_tree(folder)

        patch(rundir, "fsync_tree", fsync_tree)


if __name__ == "__main__":
    spec, record, kill = sys.argv[1:4]
    install(record, kill)
    from psr.cli import main

    raise SystemExit(main(["run", spec, "--quiet"]))
