"""Train → checkpoint → resume → export → serve, on tiny generated data (issue #3 "How we will know")."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from psr.builders import build_cut_trainer, build_generator
from psr.callbacks import NonFiniteLossGuard, StepTimer
from psr.cli import main
from psr.config import load_run_config
from psr.errors import ConfigError, TrainingError
from psr.experiment import train
from psr.methods import TrainerInputs
from psr.trainers.checkpoints import TrainingState, restore_generator

from e2e_helpers import TinyExtractor, tiny_config, tiny_raw, write_yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tensorboard_tags(folder: Path) -> set:
    tags = set()
    for sub in folder.iterdir():
        acc = EventAccumulator(str(sub), size_guidance={"tensors": 0})
        acc.Reload()
        tags |= set(acc.Tags()["tensors"])
    return tags


def iterations(run_dir: Path) -> int:
    """Optimiser steps stored in the run's newest checkpoint (restored into a fresh trainer)."""
    cfg = load_run_config(run_dir)
    trainer = build_cut_trainer(cfg.model, cfg.loss, cfg.train, TrainerInputs(cfg.data.crop_size, steps_per_epoch=1))
    TrainingState(run_dir / "checkpoints", trainer).restore()
    counts = {int(o.iterations.numpy()) for o in (trainer.g_optimizer, trainer.d_optimizer, trainer.head_optimizer)}
    assert len(counts) == 1
    return counts.pop()


def load_generator(run_dir: Path, which: str = "latest"):
    cfg = load_run_config(run_dir)
    generator = build_generator(cfg.model.generator, crop_size=cfg.data.crop_size)
    restore_generator(run_dir, generator, which=which)
    return generator


def keras_translate(generator, image: np.ndarray) -> np.ndarray:
    """Independent restatement of any-size inference: numpy reflect-pad to a multiple of 4, crop back."""
    h, w = image.shape[:2]
    padded = np.pad(image, [(0, -h % 4), (0, -w % 4), (0, 0)], mode="reflect")
    return np.asarray(generator(padded[None]))[0, :h, :w]


