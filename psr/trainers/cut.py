"""CUT-style trainer with the hDCE and SRC losses (single-modal translation).

`CUTTrainer` is a `keras.Model` that receives built networks and losses and
implements one training iteration of the official code (spec §2):

1. translate x (and y, for the identity branch) with G; the same pass gives
   the real images' encoder features;
2. keys: projected patches of those features (no gradient);
3. update D on the detached translation;
4. update G and the projection head together, using the already updated D.

Everything runs inside one compiled `train_step`; values that change during
training (Γ of the hard-negative weights, learning rates) are variables, so
changing them never retraces.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf
from keras import ops

from psr.losses.adversarial import discriminator_loss, generator_loss
from psr.losses.regularizers import r1_penalty

LOG_NAMES = ("d_loss", "d_real", "d_fake", "d_r1", "g_loss", "g_adv", "g_nce", "g_nce_idt", "g_src", "g_idt")


def global_batch_mean(per_sample):
    """Mean over the *global* batch: right under `tf.distribute`, where optimizers sum replica gradients."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    per_sample = ops.cast(per_sample, "float32")
    return ops.sum(per_sample) / ops.cast(ops.shape(per_sample)[0] * replicas, "float32")


def translate_and_encode(generator, images, layer_ids):
    """`(G(x), G_enc(x))`, in one pass when the generator offers it (its encoder is its first layers)."""
    if hasattr(generator, "translate_and_encode"):
        return generator.translate_and_encode(images, layer_ids, training=True)
    return generator(images, training=True), generator.encode(images, layer_ids)


def combine_layers(values: Sequence, reduction: str):
    """Official code averages the per-layer terms (×1/L); the supplement sums them."""
    total = ops.sum(ops.stack(values))
    return total / len(values) if reduction == "mean" else total


