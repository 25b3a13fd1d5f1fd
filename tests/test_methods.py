"""Methods through the registry: presets name theirs, old files are inferred, and a new method plugs into
the unchanged experiment runner through the trainer contract (issue #12 items 1, 3, 4)."""

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from keras import ops

from psr.config import config_from_dict, load_experiment
from psr.errors import ConfigError
from psr.config import infer_method
from psr.methods import Method, TrainerInputs
from psr.registry import METHODS
from psr.schedules import GammaCurriculum, StepSchedule
from psr.trainers.base import ScheduledValue, Trainer

from e2e_helpers import tiny_raw

REPO = Path(__file__).resolve().parents[1]


def test_every_preset_states_its_method():
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        assert raw.get("method") in METHODS, path.name
        assert load_experiment(path).method == raw["method"]


def test_files_without_method_are_inferred_and_sincut_has_its_defaults():
    assert infer_method({"data": {"kind": "single_image"}}) == "sincut"
    assert infer_method({}) == "cut"
    assert config_from_dict({}).method == "cut"
    sincut = config_from_dict({"method": "sincut"})
    assert sincut.model.generator.architecture == "stylegan2" and sincut.loss.negatives_from_minibatch
    assert sincut.data.kind == "single_image" and sincut.train.batch_size == 16
    # The user's values win over the method's defaults.
    assert config_from_dict({"method": "sincut", "train": {"batch_size": 4}}).train.batch_size == 4


def test_unknown_method_and_wrong_data_kind_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"method: 'cutt' is not a known method \(cut, sincut, stargan2, compression\)\. Did you mean 'cut'\?"):
        config_from_dict({"method": "cutt"})
    with pytest.raises(ConfigError, match="method 'cut' trains on data.kind unaligned, got 'single_image'"):
        config_from_dict({"method": "cut", "data": {"kind": "single_image"}})


def test_dry_run_prints_the_method(capsys):
    from psr.cli import main

    assert main(["run", str(REPO / "experiments" / "quickstart.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# method: cut — single-modal")
    assert "\nmethod: cut\n" in out


def test_step_schedule_per_epoch_and_per_step():
    curve = GammaCurriculum(start=50, end=10, total_epochs=2)
    per_epoch = StepSchedule(curve, steps_per_epoch=4, unit="epoch")
    per_step = StepSchedule(curve, steps_per_epoch=4, unit="step")
    assert [per_epoch(s) for s in range(8)] == [30.0] * 4 + [10.0] * 4
    expected = [50 - 40 * (s + 1) / 8 for s in range(8)]
    assert [per_step(s) for s in range(8)] == pytest.approx(expected)
    # Both units agree on each epoch's last iteration.
    assert per_step(3) == per_epoch(3) and per_step(7) == per_epoch(7)
    restored = StepSchedule.from_config(per_step.get_config())
    assert [restored(s) for s in range(8)] == pytest.approx(expected)
    with pytest.raises(ValueError, match="unit"):
        StepSchedule(curve, 4, unit="hour")


# === A toy method, registered from outside ===


@dataclasses.dataclass(frozen=True)
class ToyModelConfig:
    channels: int = 3


@dataclasses.dataclass(frozen=True)
class ToyLossConfig:
    weight: float = 1.0


class ToyTrainer(Trainer):
    """One 1×1 conv fitted to map source to target by L1, with a per-step scheduled loss scale."""

    logged_terms = ("l1",)

    def __init__(self, weight: float, steps_per_epoch: int, **kwargs):
        super().__init__(**kwargs)
        self.net = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])
        self.scale = keras.Variable(0.0, trainable=False, name="scale")
        self.weight = weight
        self.tracker = keras.metrics.Mean(name="l1")

    def compile(self, optimizer):
        super().compile(optimizer=None)
        self.opt = optimizer

    @property
    def step_counter(self):
        return self.opt.iterations

    def named_optimizers(self):
        return {"net": self.opt}

    def inference_network(self):
        return self.net

    def schedules(self):
        return [ScheduledValue(self.scale, lambda step: 1.0 + step, {"scale": None})]

    def build_all(self):
        self(ops.zeros((1, 8, 8, 3)))
        self.opt.build(self.net.trainable_variables)

    @property
    def metrics(self):
        return [self.tracker]

    def call(self, images, training=False):
        return self.net(images, training=training)

    def train_step(self, data):
        import tensorflow as tf

        source, target = data
        with tf.GradientTape() as tape:
            loss = self.weight * self.scale * ops.mean(ops.abs(self.net(source) - target))
        grads = tape.gradient(loss, self.net.trainable_variables)
        self.opt.apply_gradients(zip(grads, self.net.trainable_variables))
        self.tracker.update_state(loss)
        return {"l1": self.tracker.result()}


def build_toy_trainer(model, loss, train, inputs):
    trainer = ToyTrainer(loss.weight, inputs.steps_per_epoch)
    trainer.compile(keras.optimizers.SGD(0.01))
    trainer.build_all()
    return trainer


def build_toy_network(model, image_size):
    return keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)])


@pytest.fixture
def toy_method():
    METHODS.register("toy", Method(
        name="toy", model_config=ToyModelConfig, loss_config=ToyLossConfig, build_trainer=build_toy_trainer,
        build_inference_network=build_toy_network, description="a test method",
    ))
    yield
    METHODS.unregister("toy")


@pytest.mark.slow
def test_a_registered_method_trains_resumes_exports_and_translates_unchanged(tmp_path, toy_method, capsys):
    from psr.experiment import train
    from psr.inference import load_translator

    raw = tiny_raw(tmp_path, train={"epochs": 1, "decay_epochs": 1})
    raw["method"] = "toy"
    raw["model"] = {"channels": 3}
    raw["loss"] = {"weight": 2.0}
    cfg = config_from_dict(raw)
    assert type(cfg.model) is ToyModelConfig and cfg.loss.weight == 2.0
    run_dir = train(cfg, progress=False)

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["method"] == "toy" and resolved["loss"] == {"weight": 2.0}
    steps = resolved["resolved"]["total_steps"]
    assert sorted(p.name for p in (run_dir / "checkpoints" / "latest").iterdir())[-1] == "ckpt-00002-0000000"
    assert (run_dir / "export" / "saved_model.pb").is_file()
    assert json.loads((run_dir / "content_scores.json").read_text())["translation"]["psnr"] > 0
    # The schedule is a function of the step counter: the last step ran with scale = 1 + (steps − 1).
    trainer = build_toy_trainer(cfg.model, cfg.loss, cfg.train, TrainerInputs(16, steps_per_epoch=steps // 2))
    trainer.load_weights(str(next((run_dir / "checkpoints" / "latest").glob("ckpt-00002-*")) / "trainer.weights.h5"))
    assert float(trainer.scale.numpy()) == steps
    assert int(trainer.step_counter.numpy()) == steps

    # Translate through the run directory: the method's own inference network is built and restored.
    translator = load_translator(run_dir)
    image = np.random.default_rng(0).uniform(-1, 1, (1, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(translator(image), trainer.net(image).numpy(), atol=1e-6)

    train(cfg, progress=False)  # a finished run says so
    assert "already finished training" in capsys.readouterr().err
