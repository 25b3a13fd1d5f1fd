"""Tests of psr.losses.contrastive: hard-negative weights, hDCE, DCE and PatchNCE.

Oracles are written here independently of the code under test: float64 loops
over patches that restate spec single_modal.md §1.1–1.4, and a 3-patch case
worked out with math.exp / math.log on 2-D unit vectors at known angles.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.losses import DCELoss
from psr.losses import HardDCELoss
from psr.losses import PatchNCELoss
from psr.losses import dce
from psr.losses import hard_dce
from psr.losses import hard_negative_weights
from psr.losses import patch_nce

TAU = 0.07


# === Independent numpy oracle (one image at a time, float64 loops) ===


def unit_rows(x):
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-7)


def oracle_weights(keys, gamma):
    """[N, N] weights of one image: softmax over j of (k̂_i·k̂_j, −10 on i=j)/Γ, divided by the row max."""
    k = unit_rows(np.asarray(keys, np.float64))
    n = len(k)
    weights = np.zeros((n, n))
    for i in range(n):
        affinity = [-10.0 if j == i else float(k[i] @ k[j]) for j in range(n)]
        exps = [math.exp(a / gamma) for a in affinity]
        probs = [e / sum(exps) for e in exps]
        weights[i] = [p / max(probs) for p in probs]
    return weights


def oracle_rows(queries, keys, tau=TAU, weights=None):
    """(dce_i, ce_i) of one image, per row i."""
    q, k = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    n = len(q)
    dce_rows, ce_rows = [], []
    for i in range(n):
        positive = float(q[i] @ k[i])
        negatives = []
        for j in range(n):
            w = 1.0 if weights is None else weights[i, j]
            negatives.append(-10.0 if j == i else w * float(q[i] @ k[j]))
        dce_rows.append(math.log(sum(math.exp((neg - positive) / tau) for neg in negatives)))
        ce_rows.append(
            -positive / tau + math.log(math.exp(positive / tau) + sum(math.exp(neg / tau) for neg in negatives))
        )
    return np.array(dce_rows), np.array(ce_rows)


def oracle_batch(queries, keys, gamma=None, tau=TAU):
    """[B, N] (dce, ce); gamma None = unweighted (DCE / PatchNCE)."""
    results = [
        oracle_rows(q, k, tau, None if gamma is None else oracle_weights(k, gamma)) for q, k in zip(queries, keys)
    ]
    return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])


def random_unit(batch, patches=12, channels=6, seed=0):
    rng = np.random.default_rng(seed)
    return unit_rows(rng.normal(size=(batch, patches, channels))).astype(np.float32)


def query_key_pair(batch, patches=12, channels=6, seed=0):
    """Keys, and queries that are noisy copies of them (a realistic, non-trivial regime)."""
    keys = random_unit(batch, patches, channels, seed)
    noise = random_unit(batch, patches, channels, seed + 100)
    queries = unit_rows(keys + 0.8 * noise).astype(np.float32)
    return queries, keys


def finite_difference_gradient(fn, x, step=1e-6):
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (fn(plus) - fn(minus)) / (2 * step)
    return grad


def tape_gradient(loss_fn, queries, keys):
    queries, keys = tf.constant(queries), tf.constant(keys)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(queries)
        tape.watch(keys)
        value = loss_fn(queries, keys)
    return value.numpy(), tape.gradient(value, queries).numpy(), tape.gradient(value, keys)


def assert_no_gradient(gradient):
    assert gradient is None or np.all(np.asarray(gradient) == 0.0)


# === The 3-patch case, by hand ===
# Keys at 0°, 90°, 180°; queries are the keys rotated by +30°.
C30 = math.sqrt(3) / 2
HAND_KEYS = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], np.float32)
HAND_QUERIES = np.array([[[C30, 0.5], [-0.5, C30], [-C30, -0.5]]], np.float32)
# s_ij = q_i·k_j: row 0 = (c, ½, −c), row 1 = (−½, c, ½), row 2 = (−c, −½, c), c = cos 30°.
# Key affinities off the diagonal: a_01 = a_10 = a_12 = a_21 = 0, a_02 = a_20 = −1, so every
# row max is 0 and w_ij = exp(a_ij/Γ): w_02 = w_20 = e^(−1/Γ), the others 1, diagonal e^(−10/Γ).


def hand_rows(gamma):
    """(dce, ce) rows of the 3-patch case; gamma None = weights ≡ 1."""
    g = 1.0 if gamma is None else math.exp(-1.0 / gamma)
    negatives = [
        [0.5, -C30 * g],  # row 0: w01·s01 = ½, w02·s02 = −c·e^(−1/Γ)
        [-0.5, 0.5],  # row 1: weights 1
        [-C30 * g, -0.5],  # row 2: w20·s20, w21·s21
    ]
    dce_rows, ce_rows = [], []
    for row in negatives:
        terms = [math.exp(n / TAU) for n in row] + [math.exp(-10.0 / TAU)]
        dce_rows.append(-C30 / TAU + math.log(sum(terms)))
        ce_rows.append(-C30 / TAU + math.log(math.exp(C30 / TAU) + sum(terms)))
    return np.array([dce_rows]), np.array([ce_rows])


@pytest.mark.parametrize("gamma", [1.0, 10.0, 50.0])
@pytest.mark.parametrize("batch", [1, 3])
def test_weights_match_numpy_restatement(batch, gamma):
    keys = random_unit(batch, seed=1) * 1.7  # unnormalised keys: the weights re-normalise them
    weights = hard_negative_weights(keys, gamma).numpy()
    expected = np.stack([oracle_weights(k, gamma) for k in keys])
    assert weights.shape == (batch, 12, 12) and weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 10.0, 50.0])
def test_weights_closed_form_and_row_max_is_exactly_one(gamma):
    keys = random_unit(3, seed=2)
    weights = hard_negative_weights(keys, gamma).numpy()
    affinity = np.einsum("bic,bjc->bij", keys.astype(np.float64), keys.astype(np.float64))
    affinity[:, np.arange(12), np.arange(12)] = -10.0
    closed_form = np.exp((affinity - affinity.max(axis=-1, keepdims=True)) / gamma)
    np.testing.assert_allclose(weights, closed_form, rtol=1e-5, atol=1e-6)
    assert np.all(weights.max(axis=-1) == 1.0)
    # The maximum is reached off the diagonal: the hardest negative gets weight 1.
    assert np.all(np.diagonal(weights, axis1=1, axis2=2) < 1.0)
    # Spec §1.3 ranges for cosine similarities: Γ=1 → w ≥ e^−2 among negatives.
    off_diagonal = weights[:, ~np.eye(12, dtype=bool)]
    assert off_diagonal.min() >= math.exp(-2.0 / gamma) - 1e-6


def test_weights_by_hand_for_three_patches():
    gamma = 2.0
    g, d = math.exp(-1.0 / gamma), math.exp(-10.0 / gamma)
    expected = np.array([[[d, 1.0, g], [1.0, d, 1.0], [g, 1.0, d]]])
    np.testing.assert_allclose(hard_negative_weights(HAND_KEYS, gamma).numpy(), expected, rtol=1e-6)


def test_weights_are_stop_gradient():
    keys = tf.constant(random_unit(1, seed=3))
    with tf.GradientTape() as tape:
        tape.watch(keys)
        total = tf.reduce_sum(hard_negative_weights(keys, 1.0))
    assert_no_gradient(tape.gradient(total, keys))


# === hDCE / DCE / PatchNCE functions against the oracle ===


@pytest.mark.parametrize("gamma", [1.0, 10.0, 50.0])
@pytest.mark.parametrize("batch", [1, 3])
def test_hard_dce_matches_numpy_restatement(batch, gamma):
    queries, keys = query_key_pair(batch, seed=4)
    dce_rows, ce_rows = hard_dce(queries, keys, gamma)
    expected_dce, expected_ce = oracle_batch(queries, keys, gamma)
    assert dce_rows.shape == (batch, 12) and ce_rows.shape == (batch, 12)
    np.testing.assert_allclose(dce_rows.numpy(), expected_dce, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(ce_rows.numpy(), expected_ce, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_dce_and_patch_nce_match_numpy_restatement(batch):
    queries, keys = query_key_pair(batch, seed=5)
    expected_dce, expected_ce = oracle_batch(queries, keys, gamma=None)
    dce_rows, ce_rows = dce(queries, keys)
    np.testing.assert_allclose(dce_rows.numpy(), expected_dce, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(ce_rows.numpy(), expected_ce, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(patch_nce(queries, keys).numpy(), expected_ce, rtol=1e-5, atol=2e-5)


def test_other_temperature_matches_oracle():
    queries, keys = query_key_pair(2, seed=6)
    expected_dce, expected_ce = oracle_batch(queries, keys, gamma=5.0, tau=0.2)
    dce_rows, ce_rows = hard_dce(queries, keys, 5.0, temperature=0.2)
    np.testing.assert_allclose(dce_rows.numpy(), expected_dce, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ce_rows.numpy(), expected_ce, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 10.0])
def test_hard_dce_by_hand_for_three_patches(gamma):
    expected_dce, expected_ce = hand_rows(gamma)
    dce_rows, ce_rows = hard_dce(HAND_QUERIES, HAND_KEYS, gamma)
    np.testing.assert_allclose(dce_rows.numpy(), expected_dce, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ce_rows.numpy(), expected_ce, rtol=1e-5, atol=1e-5)


def test_dce_and_patch_nce_by_hand_for_three_patches():
    expected_dce, expected_ce = hand_rows(None)
    dce_rows, ce_rows = dce(HAND_QUERIES, HAND_KEYS)
    np.testing.assert_allclose(dce_rows.numpy(), expected_dce, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ce_rows.numpy(), expected_ce, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(patch_nce(HAND_QUERIES, HAND_KEYS).numpy(), expected_ce, rtol=1e-5, atol=1e-5)


def test_large_weight_temperature_approaches_dce():
    queries, keys = query_key_pair(2, seed=7)
    np.testing.assert_allclose(hard_dce(queries, keys, 1e6)[0].numpy(), dce(queries, keys)[0].numpy(), atol=1e-4)
    # ...while Γ = 1 re-weights visibly.
    assert np.max(np.abs(hard_dce(queries, keys, 1.0)[0].numpy() - dce(queries, keys)[0].numpy())) > 1e-2


def test_mismatched_shapes_raise_clear_error():
    queries, keys = random_unit(1, 8, 4), random_unit(1, 6, 4)
    with pytest.raises(ValueError, match=r"queries.shape=\(1, 8, 4\), keys.shape=\(1, 6, 4\)"):
        hard_dce(queries, keys, 1.0)
    with pytest.raises(ValueError, match=r"\(1, 8, 4\).*\(1, 6, 4\)"):
        HardDCELoss()(keys, queries)
    with pytest.raises(ValueError, match=r"\(8, 4\)"):
        patch_nce(queries[0], queries[0])


# === Loss classes ===


LOSS_CASES = [
    # (class, kwargs, oracle gamma, value from "ce" or "dce", gradient from "ce" or "dce")
    (HardDCELoss, {"weight_temperature": 10.0}, 10.0, "ce", "dce"),
    (HardDCELoss, {"weight_temperature": 1.0, "reported_value": "dce"}, 1.0, "dce", "dce"),
    (DCELoss, {}, None, "ce", "dce"),
    (DCELoss, {"reported_value": "dce"}, None, "dce", "dce"),
    (PatchNCELoss, {}, None, "ce", "ce"),
]
CASE_IDS = ["hdce-infonce", "hdce-dce", "dce-infonce", "dce-dce", "patch_nce"]


@pytest.mark.parametrize("cls, kwargs, gamma, value_from, gradient_from", LOSS_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_loss_value_and_gradient_match_oracle(batch, cls, kwargs, gamma, value_from, gradient_from):
    queries, keys = query_key_pair(batch, patches=8, channels=4, seed=8)
    loss_fn = cls(**kwargs)
    value, query_grad, key_grad = tape_gradient(lambda q, k: loss_fn(k, q), queries, keys)

    def oracle_mean(q, which):
        dce_rows, ce_rows = oracle_batch(q, keys, gamma)
        return float(np.mean(ce_rows if which == "ce" else dce_rows))

    assert value.dtype == np.float32
    np.testing.assert_allclose(value, oracle_mean(queries, value_from), rtol=1e-5, atol=1e-5)
    expected_grad = finite_difference_gradient(lambda q: oracle_mean(q, gradient_from), queries)
    np.testing.assert_allclose(query_grad, expected_grad, rtol=1e-3, atol=1e-4)
    assert_no_gradient(key_grad)


def test_infonce_report_has_ce_value_but_dce_gradient():
    """The official trick: the logged value is the CE, yet the CE gradient is not what trains."""
    queries, keys = query_key_pair(1, patches=8, channels=4, seed=9)
    gamma = 1.0
    value, query_grad, _ = tape_gradient(lambda q, k: HardDCELoss(weight_temperature=gamma)(k, q), queries, keys)
    dce_rows, ce_rows = oracle_batch(queries, keys, gamma)
    assert abs(np.mean(ce_rows) - np.mean(dce_rows)) > 1e-3  # the two quantities differ here
    np.testing.assert_allclose(value, np.mean(ce_rows), rtol=1e-5)
    ce_grad = finite_difference_gradient(lambda q: np.mean(oracle_batch(q, keys, gamma)[1]), queries)
    dce_grad = finite_difference_gradient(lambda q: np.mean(oracle_batch(q, keys, gamma)[0]), queries)
    assert np.max(np.abs(ce_grad - dce_grad)) > 1e-2
    np.testing.assert_allclose(query_grad, dce_grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "rows_fn",
    [lambda q, k: hard_dce(q, k, 1.0)[0], lambda q, k: dce(q, k)[0], patch_nce],
    ids=["hard_dce", "dce", "patch_nce"],
)
def test_functions_give_no_gradient_to_keys(rows_fn):
    queries, keys = query_key_pair(2, seed=10)
    _, query_grad, key_grad = tape_gradient(lambda q, k: tf.reduce_mean(rows_fn(q, k)), queries, keys)
    assert np.any(query_grad != 0.0)
    assert_no_gradient(key_grad)


@pytest.mark.parametrize("cls", [HardDCELoss, DCELoss, PatchNCELoss])
def test_batch_of_two_equals_mean_of_two_single_calls(cls):
    queries, keys = query_key_pair(2, seed=11)
    loss_fn = cls()
    both = float(loss_fn(keys, queries))
    singles = [float(loss_fn(keys[i : i + 1], queries[i : i + 1])) for i in range(2)]
    np.testing.assert_allclose(both, np.mean(singles), rtol=1e-6)
    # The per-image values (no reduction) are the single-image losses.
    per_image = cls(reduction=None)(keys, queries).numpy()
    np.testing.assert_allclose(per_image, singles, rtol=1e-6)


@pytest.mark.parametrize("cls", [HardDCELoss, DCELoss, PatchNCELoss])
def test_same_value_under_jit(cls):
    queries, keys = query_key_pair(3, seed=12)
    loss_fn = cls()
    eager = loss_fn(keys, queries)
    compiled = tf.function(loss_fn.__call__, jit_compile=True)(tf.constant(keys), tf.constant(queries))
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), rtol=1e-5)


def test_variable_weight_temperature_is_read_at_call_time_without_retracing():
    queries, keys = query_key_pair(2, seed=13)
    gamma = keras.Variable(1.0, trainable=False, name="weight_temperature")
    loss_fn = HardDCELoss(weight_temperature=gamma)
    traces = []

    @tf.function(jit_compile=True)
    def step(k, q):
        traces.append(1)
        return loss_fn(k, q)

    for value in (1.0, 10.0, 50.0):
        gamma.assign(value)
        expected = np.mean(oracle_batch(queries, keys, value)[1])
        np.testing.assert_allclose(step(tf.constant(keys), tf.constant(queries)).numpy(), expected, rtol=1e-5)
    assert len(traces) == 1


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (HardDCELoss, {"temperature": 0.2, "weight_temperature": 7.0, "reported_value": "dce", "name": "h"}),
        (DCELoss, {"temperature": 0.2, "reported_value": "dce", "reduction": "sum", "name": "d"}),
        (PatchNCELoss, {"temperature": 0.2, "reduction": "sum", "name": "p"}),
    ],
)
def test_config_roundtrip_keeps_outputs(cls, kwargs):
    queries, keys = query_key_pair(2, seed=14)
    original = cls(**kwargs)
    config = original.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    rebuilt = cls.from_config(config)
    assert rebuilt.get_config() == config
    np.testing.assert_allclose(rebuilt(keys, queries).numpy(), original(keys, queries).numpy(), rtol=1e-6)
    # Through the registry as well (package "psr").
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original))
    assert type(restored) is cls and restored.get_config() == config


def test_config_stores_the_number_of_a_variable_weight_temperature():
    gamma = keras.Variable(12.5, trainable=False)
    config = HardDCELoss(weight_temperature=gamma).get_config()
    assert config["weight_temperature"] == 12.5 and type(config["weight_temperature"]) is float
    gamma.assign(3.0)
    assert HardDCELoss.from_config(config).weight_temperature == 12.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"weight_temperature": -1.0}, "weight_temperature=-1.0"),
        ({"reported_value": "ce"}, "reported_value='ce'"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        HardDCELoss(**kwargs)


def test_mixed_precision_inputs_still_give_float32():
    queries, keys = query_key_pair(2, seed=15)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        q16, k16 = tf.cast(queries, tf.bfloat16), tf.cast(keys, tf.bfloat16)
        for loss_fn in (HardDCELoss(), DCELoss(), PatchNCELoss()):
            assert loss_fn(k16, q16).dtype == tf.float32
        dce_rows, ce_rows = hard_dce(q16, k16, 10.0)
        assert dce_rows.dtype == tf.float32 and ce_rows.dtype == tf.float32
        assert hard_negative_weights(k16, 10.0).dtype == tf.float32
        # Same maths as float32 on the bf16-rounded inputs.
        expected = np.mean(oracle_batch(q16.numpy().astype(np.float64), k16.numpy().astype(np.float64), 10.0)[1])
        np.testing.assert_allclose(float(HardDCELoss(weight_temperature=10.0)(k16, q16)), expected, rtol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")