def test_train_resume_export_translate(tmp_path, capsys):
    cfg = tiny_config(tmp_path, train={"epochs": 1, "decay_epochs": 0, "steps_per_epoch": 2})
    run_dir = train(cfg, progress=False)
    assert iterations(run_dir) == 2
    assert (run_dir / "config.yaml").is_file() and (run_dir / "samples" / "epoch_0001.png").is_file()

    # Extending the run resumes after epoch 1 and runs only epoch 2.
    cfg2 = tiny_config(tmp_path, train={"epochs": 1, "decay_epochs": 1, "steps_per_epoch": 2})
    train(cfg2, progress=False)
    assert "Resuming" in capsys.readouterr().err
    assert iterations(run_dir) == 4
    assert (run_dir / "samples" / "epoch_0002.png").is_file()
    assert len(list((run_dir / "checkpoints" / "epochs").glob("ckpt-*"))) == 2

    tags = tensorboard_tags(run_dir / "tensorboard")
    for tag in ("epoch/g_loss", "epoch/d_loss", "epoch/g_nce", "epoch/g_src", "epoch/Gamma", "epoch/gamma",
                "epoch/learning_rate", "epoch/step_time", "step/g_loss", "input|translation|target|identity"):
        assert tag in tags, tag
    scores = json.loads((run_dir / "content_scores.json").read_text())
    assert set(scores["translation"]) == {"psnr", "ssim"}

    # The export: both signatures give the Keras model's image, also for sizes that are not multiples of 4.
    generator = load_generator(run_dir)
    exported = tf.saved_model.load(str(run_dir / "export"))
    image = np.random.default_rng(0).uniform(-1, 1, (18, 22, 3)).astype("float32")
    served = exported.signatures["serving_default"](images=tf.constant(image[None]))["images"].numpy()[0]
    np.testing.assert_allclose(served, keras_translate(generator, image), atol=1e-5)

    pixels = np.random.default_rng(1).integers(0, 256, (21, 17, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    out = exported.signatures["translate_bytes"](image_bytes=tf.constant([buffer.getvalue()]))["output_bytes"]
    decoded = np.asarray(Image.open(io.BytesIO(out.numpy()[0])))
    expected = keras_translate(generator, pixels.astype("float32") / 127.5 - 1)
    expected = ((np.clip(expected, -1, 1) + 1) / 2 * 255).astype(np.uint8)
    assert decoded.shape == (21, 17, 3)
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1

    # `main.py translate` on the run directory and on the export give the same files.
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(pixels).save(src / "a.png")
    assert main(["translate", str(run_dir), str(src), "-o", str(tmp_path / "o1"), "--quiet"]) == 0
    assert main(["translate", str(run_dir / "export"), str(src / "a.png"), "-o", str(tmp_path / "o2"), "--quiet"]) == 0
    a = np.asarray(Image.open(tmp_path / "o1" / "a.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "o2" / "a.png")).astype(int)
    assert a.shape == (21, 17, 3) and np.abs(a - b).max() <= 1

    # `main.py export` writes a second SavedModel equal to the first.
    assert main(["export", str(run_dir), "-o", str(tmp_path / "exp2")]) == 0
    again = tf.saved_model.load(str(tmp_path / "exp2")).signatures["serving_default"](images=tf.constant(image[None]))
    np.testing.assert_allclose(again["images"].numpy()[0], served, atol=1e-6)


def test_interrupt_mid_epoch_saves_and_resumes(tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tmp_path, train={"epochs": 1, "decay_epochs": 1},  # 8 images, batch 2 → 4 steps/epoch
                      log={"keep_checkpoints": 1})
    calls = {"n": 0}
    original = StepTimer.on_train_batch_end

    def interrupt_on_sixth(self, batch, logs=None):
        calls["n"] += 1
        original(self, batch, logs)
        if calls["n"] == 6:  # epoch 2, step 2
            raise KeyboardInterrupt

    monkeypatch.setattr(StepTimer, "on_train_batch_end", interrupt_on_sixth)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    assert "state saved at epoch 2, step 2" in capsys.readouterr().err
    assert iterations(cfg_run := Path(cfg.log.run_dir)) == 6
    monkeypatch.setattr(StepTimer, "on_train_batch_end", original)

    train(cfg, progress=False)
    assert "Resuming" in capsys.readouterr().err
    assert iterations(cfg_run) == 8  # 2 epochs × 4 steps, no step repeated or skipped
    assert [p.name for p in (cfg_run / "checkpoints" / "epochs").iterdir()] == ["ckpt-00002-0000000"]
    assert len(list((cfg_run / "checkpoints" / "latest").iterdir())) == 2


def test_kill_9_mid_epoch_then_rerun_resumes(tmp_path):
    raw = tiny_raw(tmp_path, train={"epochs": 2, "decay_epochs": 2}, log={"save_every_steps": 1, "verbose": 0})
    experiment = write_yaml(tmp_path / "exp.yaml", raw)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(REPO / "main.py"), "run", str(experiment)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = Path(raw["log"]["run_dir"]) / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if index.is_dir() and any(p.name.startswith("ckpt-00001-") for p in index.iterdir()):  # epoch 2 began
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resuming" in done.stderr
    assert iterations(Path(raw["log"]["run_dir"])) == 16  # 4 epochs × 4 steps


def test_periodic_evaluation_keeps_best(tmp_path):
    cfg = tiny_config(
        tmp_path,
        train={"epochs": 1, "decay_epochs": 1, "steps_per_epoch": 1},
        eval={"every_epochs": 1, "metrics": ["fid", "kid"], "kid_subset_size": 3, "max_images": 3},
    )
    run_dir = train(cfg, progress=False, feature_extractor=TinyExtractor())
    history = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    best = json.loads((run_dir / "best.json").read_text())
    assert best["value"] == pytest.approx(min(h["fid"] for h in history))
    assert (run_dir / "export_best" / "saved_model.pb").is_file()
    assert "epoch/eval_fid" in tensorboard_tags(run_dir / "tensorboard")
    assert len(list((run_dir / "eval" / "during_training").glob("*.png"))) == 3  # eval.max_images
    assert main(["export", str(run_dir), "--checkpoint", "best"]) == 0
    assert (run_dir / "export_best" / "saved_model.pb").is_file()
    load_generator(run_dir)  # best checkpoint does not disturb the latest
    load_generator(run_dir, which="best")

    # `main.py eval` protocol: translate testA, compare with testB, record everywhere.
    from psr.evaluation import evaluate_model

    record = evaluate_model(run_dir, metrics=["fid", "kid"], kid_subset_size=4, image_size=16,
                            extractor=TinyExtractor(), progress=False)
    assert record["num_images"] == 4 and record["epoch"] == 2
    assert record["reference"].endswith("testB") and {"fid", "kid", "kid_std"} <= set(record)
    assert json.loads((run_dir / "eval.json").read_text())["fid"] == pytest.approx(record["fid"])
    assert "eval/fid" in tensorboard_tags(run_dir / "tensorboard")
    from_export = evaluate_model(run_dir / "export", data_root=cfg.data.root, metrics=["fid"], image_size=16,
                                 extractor=TinyExtractor(), progress=False)
    assert from_export["fid"] == pytest.approx(record["fid"], rel=1e-3)


def test_rerun_with_a_different_experiment_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 1, "decay_epochs": 0, "steps_per_epoch": 1})
    train(cfg, progress=False)
    changed = tiny_config(tmp_path, train={"epochs": 1, "decay_epochs": 0, "steps_per_epoch": 1},
                          model={"generator": {"filters": 8, "num_blocks": 1}})
    with pytest.raises(ConfigError, match=r"holds a run of a different configuration \(changed: model.generator.filters\)"):
        train(changed, progress=False)


def test_non_finite_loss_names_the_last_finite_checkpoint_or_none(tmp_path):
    latest = tmp_path / "checkpoints" / "latest"
    guard = NonFiniteLossGuard(latest)

    class Model:
        stop_training = False

    guard.set_model(Model())
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"g_loss": 1.0})
    fix = "Lower train.learning_rate (e.g. --set train.learning_rate=...) or a loss weight, or check the data, then rerun."
    with pytest.raises(TrainingError) as info:
        guard.on_train_batch_end(6, {"g_loss": 1.0, "d_loss": float("nan")})
    assert str(info.value) == (
        "Loss 'd_loss' became nan at epoch 3, step 7. No checkpoint was written before it, so a rerun starts "
        f"from the beginning. {fix}"
    )
    (latest / "ckpt-00002-0000003").mkdir(parents=True)
    (latest / "ckpt-00002-0000003" / "state.json").write_text('{"epoch": 2, "step": 3}')
    with pytest.raises(TrainingError) as info:
        guard.on_train_batch_end(6, {"g_loss": float("inf")})
    assert str(info.value) == (
        f"Loss 'g_loss' became inf at epoch 3, step 7. The last finite checkpoint is {latest / 'ckpt-00002-0000003'}; "
        f"a rerun resumes from it. {fix}"
    )


