"""Run lifecycle: exact resume after SIGKILL anywhere, SIGTERM/SIGINT saves, NaN never checkpointed, a
broken newest checkpoint falls back to an older one (issue #11 items 2–5)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from psr.config import config_from_dict
from psr.errors import TrainingError
from psr.experiment import train
from psr.trainers.checkpoints import STATE_FILE, TRAINER_FILE, NonFiniteStateError, latest_checkpoint

from e2e_helpers import tiny_raw

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "lifecycle_worker.py"
pytestmark = pytest.mark.slow
TOTAL_STEPS = 6  # 2 epochs × 3 steps


def lifecycle_raw(tmp_path: Path, **train_values) -> dict:
    # 6 training images, batch 2: 3 steps per epoch; a step checkpoint every 3 steps lands on the epoch's
    # last step (the case that once resumed into an endless epoch).
    raw = tiny_raw(tmp_path, train={"epochs": 1, "decay_epochs": 1, **train_values},
                   log={"save_every_steps": 3, "save_every_minutes": 0})
    raw["data"]["synthetic"]["num_train"] = 6
    return raw


def write_spec(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_worker(spec: Path, record: Path, kill: str, timeout: float = 300, **popen):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(WORKER), str(spec), str(record), kill], cwd=spec.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


def records(path: Path) -> dict:
    """step → (lr, Γ); a step run twice (redone after a kill) must have run with the same values."""
    seen = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        values = (r["lr"], r["gamma"])
        assert seen.setdefault(r["step"], values) == values, f"step {r['step']} ran with {values} and {seen[r['step']]}"
    return seen


def final_steps(run_dir: Path) -> tuple:
    latest = latest_checkpoint(run_dir)
    state = json.loads((latest / STATE_FILE).read_text())
    epochs = sorted(p.name for p in (run_dir / "checkpoints" / "epochs").iterdir())
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    return latest.name, state, epochs, samples


def run_here(raw: dict, record: Path) -> None:
    """A run (or rerun) in this process with the worker's recorder: no second TensorFlow start-up."""
    from lifecycle_worker import install

    with pytest.MonkeyPatch.context() as patch:
        install(str(record), "none", patch.setattr)
        train(config_from_dict(raw), progress=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    run_here(lifecycle_raw(tmp), tmp / "record.jsonl")
    return records(tmp / "record.jsonl"), final_steps(tmp / "run")


@pytest.mark.parametrize("kill", [f"step:{k}" for k in range(1, TOTAL_STEPS + 1)] + ["checkpoint:2", "export"])
def test_resume_after_sigkill_equals_the_uninterrupted_run(tmp_path, reference, kill):
    schedule, final = reference
    assert sorted(schedule) == list(range(TOTAL_STEPS))
    raw = lifecycle_raw(tmp_path)
    spec = write_spec(tmp_path, raw)
    record = tmp_path / "record.jsonl"
    killed = run_worker(spec, record, kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_here(raw, record)
    assert records(record) == schedule  # every step ran, none beyond the last, each with the same LR and Γ
    assert final_steps(tmp_path / "run") == final  # same final state, epoch snapshots and sample grids
    assert (tmp_path / "run" / "export" / "saved_model.pb").is_file()
    staging = [p for p in (tmp_path / "run").rglob(".*") if p.name not in (".psr_run", ".psr_output")]
    assert not staging  # a killed write's staging folder is cleaned up by the next write


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_the_exact_step_and_a_rerun_finishes(tmp_path, reference, sig, status, capsys):
    schedule, final = reference
    raw = lifecycle_raw(tmp_path)
    spec = write_spec(tmp_path, raw)
    record = tmp_path / "record.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(WORKER), str(spec), str(record), "sleep"], cwd=tmp_path,
                               env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (record.is_file() and len(record.read_text().splitlines()) >= 2):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == status, stderr[-2000:]
    line = [ln for ln in stderr.splitlines() if "state saved at" in ln]
    assert line and line[0].startswith(f"{sig.name}: state saved at epoch ") and "Rerun the same command" in line[0]
    done = len(records(record))
    saved = json.loads((latest_checkpoint(tmp_path / "run") / STATE_FILE).read_text())
    assert saved["epoch"] * 3 + saved["step"] == done  # nothing after the last completed step is lost
    capsys.readouterr()
    run_here(raw, record)
    assert f"Resuming {tmp_path / 'run'} at epoch" in capsys.readouterr().err or done == TOTAL_STEPS
    assert records(record) == schedule
    assert final_steps(tmp_path / "run") == final


# === NaN ===


def test_non_finite_weights_are_never_checkpointed_and_a_lower_learning_rate_resumes(tmp_path, monkeypatch, capsys):
    import keras

    import psr.experiment as experiment

    raw = lifecycle_raw(tmp_path)
    raw["log"]["save_every_steps"] = 1
    cfg = config_from_dict(raw)
    original = experiment.training_callbacks

    class Poison(keras.callbacks.Callback):
        """Step 4 makes the generator non-finite (as a diverging update would)."""

        def on_train_batch_end(self, batch, logs=None):
            if self.model.completed_steps == 4:
                weight = self.model.generator.trainable_weights[0]
                weight.assign(np.full(weight.shape, np.nan, "float32"))

    monkeypatch.setattr(experiment, "training_callbacks", lambda *a, **k: [Poison()] + original(*a, **k))
    with pytest.raises(TrainingError) as info:
        train(cfg, progress=False)
    run_dir = tmp_path / "run"
    last = latest_checkpoint(run_dir)
    assert last.name == "ckpt-00001-0000000"  # step 3 (the end of epoch 1), the last save before the poison
    # The save after step 4 found the non-finite weights and refused to write them.
    assert str(info.value).startswith("Training diverged: non-finite values in ")
    assert f"The last finite checkpoint is {last}; a rerun resumes from it." in str(info.value)
    # Direct check of the guard in TrainingState: a poisoned trainer is refused and nothing is written.
    from psr.builders import build_cut_trainer
    from psr.methods import TrainerInputs
    from psr.trainers.checkpoints import TrainingState

    trainer = build_cut_trainer(cfg.model, cfg.loss, cfg.train, TrainerInputs(16, steps_per_epoch=3))
    trainer.generator.trainable_weights[0].assign(np.full(trainer.generator.trainable_weights[0].shape, np.inf, "float32"))
    before = sorted(p.name for p in (run_dir / "checkpoints" / "latest").iterdir())
    with pytest.raises(NonFiniteStateError, match=f"The last finite checkpoint is {last}"):
        TrainingState(run_dir / "checkpoints", trainer, steps_per_epoch=3).save()
    assert sorted(p.name for p in (run_dir / "checkpoints" / "latest").iterdir()) == before

    # The advised fix: a lower learning rate is accepted on resume, with a notice.
    monkeypatch.setattr(experiment, "training_callbacks", original)
    lower = config_from_dict({**raw, "train": {**raw["train"], "learning_rate": 5e-4}})
    capsys.readouterr()
    train(lower, progress=False)
    err = capsys.readouterr().err
    assert "Resuming with a changed setting: train.learning_rate 0.001 → 0.0005." in err
    assert "at epoch 2/2, step 1" in err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["learning_rate"] == 5e-4


def test_nan_at_the_first_step_says_no_checkpoint_exists(tmp_path, monkeypatch):
    import keras

    import psr.experiment as experiment

    cfg = config_from_dict(lifecycle_raw(tmp_path))
    original = experiment.training_callbacks

    class PoisonFirst(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            weight = self.model.discriminator.trainable_weights[0]
            weight.assign(np.full(weight.shape, np.nan, "float32"))

    monkeypatch.setattr(experiment, "training_callbacks", lambda *a, **k: [PoisonFirst()] + original(*a, **k))
    with pytest.raises(TrainingError, match="No checkpoint was written before it, so a rerun starts from the beginning"):
        train(cfg, progress=False)
    assert latest_checkpoint(tmp_path / "run") is None


# === Checkpoint fallback ===


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(tmp_path, capsys):
    raw = lifecycle_raw(tmp_path, epochs=1, decay_epochs=0)
    raw["log"]["save_every_steps"] = 1
    cfg = config_from_dict(raw)
    train(cfg, progress=False)
    latest = tmp_path / "run" / "checkpoints" / "latest"
    kept = sorted(p.name for p in latest.iterdir())
    assert kept == ["ckpt-00000-0000002", "ckpt-00001-0000000"]
    newest = latest / "ckpt-00001-0000000" / TRAINER_FILE
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])
    capsys.readouterr()
    extended = config_from_dict({**raw, "train": {**raw["train"], "decay_epochs": 1}})
    train(extended, progress=False)
    err = capsys.readouterr().err
    assert f"Skipped checkpoint {latest / 'ckpt-00001-0000000'} (cannot be loaded:" in err
    assert "at epoch 1/2, step 3" in err  # resumed from the older, intact checkpoint
    # Nothing was deleted by the fallback itself; the rerun went on and wrote newer checkpoints.
    assert latest_checkpoint(tmp_path / "run").name == "ckpt-00002-0000000"
