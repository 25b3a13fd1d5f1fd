"""Tests of the patch projection head against a NumPy re-statement of CUT's PatchSampleF."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.models.layers import PatchSampler
from psr.models.projection_head import PatchMLPHead


def random_features(channels, sizes, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, h, w, c)).astype("float32") for c, (h, w) in zip(channels, sizes)]


def dense_weights(head, index, which):
    """[kernel, bias] of one dense layer, found by its fixed name."""
    return [np.asarray(w, np.float64) for w in head.weights if f"mlp_{index}_{which}/" in w.path]


def numpy_head(head, features, patch_ids):
    outputs = []
    for index, (feature, ids) in enumerate(zip(features, patch_ids)):
        batch, height, width, channels = feature.shape
        x = feature.reshape(batch, height * width, channels)[:, np.asarray(ids), :].astype(np.float64)
        if head.use_mlp:
            w1, b1 = dense_weights(head, index, "dense1")
            w2, b2 = dense_weights(head, index, "dense2")
            x = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
        outputs.append(x / (np.sqrt((x**2).sum(-1, keepdims=True)) + 1e-7))
    return outputs


CHANNELS = [3, 8, 16]
SIZES = [(6, 6), (4, 5), (2, 2)]


def test_weights_exist_before_any_call_and_init():
    head = PatchMLPHead([3, 256, 64], units=256)
    assert len(head.weights) == 3 * 4
    kernel = [np.asarray(w) for w in head.weights if w.path.endswith("mlp_1_dense2/kernel")][0]
    assert kernel.shape == (256, 256)
    expected_std = 0.02 * np.sqrt(2.0 / (256 + 256))
    assert abs(kernel.std() / expected_std - 1.0) < 0.03
    assert all(np.all(np.asarray(w) == 0) for w in head.weights if w.path.endswith("bias"))


@pytest.mark.parametrize("use_mlp", [True, False])
def test_matches_numpy_restatement_and_is_unit_norm(use_mlp):
    head = PatchMLPHead(CHANNELS, units=8, use_mlp=use_mlp)
    rng = np.random.default_rng(3)
    for weight in head.weights:  # larger weights than the 0.02-gain init, so the MLP matters
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    features = random_features(CHANNELS, SIZES)
    patch_ids = [np.array([0, 35, 7, 12], "int32"), np.array([19, 3, 4], "int32"), np.array([3, 1, 0, 2], "int32")]
    outputs = [np.asarray(o) for o in head(features, patch_ids)]
    expected = numpy_head(head, features, patch_ids)
    units = [8, 8, 8] if use_mlp else CHANNELS
    for out, exp, ids, width in zip(outputs, expected, patch_ids, units):
        assert out.shape == (2, len(ids), width)
        np.testing.assert_allclose(out, exp, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)


def test_works_with_sampler_under_jit():
    head = PatchMLPHead(CHANNELS, units=8)
    sampler = PatchSampler(num_patches=10)

    @tf.function(jit_compile=True)
    def embed(features):
        return head(features, sampler(features))

    outputs = embed(random_features(CHANNELS, SIZES))
    assert [tuple(o.shape) for o in outputs] == [(2, 10, 8), (2, 10, 8), (2, 4, 8)]


def test_wrong_number_of_feature_maps_raises():
    head = PatchMLPHead(CHANNELS, units=8)
    features = random_features(CHANNELS[:2], SIZES[:2])
    with pytest.raises(ValueError, match="expects 3 feature maps"):
        head(features, [np.array([0], "int32")] * 2)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="Received: units=0"):
        PatchMLPHead([3], units=0)
    with pytest.raises(ValueError, match="Received: input_channels=\\[\\]"):
        PatchMLPHead([])


def test_config_roundtrip_keeps_outputs():
    head = PatchMLPHead([3, 8], units=6, use_mlp=True, name="head_f")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, PatchMLPHead)
    assert (restored.input_channels, restored.units, restored.use_mlp, restored.name) == ([3, 8], 6, True, "head_f")
    restored.set_weights(head.get_weights())
    features = random_features([3, 8], SIZES[:2])
    ids = [np.array([1, 2], "int32"), np.array([0, 5], "int32")]
    for a, b in zip(head(features, ids), restored(features, ids)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