def test_sincut_single_image_train_export_translate_any_size(tmp_path):
    raw = tiny_raw(tmp_path)
    raw["data"] = {"kind": "single_image", "root": str(tmp_path / "pair"), "synthetic": {"kind": "rocket_pair"},
                   "load_size": 32, "crop_size": 32, "epoch_length": 8}
    raw["model"] = {
        "generator": {"architecture": "stylegan2", "filters": 2, "num_blocks": 6, "num_downsampling": 1},
        "discriminator": {"architecture": "stylegan2", "filters": 2},
        "head": {"units": 8, "num_patches": 1, "layers": [0, 2, 4]},
    }
    raw["loss"] = {"gan_mode": "nonsaturating", "contrastive": "dce", "lambda_contrastive": 4.0, "lambda_src": 10.0,
                   "lambda_identity": 1.0, "lambda_r1": 1.0, "negatives_from_minibatch": True,
                   "curriculum": {"start": 200.0, "end": 40.0}}
    raw["train"] = {"epochs": 1, "decay_epochs": 1, "batch_size": 4, "learning_rate": 0.002, "beta_1": 0.0,
                    "beta_2": 0.99, "seed": 0}
    experiment = write_yaml(tmp_path / "sincut.yaml", raw)
    assert main(["run", str(experiment), "--quiet"]) == 0
    run_dir = Path(raw["log"]["run_dir"])
    assert iterations(run_dir) == 4  # 2 epochs × 8 samples / batch 4
    assert "epoch/d_r1" in tensorboard_tags(run_dir / "tensorboard")

    painting = np.random.default_rng(2).integers(0, 256, (251, 301, 3), dtype=np.uint8)  # odd, non-square
    Image.fromarray(painting).save(tmp_path / "painting.png")
    assert main(["translate", str(run_dir / "export"), str(tmp_path / "painting.png"), "-o", str(tmp_path / "out"),
                 "--quiet"]) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "painting.png"))
    assert out.shape == (251, 301, 3)
    generator = load_generator(run_dir)
    expected = keras_translate(generator, painting.astype("float32") / 127.5 - 1)
    expected = ((np.clip(expected, -1, 1) + 1) / 2 * 255).astype(np.uint8)
    # The generator injects fresh noise, but its strength starts at 0 and moved little in 2 steps.
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 2.0


def test_mixed_precision_run_trains_with_float32_losses(tmp_path):
    import keras

    cfg = tiny_config(tmp_path, train={"epochs": 1, "decay_epochs": 0, "steps_per_epoch": 2, "mixed_precision": True})
    run_dir = train(cfg, progress=False)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    acc = EventAccumulator(str(run_dir / "tensorboard" / "train"), size_guidance={"tensors": 0})
    acc.Reload()
    value = tf.make_ndarray(acc.Tensors("epoch/g_loss")[-1].tensor_proto)
    assert value.dtype == np.float32 and np.isfinite(value)


def test_mixed_precision_on_a_pre_ampere_gpu_is_one_line(tmp_path, monkeypatch, capsys):
    from psr import experiment
    from psr.config import TrainConfig

    experiment.check_mixed_precision_devices(TrainConfig(mixed_precision=True), gpus=[("NVIDIA H100", (9, 0))])
    experiment.check_mixed_precision_devices(TrainConfig(mixed_precision=False), gpus=[("Tesla V100", (7, 0))])
    with pytest.raises(ConfigError, match=r"needs a GPU of compute capability 8\.0 or newer .*; Tesla T4 is 7\.5\. "
                                          r"Set train\.mixed_precision: false on this GPU\."):
        experiment.check_mixed_precision_devices(TrainConfig(mixed_precision=True), gpus=[("Tesla T4", (7, 5))])
    # Through the command line, before the run directory holds anything but its marker and config.
    real = experiment.check_mixed_precision_devices
    monkeypatch.setattr(experiment, "check_mixed_precision_devices",
                        lambda train: real(train, gpus=[("Tesla V100-SXM2-16GB", (7, 0))]))
    spec = write_yaml(tmp_path / "tiny.yaml", tiny_raw(tmp_path, train={"mixed_precision": True}))
    assert main(["run", str(spec), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Tesla V100-SXM2-16GB is 7.0" in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
