"""CUTTrainer: loss assembly and update order against an independent re-computation (spec §2)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from psr.builders import build_cut_trainer
from psr.config import CurriculumConfig, DiscriminatorConfig, GeneratorConfig, HeadConfig, LossConfig, ModelConfig, TrainConfig
from psr.losses.contrastive import HardDCELoss
from psr.losses.patch_semantic import combine_layers
from psr.losses.semantic_relation import SemanticRelationLoss
from psr.methods import TrainerInputs
from psr.trainers.cut import CUTTrainer

LAYERS = (0, 4, 8, 12)
SIZE = 16
GAMMA = 7.0


def make_trainer(loss_cfg: LossConfig, g_lr=0.0, d_lr=0.05, batch_trace_counter=None, jit=False):
    """The trainer as the CUT method builds it, with SGD optimisers and a fixed Γ = 7.

    The XLA trainer has the fused units whatever `fused: auto` would pick here (they are the GPU default).
    """
    model = ModelConfig(
        generator=GeneratorConfig(filters=4, num_blocks=1, fused=True if jit else "auto"),
        discriminator=DiscriminatorConfig(filters=4, num_layers=2, fused=True if jit else "auto"),
        head=HeadConfig(units=8, num_patches=100_000, layers=LAYERS),  # ≥ H·W: every location, any order
    )
    loss_cfg = dataclasses.replace(loss_cfg, curriculum=CurriculumConfig(mode="fixed", start=GAMMA))
    optimizers = (keras.optimizers.SGD(g_lr), keras.optimizers.SGD(d_lr), keras.optimizers.SGD(g_lr))
    trainer = build_cut_trainer(model, loss_cfg, TrainConfig(jit_compile=jit),
                                TrainerInputs(image_size=SIZE, steps_per_epoch=2, seed=3), optimizers=optimizers)
    if batch_trace_counter is not None:
        step = trainer.train_step

        def counting(data):
            batch_trace_counter.append(1)  # Python body runs only while tracing
            return step(data)

        trainer.train_step = counting
    return trainer


def images(batch, seed):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype("float32")


def expected_terms(trainer, x, y, cfg: LossConfig, d_before):
    """Independent assembly of spec §2 from the networks and the (separately tested) per-layer losses."""
    g, h = trainer.generator, trainer.head
    real = np.concatenate([x, y]) if cfg.identity_branch else x
    fake = g(real).numpy()
    real_feats = g.encode(real, LAYERS)
    ids = [tf.range(f.shape[1] * f.shape[2]) for f in real_feats]  # all positions, natural order
    keys = [k.numpy() for k in h(real_feats, ids)]
    queries = [q.numpy() for q in h(g.encode(fake, LAYERS), ids)]
    b = len(x)
    hdce = HardDCELoss(temperature=cfg.temperature, weight_temperature=GAMMA, reported_value=cfg.reported_value)
    src = SemanticRelationLoss(divergence=cfg.src_divergence)
    reduce = (lambda v: sum(v) / len(v)) if cfg.layer_reduction == "mean" else sum

    def nce(sl):
        return reduce([cfg.lambda_contrastive * float(hdce(k[sl], q[sl])) for k, q in zip(keys, queries)])

    def sem(sl):
        return reduce([cfg.lambda_src * float(src(k[sl], q[sl])) for k, q in zip(keys, queries)])

    nce_xy, src_total = nce(slice(0, b)), sem(slice(0, b))
    nce_yy = nce(slice(b, None)) if cfg.identity_branch else 0.0
    if cfg.src_on_identity:
        src_total += sem(slice(b, None))
    nce_total = nce_xy + nce_yy
    if cfg.identity_branch and cfg.branch_reduction == "mean":
        nce_total *= 0.5
    d_real = np.mean((d_before(y).numpy() - 1) ** 2)
    d_fake = np.mean(d_before(fake[:b]).numpy() ** 2)
    g_adv = np.mean((trainer.discriminator(fake[:b]).numpy() - 1) ** 2)  # D *after* its update
    return {
        "d_loss": 0.5 * (d_real + d_fake),
        "g_adv": g_adv,
        "g_nce": nce_xy,
        "g_nce_idt": nce_yy,
        "g_src": src_total,
        "g_loss": cfg.lambda_gan * g_adv + nce_total + src_total,
    }


@pytest.mark.parametrize(
    "cfg",
    [
        LossConfig(),
        LossConfig(identity_branch=False, lambda_src=0.3),
        LossConfig(layer_reduction="sum", branch_reduction="sum", src_on_identity=True, lambda_gan=0.5),
    ],
    ids=["official", "no_identity", "supplement_variants"],
)
def test_one_step_matches_independent_assembly(cfg):
    trainer = make_trainer(cfg)
    x, y = images(2, 0), images(2, 1)
    d_before = keras.models.clone_model(trainer.discriminator)
    d_before.set_weights(trainer.discriminator.get_weights())
    g_weights = [w.copy() for w in trainer.generator.get_weights()]

    logs = {k: float(v) for k, v in trainer.train_step((tf.constant(x), tf.constant(y))).items()}

    for before, after in zip(g_weights, trainer.generator.get_weights()):
        np.testing.assert_array_equal(before, after)  # G learning rate 0
    assert any(
        not np.array_equal(a, b) for a, b in zip(d_before.get_weights(), trainer.discriminator.get_weights())
    ), "D must be updated"
    expected = expected_terms(trainer, x, y, cfg, d_before)
    if not cfg.identity_branch:
        assert "g_nce_idt" not in logs  # only computed terms are reported
        expected.pop("g_nce_idt")
    assert "d_r1" not in logs and "g_idt" not in logs
    for name, value in expected.items():
        assert logs[name] == pytest.approx(value, rel=2e-4, abs=1e-6), name


def test_generator_and_head_move_and_keys_do_not_leak_gradient():
    trainer = make_trainer(LossConfig(), g_lr=0.1)
    head_before = [w.copy() for w in trainer.head.get_weights()]
    g_before = [w.copy() for w in trainer.generator.get_weights()]
    trainer.train_step((tf.constant(images(1, 2)), tf.constant(images(1, 3))))
    assert any(not np.array_equal(a, b) for a, b in zip(g_before, trainer.generator.get_weights()))
    assert any(not np.array_equal(a, b) for a, b in zip(head_before, trainer.head.get_weights()))


def test_combine_layers():
    values = [tf.constant(1.0), tf.constant(2.0), tf.constant(6.0)]
    assert float(combine_layers(values, "mean")) == pytest.approx(3.0)
    assert float(combine_layers(values, "sum")) == pytest.approx(9.0)


def test_fit_with_batch_two_under_xla_traces_once_while_gamma_changes():
    from psr.callbacks import GammaScheduler
    from psr.schedules import GammaCurriculum

    traces = []
    trainer = make_trainer(LossConfig(), g_lr=0.01, batch_trace_counter=traces, jit=True)
    data = tf.data.Dataset.from_tensor_slices((images(4, 4), images(4, 5))).batch(2)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(trainer.weight_temperature.numpy()))

    history = trainer.fit(
        data, epochs=3, verbose=0, shuffle=False,
        callbacks=[GammaScheduler(GammaCurriculum(start=50, end=10, total_epochs=3)), Record()],
    )
    assert len(traces) == 1
    assert seen == pytest.approx([50 - 40 / 3, 50 - 80 / 3, 10.0])
    assert all(np.isfinite(v).all() for v in history.history.values())


def test_invalid_arguments():
    with pytest.raises(ValueError, match="gan_mode"):
        CUTTrainer(None, None, _Objective(), gan_mode="wgan")
    with pytest.raises(ValueError, match="branch_reduction"):
        CUTTrainer(None, None, _Objective(), branch_reduction="max")
    with pytest.raises(ValueError, match="nce_layers"):
        CUTTrainer(None, None, _Objective(), nce_layers=())


class _Objective:
    head = sampler = None
    has_src = True


def test_sincut_terms_identity_l1_r1_and_minibatch_negatives():
    """λ_idt·mean|G(y) − y|, ½·λ_R1·mean R1 on real y and the minibatch-wide contrastive set, recomputed."""
    from psr.losses.regularizers import r1_penalty

    cfg = LossConfig(gan_mode="nonsaturating", lambda_identity=0.7, lambda_r1=0.6, negatives_from_minibatch=True,
                     lambda_src=0.2)
    trainer = make_trainer(cfg)
    x, y = images(2, 6), images(2, 7)
    d_before = keras.models.clone_model(trainer.discriminator)
    d_before.set_weights(trainer.discriminator.get_weights())
    g, h = trainer.generator, trainer.head

    logs = {k: float(v) for k, v in trainer.train_step((tf.constant(x), tf.constant(y))).items()}

    fake = g(np.concatenate([x, y])).numpy()
    assert logs["g_idt"] == pytest.approx(0.7 * np.mean(np.abs(fake[2:] - y)), rel=1e-5)
    r1, _ = r1_penalty(d_before, tf.constant(y))
    assert logs["d_r1"] == pytest.approx(0.5 * 0.6 * float(np.mean(r1)), rel=1e-4)
    softplus = lambda v: np.log1p(np.exp(v.astype(np.float64)))  # noqa: E731
    d_real = np.mean(softplus(-d_before(y).numpy()))
    d_fake = np.mean(softplus(d_before(fake[:2]).numpy()))
    assert logs["d_loss"] == pytest.approx(0.5 * (d_real + d_fake) + logs["d_r1"], rel=2e-5)

    real_feats = g.encode(np.concatenate([x, y]), LAYERS)
    ids = [tf.range(f.shape[1] * f.shape[2]) for f in real_feats]
    keys = [k.numpy() for k in h(real_feats, ids)]
    queries = [q.numpy() for q in h(g.encode(fake, LAYERS), ids)]
    hdce = HardDCELoss(temperature=cfg.temperature, weight_temperature=GAMMA)

    def minibatch(a):
        return a.reshape(1, -1, a.shape[-1])

    nce_xy = np.mean([0.1 * float(hdce(minibatch(k[:2]), minibatch(q[:2]))) for k, q in zip(keys, queries)])
    per_image = np.mean([0.1 * float(hdce(k[:2], q[:2])) for k, q in zip(keys, queries)])
    assert logs["g_nce"] == pytest.approx(nce_xy, rel=2e-4)
    assert abs(nce_xy - per_image) > 1e-4 * abs(nce_xy)
