"""One StarGAN v2 + hDCE/SRC iteration against an independent re-statement (spec multimodal §3–§4).

The oracle below re-derives every update of the iteration from the spec's formulas, on separate copies
of the networks, with plain SGD (so an update is exactly θ ← θ − lr·(∇L + wd·θ)):
D latent → D reference → G/M/E/F latent → G reference → EMA. The trainer, given the same random
draws (latent codes and patch locations come from seed generators whose state is copied), must change
exactly the same variables by the same amounts and log the same loss values.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from psr.builders import (
    build_stargan2_trainer,
    diversity_weight_schedule,
    multimodal_gamma_schedule,
)
from psr.config import config_from_dict
from psr.methods import TrainerInputs

SIZE, BATCH, DOMAINS = 16, 2, 3
LR, WD = 0.05, 1e-2
TAU = 0.07


def tiny_config(**loss):
    return config_from_dict({
        "method": "stargan2",
        "data": {"root": "unused", "crop_size": SIZE, "load_size": SIZE},
        "model": {"num_domains": DOMAINS, "latent_dim": 3, "style_dim": 4, "mapping_hidden": 8,
                  "generator": {"filters": 4, "max_filters": 8, "num_res_blocks": 2, "num_adain_blocks": 1},
                  "style_encoder": {"filters": 4, "max_filters": 8}, "discriminator": {"filters": 4, "max_filters": 8},
                  "head": {"units": 8, "num_patches": 6, "layers": [0, 1, 2]}},
        "loss": {"lambda_ds": 2.0, "ds_steps": 10, "lambda_contrastive": 1.0, "lambda_src": 0.1, **loss},
        "train": {"batch_size": BATCH, "epochs": 2, "decay_epochs": 0, "steps_per_epoch": 5,
                  "weight_decay": WD},
    })


def sgd_optimizers():
    return {name: keras.optimizers.SGD(LR) for name in
            ("generator", "mapping", "style_encoder", "discriminator", "head")}


def build(cfg, seed=3):
    keras.utils.set_random_seed(seed)
    return build_stargan2_trainer(cfg.model, cfg.loss, cfg.train, TrainerInputs(SIZE, 5, seed=seed),
                                  optimizers=sgd_optimizers())


def batch_data():
    rng = np.random.RandomState(0)
    images = [rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32) for _ in range(3)]
    y_org = np.array([0, 2], np.int32)
    y_trg = np.array([1, 2], np.int32)
    return (images[0], y_org), (images[1], images[2], y_trg)


def snapshot(model):
    return [np.array(v) for v in model.trainable_variables]


# === The oracle ===


def softplus(x):
    return tf.math.softplus(x)


def r1(d, x, y):
    with tf.GradientTape() as inner:
        inner.watch(x)
        total = tf.reduce_sum(d(x, y))
    scores = d(x, y)
    grad = inner.gradient(total, x)
    return scores, 0.5 * tf.reduce_mean(tf.reduce_sum(grad ** 2, axis=[1, 2, 3]))


def normalize(v):
    return v / (tf.norm(v, axis=-1, keepdims=True) + 1e-7)


def semantic(q_layers, k_layers, gamma, lambda_c, lambda_s, contrastive="hdce"):
    """λ_hDCE·mean(v) (gradient form), the logged cross-entropy, and λ_SRC·JSD summed over b, i, j; layer means."""
    dce_terms, ce_terms, src_terms = [], [], []
    for q, k in zip(q_layers, k_layers):
        k = tf.stop_gradient(k)
        n = q.shape[1]
        eye = tf.eye(n, dtype=tf.bool)[None]
        kn = normalize(k)
        affinity = tf.where(eye, -10.0, tf.matmul(kn, kn, transpose_b=True))
        weights = tf.nn.softmax(affinity / gamma, axis=-1)
        weights = tf.stop_gradient(weights / tf.reduce_max(weights, axis=-1, keepdims=True))
        if contrastive != "hdce":
            weights = tf.ones_like(weights)
        negatives = tf.where(eye, -10.0, tf.matmul(q, k, transpose_b=True) * weights)
        positive = tf.reduce_sum(q * k, axis=-1)
        logits = (negatives - positive[..., None]) / TAU
        v = tf.reduce_logsumexp(logits, axis=-1)
        dce_terms.append(lambda_c * tf.reduce_mean(v))
        ce_terms.append(lambda_c * tf.reduce_mean(tf.math.log(1.0 + tf.reduce_sum(tf.exp(logits), axis=-1))))
        qn = normalize(q)
        p_q = tf.nn.softmax(tf.matmul(qn, qn, transpose_b=True), axis=1)
        p_k = tf.stop_gradient(tf.nn.softmax(tf.matmul(kn, kn, transpose_b=True), axis=1))
        m = 0.5 * (p_q + p_k)
        jsd = 0.5 * tf.reduce_sum(p_q * (tf.math.log(p_q) - tf.math.log(m))) + \
            0.5 * tf.reduce_sum(p_k * (tf.math.log(p_k) - tf.math.log(m)))
        src_terms.append(lambda_s * jsd)
    mean = lambda terms: tf.add_n(terms) / len(terms)  # noqa: E731
    return mean(dce_terms), mean(ce_terms), mean(src_terms)


def sgd(variables, grads):
    for v, g in zip(variables, grads):
        v.assign(v - LR * (g + WD * v))


class Oracle:
    """The released iteration restated on `nets` (a second trainer's networks, used only as functions)."""

    def __init__(self, nets, loss_cfg, feature_layers):
        self.g, self.m, self.e, self.d, self.head = nets
        self.loss = loss_cfg
        self.layers = feature_layers

    def d_step(self, x, y_org, y_trg, style_fn):
        s = style_fn()
        fake = self.g(x, s)
        with tf.GradientTape() as tape:
            real, reg = r1(self.d, tf.constant(x), y_org)
            loss_real = tf.reduce_mean(softplus(-real))
            loss_fake = tf.reduce_mean(softplus(self.d(fake, y_trg)))
            loss = loss_real + loss_fake + self.loss.lambda_r1 * reg
        sgd(self.d.trainable_variables, tape.gradient(loss, self.d.trainable_variables))
        return {"real": loss_real, "fake": loss_fake, "reg": reg}

    def g_loss(self, x, y_org, y_trg, style1, style2, lambda_ds, gamma, patch_ids, semantic_on=True):
        s = style1()
        fake = self.g(x, s)  # the official code runs the whole generator each time
        adv = tf.reduce_mean(softplus(-self.d(fake, y_trg)))
        sty = tf.reduce_mean(tf.abs(self.e(fake, y_trg) - s))
        fake2 = tf.stop_gradient(self.g(x, style2()))
        ds = tf.reduce_mean(tf.abs(fake - fake2))
        s_org = self.e(x, y_org)
        rec = self.g(x, s_org) if self.loss.cycle_input == "real" else self.g(fake, s_org)
        cyc = tf.reduce_mean(tf.abs(rec - x))
        if semantic_on:
            source_maps = self.g.encode(x)
            fake_maps = self.g.encode(tf.stop_gradient(fake))
            queries = self.head([source_maps[i] for i in self.layers], patch_ids)
            keys = self.head([fake_maps[i] for i in self.layers], patch_ids)
            dce, ce, src = semantic(queries, keys, gamma, self.loss.lambda_contrastive, self.loss.lambda_src,
                                    self.loss.contrastive)
        else:
            dce = ce = src = tf.constant(0.0)
        total = adv + self.loss.lambda_style * sty - lambda_ds * ds + self.loss.lambda_cycle * cyc + src + dce
        return total, {"adv": adv, "sty": sty, "ds": ds, "cyc": cyc, "src": src, "patch": ce}


def draws(trainer):
    """The latent codes and patch ids the trainer's next step will draw (its generators' state is copied)."""
    latent = keras.random.SeedGenerator(0)
    latent.state.assign(trainer.latent_seeds.state)
    z1 = keras.random.normal((BATCH, trainer.latent_dim), seed=latent)
    z2 = keras.random.normal((BATCH, trainer.latent_dim), seed=latent)
    sampler_state = np.array(trainer.sampler.seed_generator.state)
    maps = trainer.generator.encode(tf.zeros((1, SIZE, SIZE, 3)))
    probe = [maps[i] for i in trainer.feature_layers]
    ids_latent = trainer.sampler(probe)
    ids_ref = trainer.sampler(probe)
    trainer.sampler.seed_generator.state.assign(sampler_state)  # the trainer draws them again itself
    return z1, z2, ids_latent, ids_ref


@pytest.mark.parametrize("loss", [{}, {"cycle_input": "fake", "contrastive": "dce", "semantic_in_reference_step": False}],
                         ids=["official", "switches"])
def test_one_iteration_matches_restatement(loss):
    cfg = tiny_config(**loss)
    trainer = build(cfg)
    twin = build(cfg, seed=4)
    for a, b in ((trainer.generator, twin.generator), (trainer.mapping, twin.mapping),
                 (trainer.style_encoder, twin.style_encoder), (trainer.discriminator, twin.discriminator),
                 (trainer.head, twin.head)):
        for va, vb in zip(a.weights, b.weights):
            vb.assign(va)
    step = 3  # a later iteration: Γ and λ_ds have moved
    trainer.iterations.assign(step)
    gamma = multimodal_gamma_schedule(cfg.loss.curriculum, 10)(step)
    lambda_ds = diversity_weight_schedule(2.0, 10)(step)
    assert gamma == pytest.approx(50.0 + (1.0 - 50.0) * step / 10)  # spec §3.4, 0-based t over 10 iterations
    assert lambda_ds == pytest.approx(2.0 * (1 - step / 10))
    trainer.weight_temperature.assign(gamma)
    trainer.lambda_ds.assign(lambda_ds)

    data = batch_data()
    (x, y_org), (x_ref, x_ref2, y_trg) = data
    z1, z2, ids_latent, ids_ref = draws(trainer)
    before = {name: snapshot(net) for name, net in trainer._trained_networks().items()}
    ema_before = [snapshot(n) for n in (trainer.generator_ema, trainer.mapping_ema, trainer.style_encoder_ema)]
    logs = {k: float(np.ravel(v)[0]) for k, v in trainer.train_step(data).items()}

    oracle = Oracle((twin.generator, twin.mapping, twin.style_encoder, twin.discriminator, twin.head),
                    cfg.loss, cfg.model.head.layers)
    expected = {}
    for mode, style in (("latent", lambda: twin.mapping(z1, y_trg)), ("ref", lambda: twin.style_encoder(x_ref, y_trg))):
        for k, v in oracle.d_step(x, y_org, y_trg, style).items():
            expected[f"D/{mode}_{k}"] = float(v)
    latent_nets = [twin.generator, twin.mapping, twin.style_encoder, twin.head]
    with tf.GradientTape() as tape:
        total, terms = oracle.g_loss(x, y_org, y_trg, lambda: twin.mapping(z1, y_trg), lambda: twin.mapping(z2, y_trg),
                                     lambda_ds, gamma, ids_latent)
    variables = [v for n in latent_nets for v in n.trainable_variables]
    sgd(variables, tape.gradient(total, variables))
    expected.update({f"G/latent_{k}": float(v) for k, v in terms.items()})
    with tf.GradientTape() as tape:
        total, terms = oracle.g_loss(x, y_org, y_trg, lambda: twin.style_encoder(x_ref, y_trg),
                                     lambda: twin.style_encoder(x_ref2, y_trg), lambda_ds, gamma, ids_ref,
                                     semantic_on=cfg.loss.semantic_in_reference_step)
    sgd(twin.generator.trainable_variables, tape.gradient(total, twin.generator.trainable_variables))
    expected.update({f"G/ref_{k}": float(v) for k, v in terms.items()})

    # Logged values: float32 losses of O(1) recomputed through other kernels: 1e-4 relative is ~100 ulp·√n.
    for name, value in expected.items():
        assert logs[name] == pytest.approx(value, rel=2e-4, abs=2e-5), name
    # Every update: each network moved as the restatement's, and only those the spec updates moved.
    for name, net in trainer._trained_networks().items():
        twin_net = twin._trained_networks()[name]
        delta = np.concatenate([(new - old).ravel() for old, new in zip(before[name], snapshot(net))])
        ref_delta = np.concatenate([(ref - old).ravel() for old, ref in zip(before[name], snapshot(twin_net))])
        scale = np.max(np.abs(ref_delta))
        assert scale > 1e-4, f"{name} did not change"
        # The same gradients summed in another order: float32 errors ~1e-6 of the largest gradient entry
        # (a bias in front of an instance norm has a true gradient of 0 and gets only that noise).
        np.testing.assert_allclose(delta, ref_delta, rtol=0, atol=1e-4 * scale, err_msg=name)
    # EMA: θ_ema ← β θ_ema + (1 − β) θ after the iteration.
    beta = cfg.model.ema_decay
    for old, ema, net in zip(ema_before, (trainer.generator_ema, trainer.mapping_ema, trainer.style_encoder_ema),
                             (trainer.generator, trainer.mapping, trainer.style_encoder)):
        for o, e, w in zip(old, snapshot(ema), snapshot(net)):
            np.testing.assert_allclose(e, beta * o + (1 - beta) * w, rtol=1e-6, atol=1e-7)
    assert int(trainer.iterations.numpy()) == step + 1


def test_schedules_are_per_iteration():
    cfg = tiny_config()
    trainer = build(cfg)
    values = {s.variable.name: s for s in trainer.schedules()}
    total = 2 * 5  # epochs × steps per epoch
    gamma, lambda_ds = values["weight_temperature"], values["lambda_ds"]
    for step in (0, 1, 7, total):
        assert gamma.schedule(step) == pytest.approx(50.0 - 49.0 * step / total)
        assert lambda_ds.schedule(step) == pytest.approx(max(0.0, 2.0 * (1 - step / 10)))
    assert lambda_ds.schedule(25) == 0.0


def test_ema_starts_as_copy_and_translator_uses_it():
    trainer = build(tiny_config())
    for net, ema in ((trainer.generator, trainer.generator_ema), (trainer.mapping, trainer.mapping_ema)):
        for a, b in zip(net.weights, ema.weights):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    translator = trainer.inference_network()
    assert translator.generator is trainer.generator_ema and translator.mapping is trainer.mapping_ema
    x = np.zeros((1, SIZE, SIZE, 3), np.float32)
    out = translator.translate_latent(x, np.array([1], np.int32), np.ones((1, 3), np.float32))
    expected = trainer.generator_ema(x, trainer.mapping_ema(np.ones((1, 3), np.float32), np.array([1], np.int32)))
    np.testing.assert_allclose(ops.convert_to_numpy(out), ops.convert_to_numpy(expected), rtol=0, atol=0)
