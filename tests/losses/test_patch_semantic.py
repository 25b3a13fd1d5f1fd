"""PatchSemanticObjective against NumPy re-statements (no trainer involved; issue #12 item 2)."""

import numpy as np
import pytest
import tensorflow as tf

from psr.losses.adversarial import discriminator_loss, generator_loss
from psr.losses.contrastive import DCELoss, HardDCELoss, PatchNCELoss
from psr.losses.patch_semantic import PatchSemanticObjective, combine_layers
from psr.losses.semantic_relation import DIVERGENCES, SemanticRelationLoss, _DIVERGENCES
from psr.models.layers import PatchSampler
from psr.models.projection_head import PatchMLPHead

from test_hard_dce import oracle_batch
from test_semantic_relation import oracle as src_oracle

GAMMA = 5.0
SHAPES = [(2, 4, 4, 6), (2, 2, 2, 5)]  # two layers: [B, H, W, C]


def features(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype("float32") for shape in SHAPES]


def gathered_unit(feature, ids):
    """NumPy head of `use_mlp=False`: the patches at `ids` of the row-major (h, w) flattening, unit-normalised."""
    b, h, w, c = feature.shape
    rows = feature.reshape(b, h * w, c)[:, ids].astype(np.float64)
    return rows / (np.linalg.norm(rows, axis=-1, keepdims=True) + 1e-7)


def make_objective(contrastive="hdce", src=True, reduction="mean", minibatch=False, gather=None, patches=8):
    head = PatchMLPHead(input_channels=[s[-1] for s in SHAPES], use_mlp=False)
    loss = {"hdce": HardDCELoss(weight_temperature=GAMMA), "dce": DCELoss(), "patchnce": PatchNCELoss()}[contrastive]
    return PatchSemanticObjective(
        head, PatchSampler(num_patches=patches, seed=1), loss, SemanticRelationLoss() if src else None,
        lambda_contrastive=0.3, lambda_src=0.7, layer_reduction=reduction, negatives_from_minibatch=minibatch,
        gather=gather,
    )


def expected(keys_f, queries_f, ids, contrastive="hdce", reduction="mean", minibatch=False):
    nce_terms, src_terms = [], []
    for kf, qf, i in zip(keys_f, queries_f, ids):
        k, q = gathered_unit(kf, np.asarray(i)), gathered_unit(qf, np.asarray(i))
        if minibatch:
            k, q = k.reshape(1, -1, k.shape[-1]), q.reshape(1, -1, q.shape[-1])
        gamma = GAMMA if contrastive == "hdce" else None
        dce_rows, ce_rows = oracle_batch(q, k, gamma=gamma)
        # hDCE/DCE report the weighted InfoNCE cross-entropy (the official log value); PatchNCE is the CE.
        nce_terms.append(0.3 * ce_rows.mean())
        src_terms.append(0.7 * src_oracle(q, k).mean())
    reduce = np.mean if reduction == "mean" else np.sum
    return reduce(nce_terms), reduce(src_terms)


