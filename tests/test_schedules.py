"""Tests of psr.schedules: Γ curriculum, its callback, and the linear LR decay.

Expected numbers come from spec single_modal.md §3 (Γ tables) and §5 (LR).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.losses import HardDCELoss
from psr.schedules import GammaCurriculum
from psr.callbacks import GammaScheduler
from psr.schedules import LinearDecay

EPOCHS = [1, 100, 200, 201, 300, 400]
HORSE_TO_ZEBRA = [49.9, 40.0, 30.0, 29.9, 20.0, 10.0]
CITYSCAPES = [49.9, 40.0, 30.0, 1.0, 1.0, 1.0]


# === GammaCurriculum ===


@pytest.mark.parametrize(
    "kwargs, expected",
    [({}, HORSE_TO_ZEBRA), ({"step_epoch": 200}, CITYSCAPES)],
    ids=["horse2zebra", "cityscapes"],
)
def test_curriculum_tables_for_python_ints_and_tensors(kwargs, expected):
    curriculum = GammaCurriculum(start=50.0, end=10.0, total_epochs=400, **kwargs)
    values = [curriculum(epoch) for epoch in EPOCHS]
    assert all(type(v) is float for v in values)
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    as_tensor = curriculum(tf.constant(EPOCHS))
    assert as_tensor.dtype == tf.float32
    np.testing.assert_allclose(as_tensor.numpy(), expected, rtol=1e-6)
    compiled = tf.function(curriculum, jit_compile=True)(tf.constant(EPOCHS, tf.int64))
    np.testing.assert_allclose(compiled.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose([curriculum.gamma(e) for e in EPOCHS], [1 / v for v in expected], rtol=1e-12)


def test_monet_curriculum_is_200_minus_10e():
    curriculum = GammaCurriculum(start=200.0, end=40.0, total_epochs=16)
    np.testing.assert_allclose([curriculum(e) for e in range(1, 17)], [200 - 10 * e for e in range(1, 17)])


@pytest.mark.parametrize("start, gamma", [(50.0, 0.02), (10.0, 0.1), (1.0, 1.0)])
def test_fixed_mode_keeps_start(start, gamma):
    curriculum = GammaCurriculum(start=start, mode="fixed", step_epoch=10)
    for epoch in (1, 11, 400):
        assert curriculum(epoch) == start
        assert curriculum.gamma(epoch) == pytest.approx(gamma)
    np.testing.assert_allclose(curriculum(tf.constant([1, 11, 400])).numpy(), [start] * 3)


def test_curriculum_holds_end_after_the_last_epoch():
    curriculum = GammaCurriculum(start=50.0, end=10.0, total_epochs=400)
    assert curriculum(500) == 10.0
    assert float(curriculum(tf.constant(500))) == 10.0


def test_curriculum_accepts_fractional_epochs():
    curriculum = GammaCurriculum(start=50.0, end=10.0, total_epochs=400, step_epoch=200)
    assert curriculum(0.5) == pytest.approx(49.95)
    assert curriculum(200.0) == pytest.approx(30.0)
    assert curriculum(200.5) == 1.0


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"start": 0.0}, "start=0.0"),
        ({"end": -1.0}, "end=-1.0"),
        ({"total_epochs": 0}, "total_epochs=0"),
        ({"total_epochs": 2.5}, "total_epochs=2.5"),
        ({"step_epoch": -1}, "step_epoch=-1"),
        ({"step_value": 0}, "step_value=0"),
        ({"mode": "cosine"}, "mode='cosine'"),
    ],
)
def test_curriculum_rejects_invalid_arguments(kwargs, received):
    with pytest.raises(ValueError, match=f"Received: {received}"):
        GammaCurriculum(**kwargs)


def test_curriculum_config_roundtrip():
    original = GammaCurriculum(start=40.0, end=5.0, total_epochs=30, step_epoch=20, step_value=2.0)
    config = original.get_config()
    assert config == {
        "start": 40.0,
        "end": 5.0,
        "total_epochs": 30,
        "step_epoch": 20,
        "step_value": 2.0,
        "mode": "linear",
    }
    rebuilt = GammaCurriculum.from_config(config)
    assert [rebuilt(e) for e in (1, 20, 21)] == [original(e) for e in (1, 20, 21)] == [
        40.0 - 35.0 / 30,
        40.0 - 35.0 * 20 / 30,
        2.0,
    ]
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original))
    assert type(restored) is GammaCurriculum and restored.get_config() == config


# === GammaScheduler inside fit ===


def numpy_hdce_infonce(queries, keys, gamma, tau=0.07):
    """Mean InfoNCE of hDCE over all rows (vectorised restatement of spec §1.3–1.4)."""
    q, k = queries.astype(np.float64), keys.astype(np.float64)
    k_hat = k / (np.linalg.norm(k, axis=-1, keepdims=True) + 1e-7)
    eye = np.eye(q.shape[1], dtype=bool)
    affinity = np.where(eye, -10.0, k_hat @ np.swapaxes(k_hat, 1, 2))
    weights = np.exp((affinity - affinity.max(-1, keepdims=True)) / gamma)
    negatives = np.where(eye, -10.0, weights * (q @ np.swapaxes(k, 1, 2)))
    positive = np.sum(q * k, -1)
    logits = np.concatenate([positive[..., None], negatives], axis=-1) / tau
    return float(np.mean(np.log(np.exp(logits).sum(-1)) - logits[..., 0]))


def probe_pair():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(1, 6, 4))
    keys /= np.linalg.norm(keys, axis=-1, keepdims=True)
    queries = keys + 0.5 * rng.normal(size=(1, 6, 4))
    queries /= np.linalg.norm(queries, axis=-1, keepdims=True)
    return queries.astype(np.float32), keys.astype(np.float32)


class GammaProbeModel(keras.Model):
    """Tiny model trained with hDCE whose Γ lives in a variable changed by GammaScheduler."""

    def __init__(self):
        super().__init__()
        self.weight_temperature = keras.Variable(1.0, trainable=False, name="weight_temperature")
        self.projection = keras.layers.Dense(4, use_bias=False)
        self.hdce = HardDCELoss(weight_temperature=self.weight_temperature)
        self.probe_queries, self.probe_keys = probe_pair()
        self.trace_count = 0

    def call(self, inputs):
        return self.projection(inputs)

    def train_step(self, data):
        self.trace_count += 1  # runs only while tracing
        keys = data
        with tf.GradientTape() as tape:
            loss = self.hdce(keys, self(keys))
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return {
            "loss": loss,
            "seen_gamma": keras.ops.convert_to_tensor(self.weight_temperature),
            "probe": self.hdce(self.probe_keys, self.probe_queries),
        }


def build_probe_model(jit_compile):
    model = GammaProbeModel()
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=jit_compile)
    model(np.zeros((1, 6, 4), np.float32))
    model.optimizer.build(model.trainable_variables)  # no lazy build → a single trace
    return model


def training_keys():
    return probe_pair()[1].repeat(4, axis=0) + np.float32(0.01)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_scheduler_changes_gamma_without_retracing(jit_compile):
    model = build_probe_model(jit_compile)
    curriculum = GammaCurriculum(start=20.0, end=2.0, total_epochs=3)  # Γ = 14, 8, 2
    history = model.fit(
        training_keys(), epochs=3, batch_size=2, shuffle=False, verbose=0, callbacks=[GammaScheduler(curriculum)]
    )
    assert model.trace_count == 1
    np.testing.assert_allclose(history.history["seen_gamma"], [14.0, 8.0, 2.0], rtol=1e-6)
    queries, keys = probe_pair()
    expected_probe = [numpy_hdce_infonce(queries, keys, gamma) for gamma in (14.0, 8.0, 2.0)]
    np.testing.assert_allclose(history.history["probe"], expected_probe, rtol=1e-5)
    assert len(set(np.round(expected_probe, 4))) == 3  # the probe really depends on Γ
    np.testing.assert_allclose(history.history["Gamma"], [14.0, 8.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(history.history["gamma"], [1 / 14, 1 / 8, 1 / 2], rtol=1e-6)


def test_per_step_scheduler_uses_fractional_epochs():
    model = build_probe_model(jit_compile=False)
    curriculum = GammaCurriculum(start=20.0, end=2.0, total_epochs=3)
    seen = []
    recorder = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(logs["seen_gamma"]))
    model.fit(
        training_keys(),
        epochs=2,
        batch_size=2,
        shuffle=False,
        verbose=0,
        callbacks=[GammaScheduler(curriculum, per_step=True), recorder],
    )
    # 2 steps per epoch (taken from fit): epochs 0.5, 1, 1.5, 2 → Γ = 20 − 6e.
    np.testing.assert_allclose(seen, [17.0, 14.0, 11.0, 8.0], rtol=1e-6)
    assert model.trace_count == 1


def test_scheduler_requires_the_variable_on_the_model():
    model = build_probe_model(jit_compile=False)
    scheduler = GammaScheduler(GammaCurriculum(), variable_name="hdce_gamma")
    with pytest.raises(ValueError, match="model.hdce_gamma"):
        model.fit(training_keys(), epochs=1, batch_size=2, verbose=0, callbacks=[scheduler])


def test_scheduler_rejects_invalid_steps_per_epoch():
    with pytest.raises(ValueError, match="Received: steps_per_epoch=0"):
        GammaScheduler(GammaCurriculum(), per_step=True, steps_per_epoch=0)


# === LinearDecay ===


def expected_rate(step, base=2e-4, n_epochs=200, n_epochs_decay=200, steps_per_epoch=10):
    epoch = step // steps_per_epoch + 1
    return base * (1 - max(0, epoch - n_epochs) / (n_epochs_decay + 1))


STEPS = [0, 9, 10, 1999, 2000, 2009, 2010, 2500, 3990, 3999]


def test_linear_decay_values():
    schedule = LinearDecay(2e-4, n_epochs=200, n_epochs_decay=200, steps_per_epoch=10)
    values = [float(schedule(step)) for step in STEPS]
    np.testing.assert_allclose(values, [expected_rate(step) for step in STEPS], rtol=1e-6)
    # Spec §5 by name: constant for 200 epochs, then 200/201 … 1/201.
    assert values[3] == pytest.approx(2e-4)
    assert values[4] == pytest.approx(2e-4 * 200 / 201)
    assert values[-1] == pytest.approx(2e-4 / 201)
    assert float(schedule(4000)) == 0.0 and float(schedule(10_000)) == 0.0


def test_linear_decay_under_xla_with_int64_iterations():
    schedule = LinearDecay(1e-3, n_epochs=2, n_epochs_decay=3, steps_per_epoch=5)
    compiled = tf.function(schedule, jit_compile=True)
    values = [float(compiled(tf.constant(step, tf.int64))) for step in range(0, 30, 5)]
    # Epochs 1..6 → factors 1, 1, 3/4, 2/4, 1/4, 0.
    np.testing.assert_allclose(values, [1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0], rtol=1e-6, atol=1e-12)


def test_linear_decay_drives_an_optimizer():
    schedule = LinearDecay(2e-4, n_epochs=200, n_epochs_decay=200, steps_per_epoch=10)
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    optimizer.build([keras.Variable(np.zeros(2, np.float32))])
    optimizer.iterations.assign(2010)
    assert float(optimizer.learning_rate) == pytest.approx(expected_rate(2010))


def test_linear_decay_config_roundtrip_and_validation():
    original = LinearDecay(1e-3, n_epochs=5, n_epochs_decay=7, steps_per_epoch=3)
    config = original.get_config()
    assert config == {"initial_learning_rate": 1e-3, "n_epochs": 5, "n_epochs_decay": 7, "steps_per_epoch": 3}
    rebuilt = LinearDecay.from_config(config)
    assert [float(rebuilt(s)) for s in (0, 17, 20)] == [float(original(s)) for s in (0, 17, 20)]
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(original))
    assert type(restored) is LinearDecay and restored.get_config() == config
    for kwargs, received in [
        ({"steps_per_epoch": 0}, "steps_per_epoch=0"),
        ({"n_epochs": -1}, "n_epochs=-1"),
        ({"initial_learning_rate": -1.0}, "initial_learning_rate=-1.0"),
    ]:
        arguments = {"initial_learning_rate": 1e-3, "n_epochs": 5, "n_epochs_decay": 7, "steps_per_epoch": 3}
        with pytest.raises(ValueError, match=f"Received: {received}"):
            LinearDecay(**{**arguments, **kwargs})
    assert math.isclose(float(original(0)), 1e-3, rel_tol=1e-6)