@keras.saving.register_keras_serializable(package="psr")
class CUTTrainer(keras.Model):
    """Generator/discriminator/projection-head training with hDCE (or DCE / PatchNCE) and SRC.

    Args:
        generator: a `ResnetGenerator` (anything with `call(x)` and `encode(x, layer_ids)`).
        discriminator: image → real/fake scores (`[B, h, w, 1]` or `[B, 1]`).
        head: projection head, `head(features, patch_ids) -> list of [B, N, C]` unit vectors.
        sampler: `sampler(features) -> list of patch ids`, one set per layer and step.
        contrastive_loss: `keras.losses.Loss` called as `loss(keys, queries)` (`HardDCELoss`, ...).
        src_loss: `SemanticRelationLoss` or None (no SRC term).
        weight_temperature: the non-trainable variable Γ that `contrastive_loss` reads (a callback
            drives it); kept here so checkpoints hold it.
        nce_layers: generator layer indices whose features are compared.
        gan_mode: "lsgan" (CUT) or "nonsaturating" (SinCUT).
        lambda_gan, lambda_contrastive, lambda_src: loss weights.
        identity_branch: also translate y and apply the contrastive loss to (G(y), y) (`--dce_idt`).
        src_on_identity: supplement variant: SRC on the identity branch too (official: off).
        layer_reduction: "mean" over layers (official) or "sum" (supplement).
        branch_reduction: "mean" of the X→Y and Y→Y terms (official ½(·+·)) or "sum" (supplement).
        lambda_identity: weight of the L1 identity term mean|G(y) − y| (SinCUT: 1; needs the identity branch).
        lambda_r1: weight of the R1 penalty on real images; L_D gets ½·λ_R1·mean_b Σ|∇D(y)|² (SinCUT: 1).
        negatives_from_minibatch: treat the patches of all images as one set ([1, B·N, C]; SinCUT) instead
            of per-image sets.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        head: keras.layers.Layer,
        sampler: keras.layers.Layer,
        contrastive_loss: keras.losses.Loss,
        src_loss: Optional[keras.losses.Loss],
        weight_temperature: Optional[keras.Variable] = None,
        *,
        nce_layers: Sequence[int] = (0, 4, 8, 12, 16),
        gan_mode: str = "lsgan",
        lambda_gan: float = 1.0,
        lambda_contrastive: float = 0.1,
        lambda_src: float = 0.05,
        identity_branch: bool = True,
        src_on_identity: bool = False,
        layer_reduction: str = "mean",
        branch_reduction: str = "mean",
        lambda_identity: float = 0.0,
        lambda_r1: float = 0.0,
        negatives_from_minibatch: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value, valid in (
            ("gan_mode", gan_mode, ("lsgan", "nonsaturating")),
            ("layer_reduction", layer_reduction, ("mean", "sum")),
            ("branch_reduction", branch_reduction, ("mean", "sum")),
        ):
            if value not in valid:
                raise ValueError(f"`{arg}` must be one of {valid}. Received: {arg}={value!r}")
        if not nce_layers:
            raise ValueError(f"`nce_layers` must not be empty. Received: nce_layers={nce_layers!r}")
        self.generator = generator
        self.discriminator = discriminator
        self.head = head
        self.sampler = sampler
        self.contrastive_loss = contrastive_loss
        self.src_loss = src_loss
        if weight_temperature is None:
            weight_temperature = keras.Variable(1.0, trainable=False, name="weight_temperature")
        self.weight_temperature = weight_temperature
        self.nce_layers = tuple(int(i) for i in nce_layers)
        self.gan_mode = gan_mode
        self.lambda_gan = float(lambda_gan)
        self.lambda_contrastive = float(lambda_contrastive)
        self.lambda_src = float(lambda_src)
        self.identity_branch = bool(identity_branch)
        self.src_on_identity = bool(src_on_identity)
        self.layer_reduction = layer_reduction
        self.branch_reduction = branch_reduction
        self.lambda_identity = float(lambda_identity)
        self.lambda_r1 = float(lambda_r1)
        self.negatives_from_minibatch = bool(negatives_from_minibatch)
        if self.lambda_identity and not self.identity_branch:
            raise ValueError("`lambda_identity` needs `identity_branch=True`. Received: identity_branch=False")
        inactive = {
            "d_r1": not self.lambda_r1,
            "g_idt": not self.lambda_identity,
            "g_nce_idt": not self.identity_branch,
            "g_src": src_loss is None,
        }
        # Only the terms this configuration computes are tracked (and shown in logs and TensorBoard).
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOG_NAMES if not inactive.get(name)}

    # === Set-up ===

    def compile(self, g_optimizer, d_optimizer, head_optimizer, jit_compile: bool = False, **kwargs):
        """Wires the three Adam optimisers (G, D, head; spec §2)."""
        super().compile(optimizer=None, jit_compile=jit_compile, **kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.head_optimizer = head_optimizer

    def build_all(self, image_size: int = 32, channels: int = 3) -> None:
        """Creates every variable (networks, head, optimiser slots) before `fit` or a restore.

        Building first means one trace of the train step and lets checkpoints restore the head.
        """
        x = ops.zeros((1, image_size, image_size, channels))
        features = self.generator.encode(x, self.nce_layers)
        self.head(features, self.sampler(features))
        self.discriminator(x)
        self(x)
        if getattr(self, "g_optimizer", None) is not None:
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.head_optimizer.build(self.head.trainable_variables)

    def call(self, images, training: bool = False):
        return self.generator(images, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # === Loss pieces ===

    def _patch_sets(self, embeddings):
        """[B, N, C] per-image sets, or one [1, B·N, C] set when negatives come from the whole minibatch."""
        if not self.negatives_from_minibatch:
            return embeddings
        return ops.reshape(embeddings, (1, -1, ops.shape(embeddings)[-1]))

    def _layer_losses(self, loss, weight: float, keys: Sequence, queries: Sequence):
        terms = [weight * loss(self._patch_sets(k), self._patch_sets(q)) for k, q in zip(keys, queries)]
        return combine_layers(terms, self.layer_reduction)

    def _contrastive(self, keys: Sequence, queries: Sequence):
        return self._layer_losses(self.contrastive_loss, self.lambda_contrastive, keys, queries)

    def _src(self, keys: Sequence, queries: Sequence):
        return self._layer_losses(self.src_loss, self.lambda_src, keys, queries)

    def _discriminator_step(self, real_b, fake_b):
        """L_D = ½ (L_real + L_fake) [+ ½·λ_R1·R1] on the detached translation (spec §2, §4.7); applies D's update."""
        with tf.GradientTape() as tape:
            if self.lambda_r1:
                r1, real_scores = r1_penalty(self.discriminator, real_b)
            else:
                r1, real_scores = ops.zeros((ops.shape(real_b)[0],)), self.discriminator(real_b, training=True)
            fake_scores = self.discriminator(fake_b, training=True)
            loss_real, loss_fake = discriminator_loss(real_scores, fake_scores, self.gan_mode)
            d_loss = 0.5 * (global_batch_mean(loss_real) + global_batch_mean(loss_fake))
            if self.lambda_r1:
                d_loss += 0.5 * self.lambda_r1 * global_batch_mean(r1)
        variables = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, variables), variables))
        d_r1 = 0.5 * self.lambda_r1 * ops.mean(ops.cast(r1, "float32"))
        return {
            "d_loss": 0.5 * (ops.mean(loss_real) + ops.mean(loss_fake)) + d_r1,
            "d_real": ops.mean(loss_real),
            "d_fake": ops.mean(loss_fake),
            "d_r1": d_r1,
        }

    # === Training step ===

    def train_step(self, data):
        real_a, real_b = data
        batch = ops.shape(real_a)[0]
        real = ops.concatenate([real_a, real_b], axis=0) if self.identity_branch else real_a

        with tf.GradientTape() as tape:
            # 1. Translate x (and y for the identity branch) in one batch. The same pass yields the
            #    real images' encoder features, the contrastive keys (the encoder is G's first layers).
            fake, real_features = translate_and_encode(self.generator, real, self.nce_layers)
            fake = ops.cast(fake, "float32")
            fake_b = fake[:batch]

            # 2. Keys never carry gradient (spec §7.9). Patch ids are drawn once per step and shared by
            #    the four feature sets (x, G(x), y, G(y)).
            with tape.stop_recording():
                real_features = [ops.stop_gradient(f) for f in real_features]
                patch_ids = self.sampler(real_features)
                keys = [ops.stop_gradient(k) for k in self.head(real_features, patch_ids)]

            # 3. Discriminator update on the detached translation, before G's update.
            with tape.stop_recording():
                d_logs = self._discriminator_step(real_b, ops.stop_gradient(fake_b))

            # 4. Generator + head losses, with the updated D.
            g_adv_per_sample = generator_loss(self.discriminator(fake_b, training=True), self.gan_mode)
            g_adv = global_batch_mean(g_adv_per_sample)
            queries = self.head(self.generator.encode(fake, self.nce_layers), patch_ids)
            keys_xy = [k[:batch] for k in keys]
            queries_xy = [q[:batch] for q in queries]
            nce_xy = self._contrastive(keys_xy, queries_xy)
            src = self._src(keys_xy, queries_xy) if self.src_loss is not None else ops.zeros(())
            if self.identity_branch:
                keys_yy = [k[batch:] for k in keys]
                queries_yy = [q[batch:] for q in queries]
                nce_yy = self._contrastive(keys_yy, queries_yy)
                nce = nce_xy + nce_yy
                if self.src_on_identity and self.src_loss is not None:
                    src = src + self._src(keys_yy, queries_yy)
                if self.branch_reduction == "mean":
                    nce = 0.5 * nce
            else:
                nce_yy = ops.zeros(())
                nce = nce_xy
            if self.lambda_identity:
                # SinCUT's L1 identity term λ_idt · mean|G(y) − y| (spec §4.7).
                idt_per_sample = ops.mean(ops.abs(fake[batch:] - ops.cast(real_b, "float32")), axis=(1, 2, 3))
            else:
                idt_per_sample = ops.zeros((batch,))
            g_idt = self.lambda_identity * global_batch_mean(idt_per_sample)
            g_loss = self.lambda_gan * g_adv + nce + src + g_idt

        g_vars = self.generator.trainable_variables
        h_vars = self.head.trainable_variables
        grads = tape.gradient(g_loss, g_vars + h_vars)
        self.g_optimizer.apply_gradients(zip(grads[: len(g_vars)], g_vars))
        self.head_optimizer.apply_gradients(zip(grads[len(g_vars) :], h_vars))

        # Keras Loss objects already divide by the replica count; report per-replica means.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        logs = dict(d_logs)
        logs.update(
            g_adv=ops.mean(g_adv_per_sample),
            g_nce=nce_xy * replicas,
            g_nce_idt=nce_yy * replicas,
            g_src=src * replicas,
            g_idt=self.lambda_identity * ops.mean(idt_per_sample),
        )
        logs["g_loss"] = self.lambda_gan * logs["g_adv"] + (nce + src) * replicas + logs["g_idt"]
        for name, tracker in self.trackers.items():
            tracker.update_state(logs[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def get_config(self):
        # Networks and losses are passed in built; the trainer is rebuilt from an experiment config,
        # so only its own scalar arguments are listed.
        return {
            "nce_layers": list(self.nce_layers),
            "gan_mode": self.gan_mode,
            "lambda_gan": self.lambda_gan,
            "lambda_contrastive": self.lambda_contrastive,
            "lambda_src": self.lambda_src,
            "identity_branch": self.identity_branch,
            "src_on_identity": self.src_on_identity,
            "layer_reduction": self.layer_reduction,
            "branch_reduction": self.branch_reduction,
            "lambda_identity": self.lambda_identity,
            "lambda_r1": self.lambda_r1,
            "negatives_from_minibatch": self.negatives_from_minibatch,
        }