@pytest.mark.parametrize("contrastive", ["hdce", "dce", "patchnce"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_terms_match_numpy_restatement(contrastive, reduction):
    objective = make_objective(contrastive, reduction=reduction)
    keys_f, queries_f = features(0), features(1)
    keys, ids = objective.keys([tf.constant(f) for f in keys_f])
    queries = objective.queries([tf.constant(f) for f in queries_f], ids)
    nce, src = expected(keys_f, queries_f, ids, contrastive, reduction)
    # float32 through a normalisation, one matrix product of C ≤ 6 terms and a log-sum-exp over ≤ 16 rows:
    # relative error ~1e-6; 2e-5 leaves room for other kernels.
    assert float(objective.contrastive(keys, queries)) == pytest.approx(nce, rel=2e-5)
    assert float(objective.relation(keys, queries)) == pytest.approx(src, rel=2e-5)


def test_call_uses_one_set_of_patch_ids_for_both_sides():
    objective = make_objective()
    keys_f, queries_f = features(2), features(3)
    terms = objective([tf.constant(f) for f in keys_f], [tf.constant(f) for f in queries_f])
    # The sampler is seeded: replay its draw to know which ids the call used.
    replay = make_objective()
    _, ids = replay.keys([tf.constant(f) for f in keys_f])
    nce, src = expected(keys_f, queries_f, ids)
    assert float(terms["contrastive"]) == pytest.approx(nce, rel=2e-5)
    assert float(terms["src"]) == pytest.approx(src, rel=2e-5)


def test_minibatch_negatives_compare_all_patches_of_the_batch():
    objective = make_objective(minibatch=True, patches=3)
    keys_f, queries_f = features(4), features(5)
    keys, ids = objective.keys([tf.constant(f) for f in keys_f])
    queries = objective.queries([tf.constant(f) for f in queries_f], ids)
    nce, src = expected(keys_f, queries_f, ids, minibatch=True)
    per_image, _ = expected(keys_f, queries_f, ids, minibatch=False)
    assert float(objective.contrastive(keys, queries)) == pytest.approx(nce, rel=2e-5)
    assert float(objective.relation(keys, queries)) == pytest.approx(src, rel=2e-5)
    assert abs(nce - per_image) > 1e-3  # the two sets really differ


def test_gather_is_applied_to_minibatch_sets_only():
    calls = []

    def gather(x):
        calls.append(tuple(x.shape))
        return tf.concat([x, x[::-1]], axis=0)  # stands in for the other replica's rows

    keys_f, queries_f = features(6), features(7)
    objective = make_objective(minibatch=True, gather=gather, patches=3)
    keys, ids = objective.keys([tf.constant(f) for f in keys_f])
    queries = objective.queries([tf.constant(f) for f in queries_f], ids)
    value = float(objective.contrastive(keys, queries))
    doubled = [np.concatenate([f, f[::-1]]) for f in keys_f], [np.concatenate([f, f[::-1]]) for f in queries_f]
    nce, _ = expected(*doubled, ids, minibatch=True)
    assert value == pytest.approx(nce, rel=2e-5)
    assert calls and all(shape[0] == 2 for shape in calls)
    calls.clear()
    per_image = make_objective(gather=gather)
    keys, ids = per_image.keys([tf.constant(f) for f in keys_f])
    per_image.contrastive(keys, per_image.queries([tf.constant(f) for f in queries_f], ids))
    assert not calls


def test_keys_carry_no_gradient_and_queries_do():
    objective = make_objective()
    keys_f = [tf.Variable(f) for f in features(8)]
    queries_f = [tf.Variable(f) for f in features(9)]
    with tf.GradientTape(persistent=True) as tape:
        terms = objective(keys_f, queries_f)
        total = terms["contrastive"] + terms["src"]
    for grad in tape.gradient(total, keys_f):
        assert grad is None or not np.any(grad.numpy())
    assert all(np.any(g.numpy()) for g in tape.gradient(total, queries_f))


def test_no_src_gives_zero_and_has_src_says_so():
    objective = make_objective(src=False)
    assert not objective.has_src
    keys, ids = objective.keys([tf.constant(f) for f in features(0)])
    assert float(objective.relation(keys, keys)) == 0.0


def test_invalid_reduction_and_config():
    with pytest.raises(ValueError, match="layer_reduction"):
        make_objective(reduction="max")
    assert make_objective(minibatch=True).get_config() == {
        "lambda_contrastive": 0.3, "lambda_src": 0.7, "layer_reduction": "mean", "negatives_from_minibatch": True,
    }


def test_combine_layers():
    values = [tf.constant(1.0), tf.constant(2.0), tf.constant(6.0)]
    assert float(combine_layers(values, "mean")) == pytest.approx(3.0)
    assert float(combine_layers(values, "sum")) == pytest.approx(9.0)


def test_divergence_list_names_the_implemented_functions():
    assert tuple(_DIVERGENCES) == DIVERGENCES


# === Adversarial losses (per sample) ===


def test_adversarial_losses_match_numpy_per_sample():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(3, 4, 4, 1)).astype("float32")  # PatchGAN maps
    fake = rng.normal(size=(3, 4, 4, 1)).astype("float32")
    softplus = lambda x: np.log1p(np.exp(x.astype(np.float64)))  # noqa: E731
    mean = lambda x: x.reshape(3, -1).mean(axis=1)  # noqa: E731
    d_real, d_fake = discriminator_loss(real, fake, "lsgan")
    np.testing.assert_allclose(d_real, mean((real - 1.0) ** 2), rtol=1e-6)
    np.testing.assert_allclose(d_fake, mean(fake ** 2), rtol=1e-6)
    np.testing.assert_allclose(generator_loss(fake, "lsgan"), mean((fake - 1.0) ** 2), rtol=1e-6)
    d_real, d_fake = discriminator_loss(real, fake, "nonsaturating")
    np.testing.assert_allclose(d_real, mean(softplus(-real)), rtol=1e-6)
    np.testing.assert_allclose(d_fake, mean(softplus(fake)), rtol=1e-6)
    np.testing.assert_allclose(generator_loss(fake, "nonsaturating"), mean(softplus(-fake)), rtol=1e-6)
    # Hand values: lsgan at D = 1 (real) / 0 (fake) is zero; nonsaturating at 0 is log 2.
    ones, zeros = np.ones((1, 2, 2, 1), "float32"), np.zeros((1, 2, 2, 1), "float32")
    assert [float(v[0]) for v in discriminator_loss(ones, zeros, "lsgan")] == [0.0, 0.0]
    assert float(generator_loss(zeros, "nonsaturating")[0]) == pytest.approx(np.log(2.0), rel=1e-6)
    with pytest.raises(ValueError, match="GAN mode"):
        generator_loss(zeros, "wgan")
