"""StarGAN v2 trainer with the hDCE and SRC losses (multi-modal translation, spec multimodal.md §3–§4).

One training iteration is four updates inside one compiled `train_step`, each
recomputing its forward pass with the weights the previous update left:

1. D, latent-guided: s = M(z₁, y_trg), x̃ = G(x, s) detached; logistic loss + R1 on the reals;
2. D, reference-guided: s = E(x_ref, y_trg);
3. G, M, E and the projection head F, latent-guided: adversarial, style reconstruction, diversity
   (minus λ_ds), reconstruction and the semantic terms;
4. G alone, reference-guided: the same loss with s = E(x_ref, y_trg), s₂ = E(x_ref2, y_trg);

then the EMA copies of G, M and E move towards the trained networks. The
semantic terms take the **source** image's encoder features as queries (with
gradient) and the translated image's as the detached keys (spec §3.3), through
the shared `PatchSemanticObjective`.

The generator's encoder does not depend on the style, so each G update runs it
once on x and decodes every style from that one bottleneck (spec §9.16): the
official step runs it five times; the values and gradients are the same.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from psr.losses.patch_semantic import PatchSemanticObjective
from psr.losses.regularizers import r1_penalty
from psr.registry import CYCLE_INPUTS, REDUCTIONS
from psr.trainers.base import ScheduledValue, Trainer
from psr.trainers.distribution import (
    global_batch_mean,
    num_replicas,
    update_moving_average,
)

D_TERMS = ("real", "fake", "reg")
G_TERMS = ("adv", "sty", "ds", "cyc", "src", "patch")


def logged_names() -> tuple:
    """`D/latent_real`, …, `G/ref_patch` (the official log names, spec §4.3)."""
    names = [f"D/{mode}_{term}" for mode in ("latent", "ref") for term in D_TERMS]
    names += [f"G/{mode}_{term}" for mode in ("latent", "ref") for term in G_TERMS]
    return tuple(names)


def _per_sample_mean(values):
    """Mean over every axis but the batch axis, float32 `[B]`."""
    values = ops.cast(values, "float32")
    return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    for target_var, source_var in zip(target.weights, source.weights):
        target_var.assign(source_var)


@keras.saving.register_keras_serializable(package="psr")
class StarGAN2Trainer(Trainer):
    """G, M, E, D and the projection head, trained as the released Hneg_SRC multimodal code.

    Args:
        generator: `StarGAN2Generator` (`call(x, s)`, `encode(x) -> maps`, `decode(bottleneck, s)`).
        mapping: `MappingNetwork` (`call(z, domains) -> s`).
        style_encoder: `StyleEncoder` (`call(x, domains) -> s`).
        discriminator: `MultiTaskDiscriminator` (`call(x, domains) -> [B]` logits).
        generator_ema, mapping_ema, style_encoder_ema: networks of the same configuration holding the
            moving averages (what export, evaluation and samples use); set to copies of the trained ones.
        objective: the shared `PatchSemanticObjective` (head trained with G in the latent step).
        weight_temperature: Γ variable the contrastive loss reads; `gamma_schedule` sets it per iteration.
        lambda_ds_schedule: completed iterations → λ_ds.
        latent_dim: size of z.
        feature_layers: indices into `generator.encode`'s maps compared by the semantic terms.
        cycle_input: "real" (code: G(x, E(x))) or "fake" (supplement: G(G(x, s), E(x))).
        src_batch_reduction: "sum" (code) or "mean" of the per-image SRC values over the global batch.
        semantic_in_reference_step: also apply the semantic terms in the reference-guided G update (code).
        ema_decay: β of the moving averages.
        weight_decay: coupled L2 added to every gradient (PyTorch Adam `weight_decay`).
        seed: seed of the latent codes' generator.
    """

    logged_terms = logged_names() + ("lambda_ds",)

    def __init__(
        self,
        generator: keras.Model,
        mapping: keras.Model,
        style_encoder: keras.Model,
        discriminator: keras.Model,
        objective: PatchSemanticObjective,
        *,
        generator_ema: keras.Model,
        mapping_ema: keras.Model,
        style_encoder_ema: keras.Model,
        weight_temperature: keras.Variable,
        gamma_schedule: Optional[Callable[[int], float]] = None,
        lambda_ds_schedule: Optional[Callable[[int], float]] = None,
        latent_dim: int = 16,
        feature_layers: Sequence[int] = (0, 1, 2, 3, 4),
        lambda_adv: float = 1.0,
        lambda_r1: float = 1.0,
        lambda_style: float = 1.0,
        lambda_cycle: float = 1.0,
        cycle_input: str = "real",
        src_batch_reduction: str = "sum",
        semantic_in_reference_step: bool = True,
        ema_decay: float = 0.999,
        weight_decay: float = 0.0,
        seed: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value, valid in (("cycle_input", cycle_input, CYCLE_INPUTS),
                                  ("src_batch_reduction", src_batch_reduction, REDUCTIONS)):
            if value not in valid:
                raise ValueError(f"`{arg}` must be one of {valid}. Received: {arg}={value!r}")
        if not feature_layers:
            raise ValueError(f"`feature_layers` must not be empty. Received: feature_layers={feature_layers!r}")
        self.generator = generator
        self.mapping = mapping
        self.style_encoder = style_encoder
        self.discriminator = discriminator
        self.generator_ema = generator_ema
        self.mapping_ema = mapping_ema
        self.style_encoder_ema = style_encoder_ema
        self.objective = objective
        self.head = objective.head
        self.sampler = objective.sampler
        self.weight_temperature = weight_temperature
        self.lambda_ds = keras.Variable(
            lambda_ds_schedule(0) if lambda_ds_schedule else 0.0, trainable=False, dtype="float32", name="lambda_ds"
        )
        self.iterations = keras.Variable(0, trainable=False, dtype="int64", name="iterations")
        self.gamma_schedule = gamma_schedule
        self.lambda_ds_schedule = lambda_ds_schedule
        self.latent_dim = int(latent_dim)
        self.feature_layers = tuple(int(i) for i in feature_layers)
        self.lambda_adv = float(lambda_adv)
        self.lambda_r1 = float(lambda_r1)
        self.lambda_style = float(lambda_style)
        self.lambda_cycle = float(lambda_cycle)
        self.cycle_input = cycle_input
        self.src_batch_reduction = src_batch_reduction
        self.semantic_in_reference_step = bool(semantic_in_reference_step)
        self.ema_decay = float(ema_decay)
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.latent_seeds = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=name.replace("/", "_")) for name in self.logged_terms}

    # === Set-up ===

    def compile(self, optimizers: dict, jit_compile: bool = False, **kwargs):
        """Wires the five Adams: `{"generator", "mapping", "style_encoder", "discriminator", "head"}`."""
        super().compile(optimizer=None, jit_compile=jit_compile, **kwargs)
        missing = {"generator", "mapping", "style_encoder", "discriminator", "head"} - set(optimizers)
        if missing:
            raise ValueError(f"`optimizers` lacks {sorted(missing)}. Received: {sorted(optimizers)}")
        self.optimizers = dict(optimizers)
        self.g_optimizer = self.optimizers["generator"]
        self.m_optimizer = self.optimizers["mapping"]
        self.e_optimizer = self.optimizers["style_encoder"]
        self.d_optimizer = self.optimizers["discriminator"]
        self.head_optimizer = self.optimizers["head"]

    def build_all(self, image_size: int = 32, channels: int = 3) -> None:
        """Creates every variable (networks, EMA copies, head, optimiser slots); EMA starts as an exact copy.

        The official code deep-copies the EMA nets before He initialisation; after 10k iterations at
        β = 0.999 their initial values weigh 5e-5, so starting from a copy is the documented deviation.
        """
        x = ops.zeros((1, image_size, image_size, channels))
        y = ops.zeros((1,), dtype="int32")
        z = ops.zeros((1, self.latent_dim))
        for generator, mapping, encoder in ((self.generator, self.mapping, self.style_encoder),
                                            (self.generator_ema, self.mapping_ema, self.style_encoder_ema)):
            s = mapping(z, y)
            encoder(x, y)
            generator(x, s)
        features = self.generator.encode(x)
        self.objective.keys([features[i] for i in self.feature_layers])
        self.discriminator(x, y)
        for source, target in ((self.generator, self.generator_ema), (self.mapping, self.mapping_ema),
                               (self.style_encoder, self.style_encoder_ema)):
            copy_weights(source, target)
        if getattr(self, "optimizers", None):
            for name, network in self._trained_networks().items():
                self.optimizers[name].build(network.trainable_variables)
        self.built = True

    def _trained_networks(self) -> dict:
        return {"generator": self.generator, "mapping": self.mapping, "style_encoder": self.style_encoder,
                "discriminator": self.discriminator, "head": self.head}

    def call(self, images, training: bool = False):
        # A forward pass for Keras' bookkeeping: the EMA translation into domain 0 with a zero code.
        batch = ops.shape(images)[0]
        styles = self.mapping_ema(ops.zeros((batch, self.latent_dim)), ops.zeros((batch,), dtype="int32"))
        return self.generator_ema(images, styles, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # === Trainer contract ===

    @property
    def step_counter(self) -> keras.Variable:
        # G steps twice per iteration, M once: the trainer counts iterations itself.
        return self.iterations

    def named_optimizers(self) -> dict:
        return dict(self.optimizers)

    def inference_network(self) -> keras.Model:
        if getattr(self, "_translator", None) is None:
            from psr.models.multimodal import MultimodalTranslator

            self._translator = MultimodalTranslator(self.generator_ema, self.mapping_ema, self.style_encoder_ema,
                                                    latent_dim=self.latent_dim)
        return self._translator

    def schedules(self) -> list:
        schedules = []
        if self.gamma_schedule is not None:
            schedules.append(ScheduledValue(self.weight_temperature, self.gamma_schedule,
                                            {"Gamma": None, "gamma": lambda value: 1.0 / value}))
        if self.lambda_ds_schedule is not None:
            schedules.append(ScheduledValue(self.lambda_ds, self.lambda_ds_schedule, {"lambda_ds": None}))
        return schedules

    def sample_grid(self, sources: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Latent rows (each source, then 2 codes per domain) above reference rows (see `MultimodalTranslator`)."""
        return self.inference_network().sample_grid(sources, references, seed=0 if self.seed is None else self.seed)

    # === Pieces of the iteration ===

    def _latent_codes(self, batch):
        """This replica's rows of codes drawn for the global batch: the same codes, image by image, on any
        number of replicas (every replica holds the same generator state)."""
        replicas = num_replicas()
        codes = keras.random.normal((batch * replicas, self.latent_dim), seed=self.latent_seeds)
        if replicas == 1:
            return codes
        index = tf.distribute.get_replica_context().replica_id_in_sync_group
        return codes[index * batch:(index + 1) * batch]

    def _apply(self, names: Sequence[str], loss, tape) -> None:
        """One backward pass for the networks `names`, then each one's Adam (with the coupled weight decay)."""
        networks = self._trained_networks()
        groups = [networks[name].trainable_variables for name in names]
        grads = tape.gradient(loss, [v for group in groups for v in group])
        start = 0
        # Replicas' gradients are summed by the optimiser: each adds its share of the decay term.
        decay = self.weight_decay / num_replicas()
        for name, variables in zip(names, groups):
            part = grads[start:start + len(variables)]
            start += len(variables)
            if decay:
                part = [g + decay * ops.cast(v, g.dtype) for g, v in zip(part, variables)]
            self.optimizers[name].apply_gradients(zip(part, variables))

    def _styles(self, mode: str, codes_or_refs, domains, training: bool = True):
        if mode == "latent":
            return self.mapping(codes_or_refs, domains, training=training)
        return self.style_encoder(codes_or_refs, domains, training=training)

    def _discriminator_step(self, mode: str, x, y_org, y_trg, style_input) -> dict:
        """L_D = mean softplus(−D(x)) + mean softplus(D(x̃)) + λ_reg·½·mean_b‖∇ₓD(x)‖² (spec §3.1)."""
        styles = ops.stop_gradient(self._styles(mode, style_input, y_trg))
        fake = ops.stop_gradient(self.generator(x, styles, training=True))
        with tf.GradientTape() as tape:
            r1, real_scores = r1_penalty(lambda images, training=True: self.discriminator(images, y_org, training=training), x)
            fake_scores = self.discriminator(fake, y_trg, training=True)
            loss_real = ops.softplus(-ops.cast(real_scores, "float32"))
            loss_fake = ops.softplus(ops.cast(fake_scores, "float32"))
            r1 = 0.5 * ops.cast(r1, "float32")
            d_loss = (global_batch_mean(loss_real) + global_batch_mean(loss_fake)
                      + self.lambda_r1 * global_batch_mean(r1))
        self._apply(("discriminator",), d_loss, tape)
        return {f"D/{mode}_real": ops.mean(loss_real), f"D/{mode}_fake": ops.mean(loss_fake),
                f"D/{mode}_reg": ops.mean(r1)}

    def _semantic_terms(self, tape, source_features, fake):
        """(hDCE, SRC) with the source's features as queries and the translation's as detached keys."""
        with tape.stop_recording():
            fake_features = self.generator.encode(ops.stop_gradient(fake), training=True)
            keys, patch_ids = self.objective.keys([fake_features[i] for i in self.feature_layers])
        queries = self.objective.queries([source_features[i] for i in self.feature_layers], patch_ids)
        patch = self.objective.contrastive(keys, queries)
        src = self.objective.relation(keys, queries)
        if self.src_batch_reduction == "sum":
            # The per-image values are summed over the global batch (the relation loss averages them).
            src = src * ops.cast(ops.shape(fake)[0] * num_replicas(), "float32")
        return patch, src

    def _generator_loss(self, tape, mode: str, x, y_org, y_trg, first, second, semantic: bool):
        """L_G of spec §3.2 for one mode; `first`/`second` are (z₁, z₂) or (x_ref, x_ref2)."""
        source_features = self.generator.encode(x, training=True)
        bottleneck = source_features[-1]
        styles = self._styles(mode, first, y_trg)
        fake = self.generator.decode(bottleneck, styles, training=True)
        adv = ops.softplus(-ops.cast(self.discriminator(fake, y_trg, training=True), "float32"))
        sty = _per_sample_mean(ops.abs(self.style_encoder(fake, y_trg, training=True) - styles))
        fake2 = ops.stop_gradient(self.generator.decode(bottleneck, self._styles(mode, second, y_trg), training=True))
        ds = _per_sample_mean(ops.abs(ops.cast(fake, "float32") - ops.cast(fake2, "float32")))
        styles_org = self.style_encoder(x, y_org, training=True)
        if self.cycle_input == "real":
            reconstruction = self.generator.decode(bottleneck, styles_org, training=True)
        else:
            reconstruction = self.generator(fake, styles_org, training=True)
        cyc = _per_sample_mean(ops.abs(ops.cast(reconstruction, "float32") - ops.cast(x, "float32")))
        if semantic:
            patch, src = self._semantic_terms(tape, source_features, fake)
        else:
            patch, src = ops.zeros(()), ops.zeros(())
        loss = (self.lambda_adv * global_batch_mean(adv) + self.lambda_style * global_batch_mean(sty)
                - self.lambda_ds * global_batch_mean(ds) + self.lambda_cycle * global_batch_mean(cyc) + src + patch)
        replicas = num_replicas()  # Keras Loss objects divide by the replica count: report per-replica values
        logs = {f"G/{mode}_adv": ops.mean(adv), f"G/{mode}_sty": ops.mean(sty), f"G/{mode}_ds": ops.mean(ds),
                f"G/{mode}_cyc": ops.mean(cyc), f"G/{mode}_src": src * replicas, f"G/{mode}_patch": patch * replicas}
        return loss, logs

    # === Training step ===

    def train_step(self, data):
        (x, y_org), (x_ref, x_ref2, y_trg) = data
        y_org = ops.cast(y_org, "int32")
        y_trg = ops.cast(y_trg, "int32")
        z1, z2 = self._latent_codes(ops.shape(x)[0]), self._latent_codes(ops.shape(x)[0])

        logs = {}
        logs.update(self._discriminator_step("latent", x, y_org, y_trg, z1))
        logs.update(self._discriminator_step("ref", x, y_org, y_trg, x_ref))

        with tf.GradientTape() as tape:
            g_loss, g_logs = self._generator_loss(tape, "latent", x, y_org, y_trg, z1, z2, semantic=True)
        self._apply(("generator", "mapping", "style_encoder", "head"), g_loss, tape)
        logs.update(g_logs)

        with tf.GradientTape() as tape:
            g_loss, g_logs = self._generator_loss(tape, "ref", x, y_org, y_trg, x_ref, x_ref2,
                                                  semantic=self.semantic_in_reference_step)
        self._apply(("generator",), g_loss, tape)
        logs.update(g_logs)

        update_moving_average(
            [(e, w) for source, target in ((self.generator, self.generator_ema), (self.mapping, self.mapping_ema),
                                           (self.style_encoder, self.style_encoder_ema))
             for e, w in zip(target.trainable_variables, source.trainable_variables)],
            self.ema_decay,
        )
        self.iterations.assign_add(1)
        logs["lambda_ds"] = ops.convert_to_tensor(self.lambda_ds)
        for name, tracker in self.trackers.items():
            tracker.update_state(logs[name])
        return self.step_outputs({name: tracker.result() for name, tracker in self.trackers.items()})

    def get_config(self):
        return {
            "latent_dim": self.latent_dim,
            "feature_layers": list(self.feature_layers),
            "lambda_adv": self.lambda_adv,
            "lambda_r1": self.lambda_r1,
            "lambda_style": self.lambda_style,
            "lambda_cycle": self.lambda_cycle,
            "cycle_input": self.cycle_input,
            "src_batch_reduction": self.src_batch_reduction,
            "semantic_in_reference_step": self.semantic_in_reference_step,
            "ema_decay": self.ema_decay,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "objective": self.objective.get_config(),
        }


__all__ = ["StarGAN2Trainer", "logged_names"]
