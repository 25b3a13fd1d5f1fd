"""Tests of psr.losses.semantic_relation (SRC, spec single_modal.md §1.5–1.6).

The oracle below restates the maths with float64 loops over columns (the
softmax runs over the first patch index, axis 1 of [B, N, N]); a 3-patch case
is worked out by hand with math.exp / math.log.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.losses import SemanticRelationLoss
from psr.losses import semantic_relation


# === Independent numpy oracle ===


def unit_rows(x):
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-7)


def column_softmax(similarity):
    """P[:, j] = softmax over i of S[:, j], by loops."""
    n = len(similarity)
    out = np.zeros((n, n))
    for j in range(n):
        exps = [math.exp(similarity[i, j]) for i in range(n)]
        for i in range(n):
            out[i, j] = exps[i] / sum(exps)
    return out


def oracle_image(queries, keys, divergence):
    q, k = unit_rows(np.asarray(queries, np.float64)), unit_rows(np.asarray(keys, np.float64))
    sq, sk = q @ q.T, k @ k.T
    n = len(q)
    if divergence in ("l1", "l2"):
        power = 1 if divergence == "l1" else 2
        return sum(abs(sk[i, j] - sq[i, j]) ** power for i in range(n) for j in range(n) if i != j)
    pq, pk = column_softmax(sq), column_softmax(sk)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if divergence == "kl":
                total += pk[i, j] * math.log(pk[i, j] / pq[i, j])
            else:
                m = 0.5 * (pq[i, j] + pk[i, j])
                total += 0.5 * (pq[i, j] * math.log(pq[i, j] / m) + pk[i, j] * math.log(pk[i, j] / m))
    return total


def oracle(queries, keys, divergence="jsd"):
    return np.array([oracle_image(q, k, divergence) for q, k in zip(queries, keys)])


def query_key_pair(batch, patches=12, channels=6, seed=0):
    rng = np.random.default_rng(seed)
    keys = unit_rows(rng.normal(size=(batch, patches, channels)))
    queries = unit_rows(keys + 0.8 * unit_rows(rng.normal(size=(batch, patches, channels))))
    return queries.astype(np.float32), keys.astype(np.float32)


def finite_difference_gradient(fn, x, step=1e-6):
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (fn(plus) - fn(minus)) / (2 * step)
    return grad


DIVERGENCES = ["jsd", "kl", "l1", "l2"]


# === Values ===


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("batch", [1, 3])
def test_matches_numpy_restatement(batch, divergence):
    queries, keys = query_key_pair(batch, seed=1)
    values = semantic_relation(queries, keys, divergence)
    assert values.shape == (batch,) and values.dtype == tf.float32
    np.testing.assert_allclose(values.numpy(), oracle(queries, keys, divergence), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_embeddings_are_renormalised(divergence):
    queries, keys = query_key_pair(2, seed=2)
    np.testing.assert_allclose(
        semantic_relation(3.0 * queries, 0.5 * keys, divergence).numpy(),
        oracle(queries, keys, divergence),
        rtol=1e-4,
        atol=1e-6,
    )


# Three patches: keys at 0°, 90°, 180°; queries at 0°, 60°, 120° (2-D unit vectors).
HAND_KEYS = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], np.float32)
HAND_QUERIES = np.array([[[1.0, 0.0], [0.5, math.sqrt(3) / 2], [-0.5, math.sqrt(3) / 2]]], np.float32)
# Cosines: S_k = [[1, 0, −1], [0, 1, 0], [−1, 0, 1]], S_q = [[1, ½, −½], [½, 1, ½], [−½, ½, 1]].
# Column j of each is softmax-ed over i; both matrices are symmetric, so columns = rows.
HAND_KEY_COLUMNS = [(1.0, 0.0, -1.0), (0.0, 1.0, 0.0), (-1.0, 0.0, 1.0)]
HAND_QUERY_COLUMNS = [(1.0, 0.5, -0.5), (0.5, 1.0, 0.5), (-0.5, 0.5, 1.0)]


def softmax3(column):
    exps = [math.exp(x) for x in column]
    return [e / sum(exps) for e in exps]


def test_jsd_by_hand_for_three_patches():
    expected = 0.0
    for key_column, query_column in zip(HAND_KEY_COLUMNS, HAND_QUERY_COLUMNS):
        for p, q in zip(softmax3(key_column), softmax3(query_column)):
            m = (p + q) / 2
            expected += 0.5 * (q * math.log(q / m) + p * math.log(p / m))
    np.testing.assert_allclose(semantic_relation(HAND_QUERIES, HAND_KEYS).numpy(), [expected], rtol=1e-5)


def test_kl_by_hand_for_three_patches():
    expected = 0.0
    for key_column, query_column in zip(HAND_KEY_COLUMNS, HAND_QUERY_COLUMNS):
        for p, q in zip(softmax3(key_column), softmax3(query_column)):
            expected += p * math.log(p / q)
    np.testing.assert_allclose(semantic_relation(HAND_QUERIES, HAND_KEYS, "kl").numpy(), [expected], rtol=1e-5)


def test_l1_and_l2_by_hand_for_three_patches():
    # Off-diagonal differences S_k − S_q: (0,1) −½, (0,2) −½, (1,2) −½, each twice (symmetry).
    np.testing.assert_allclose(semantic_relation(HAND_QUERIES, HAND_KEYS, "l1").numpy(), [6 * 0.5], rtol=1e-5)
    np.testing.assert_allclose(semantic_relation(HAND_QUERIES, HAND_KEYS, "l2").numpy(), [6 * 0.25], rtol=1e-5)


def test_jsd_is_non_negative_bounded_and_zero_when_queries_equal_keys():
    queries, keys = query_key_pair(3, seed=3)
    values = semantic_relation(queries, keys).numpy()
    assert np.all(values > 0.0) and np.all(values <= 12 * math.log(2))
    np.testing.assert_allclose(semantic_relation(keys, keys).numpy(), np.zeros(3), atol=1e-6)
    # Invariant to a common rotation of all patches (only relations matter).
    rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(6, 6)))
    rotated = (keys @ rotation.astype(np.float32)).astype(np.float32)
    np.testing.assert_allclose(semantic_relation(rotated, keys).numpy(), np.zeros(3), atol=1e-5)


# === Gradients ===


@pytest.mark.parametrize("divergence", ["jsd", "kl", "l2"])
@pytest.mark.parametrize("batch", [1, 3])
def test_gradient_matches_numpy_oracle_and_keys_get_none(batch, divergence):
    queries, keys = query_key_pair(batch, patches=8, channels=4, seed=5)
    loss_fn = SemanticRelationLoss(divergence)
    q, k = tf.constant(queries), tf.constant(keys)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(q)
        tape.watch(k)
        value = loss_fn(k, q)
    expected = finite_difference_gradient(lambda x: float(np.mean(oracle(x, keys, divergence))), queries)
    np.testing.assert_allclose(tape.gradient(value, q).numpy(), expected, rtol=1e-3, atol=1e-5)
    key_gradient = tape.gradient(value, k)
    assert key_gradient is None or np.all(key_gradient.numpy() == 0.0)


# === Loss class ===


def test_loss_is_the_mean_over_images():
    queries, keys = query_key_pair(3, seed=6)
    per_image = oracle(queries, keys)
    np.testing.assert_allclose(float(SemanticRelationLoss()(keys, queries)), per_image.mean(), rtol=1e-5)
    np.testing.assert_allclose(SemanticRelationLoss(reduction=None)(keys, queries).numpy(), per_image, rtol=1e-4)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_batch_of_two_equals_mean_of_two_single_calls(divergence):
    queries, keys = query_key_pair(2, seed=7)
    loss_fn = SemanticRelationLoss(divergence)
    singles = [float(loss_fn(keys[i : i + 1], queries[i : i + 1])) for i in range(2)]
    np.testing.assert_allclose(float(loss_fn(keys, queries)), np.mean(singles), rtol=1e-6)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_same_value_under_jit(divergence):
    queries, keys = query_key_pair(3, seed=8)
    loss_fn = SemanticRelationLoss(divergence)
    compiled = tf.function(loss_fn.__call__, jit_compile=True)(tf.constant(keys), tf.constant(queries))
    np.testing.assert_allclose(compiled.numpy(), loss_fn(keys, queries).numpy(), rtol=1e-5)


def test_config_roundtrip_keeps_outputs():
    queries, keys = query_key_pair(2, seed=9)
    original = SemanticRelationLoss(divergence="kl", reduction="sum", name="src_kl")
    config = original.get_config()
    assert (config["divergence"], config["reduction"], config["name"]) == ("kl", "sum", "src_kl")
    rebuilt = SemanticRelationLoss.from_config(config)
    assert rebuilt.get_config() == config
    np.testing.assert_allclose(rebuilt(keys, queries).numpy(), original(keys, queries).numpy(), rtol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original))
    assert type(restored) is SemanticRelationLoss and restored.get_config() == config


def test_unknown_divergence_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'jsd', 'kl', 'l1', 'l2'.*Received: divergence='wasserstein'"):
        SemanticRelationLoss("wasserstein")
    queries, keys = query_key_pair(1, seed=10)
    with pytest.raises(ValueError, match="Received: divergence='js'"):
        semantic_relation(queries, keys, "js")


def test_mismatched_shapes_raise_clear_error():
    queries, keys = query_key_pair(1, patches=8, seed=11)
    with pytest.raises(ValueError, match=r"\(1, 8, 6\).*\(1, 8, 5\)"):
        SemanticRelationLoss()(keys[..., :5], queries)


def test_mixed_precision_inputs_still_give_float32():
    queries, keys = query_key_pair(2, seed=12)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        q16, k16 = tf.cast(queries, tf.bfloat16), tf.cast(keys, tf.bfloat16)
        assert SemanticRelationLoss()(k16, q16).dtype == tf.float32
        values = semantic_relation(q16, k16)
        assert values.dtype == tf.float32
        expected = oracle(q16.numpy().astype(np.float64), k16.numpy().astype(np.float64))
        np.testing.assert_allclose(values.numpy(), expected, rtol=1e-4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
