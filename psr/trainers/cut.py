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
from psr.losses.patch_semantic import PatchSemanticObjective
from psr.losses.regularizers import r1_penalty
from psr.registry import GAN_MODES, REDUCTIONS
from psr.trainers.base import AdversarialHeadTrainer
from psr.trainers.distribution import global_batch_mean, num_replicas

LOG_NAMES = ("d_loss", "d_real", "d_fake", "d_r1", "g_loss", "g_adv", "g_nce", "g_nce_idt", "g_src", "g_idt")


def translate_and_encode(generator, images, layer_ids):
    """`(G(x), G_enc(x))`, in one pass when the generator offers it (its encoder is its first layers)."""
    if hasattr(generator, "translate_and_encode"):
        return generator.translate_and_encode(images, layer_ids, training=True)
    return generator(images, training=True), generator.encode(images, layer_ids)


@keras.saving.register_keras_serializable(package="psr")
class CUTTrainer(AdversarialHeadTrainer):
    """Generator/discriminator/projection-head training with hDCE (or DCE / PatchNCE) and SRC.

    Args:
        generator: a `ResnetGenerator` (anything with `call(x)` and `encode(x, layer_ids)`).
        discriminator: image → real/fake scores (`[B, h, w, 1]` or `[B, 1]`).
        objective: the `PatchSemanticObjective` (sampler, head, contrastive loss, SRC, λs, layer reduction,
            minibatch negatives); its head is trained with the generator and checkpointed here.
        weight_temperature: the non-trainable variable Γ that the contrastive loss reads; kept here so
            checkpoints hold it.
        gamma_schedule: completed iterations → Γ (see `psr.schedules.StepSchedule`); None keeps Γ fixed.
        nce_layers: generator layer indices whose features are compared.
        gan_mode: "lsgan" (CUT) or "nonsaturating" (SinCUT).
        lambda_gan: weight of the generator's adversarial term.
        identity_branch: also translate y and apply the contrastive loss to (G(y), y) (`--dce_idt`).
        src_on_identity: supplement variant: SRC on the identity branch too (official: off).
        branch_reduction: "mean" of the X→Y and Y→Y terms (official ½(·+·)) or "sum" (supplement).
        lambda_identity: weight of the L1 identity term mean|G(y) − y| (SinCUT: 1; needs the identity branch).
        lambda_r1: weight of the R1 penalty on real images; L_D gets ½·λ_R1·mean_b Σ|∇D(y)|² (SinCUT: 1).
    """

    logged_terms = LOG_NAMES

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        objective: PatchSemanticObjective,
        weight_temperature: Optional[keras.Variable] = None,
        gamma_schedule=None,
        *,
        nce_layers: Sequence[int] = (0, 4, 8, 12, 16),
        gan_mode: str = "lsgan",
        lambda_gan: float = 1.0,
        identity_branch: bool = True,
        src_on_identity: bool = False,
        branch_reduction: str = "mean",
        lambda_identity: float = 0.0,
        lambda_r1: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value, valid in (("gan_mode", gan_mode, GAN_MODES), ("branch_reduction", branch_reduction, REDUCTIONS)):
            if value not in valid:
                raise ValueError(f"`{arg}` must be one of {valid}. Received: {arg}={value!r}")
        if not nce_layers:
            raise ValueError(f"`nce_layers` must not be empty. Received: nce_layers={nce_layers!r}")
        self.generator = generator
        self.discriminator = discriminator
        self.objective = objective
        # Tracked here (not through the objective) so checkpoints keep their layout.
        self.head = objective.head
        self.sampler = objective.sampler
        if weight_temperature is None:
            weight_temperature = keras.Variable(1.0, trainable=False, name="weight_temperature")
        self.weight_temperature = weight_temperature
        self.gamma_schedule = gamma_schedule
        self.nce_layers = tuple(int(i) for i in nce_layers)
        self.gan_mode = gan_mode
        self.lambda_gan = float(lambda_gan)
        self.identity_branch = bool(identity_branch)
        self.src_on_identity = bool(src_on_identity)
        self.branch_reduction = branch_reduction
        self.lambda_identity = float(lambda_identity)
        self.lambda_r1 = float(lambda_r1)
        if self.lambda_identity and not self.identity_branch:
            raise ValueError("`lambda_identity` needs `identity_branch=True`. Received: identity_branch=False")
        inactive = {
            "d_r1": not self.lambda_r1,
            "g_idt": not self.lambda_identity,
            "g_nce_idt": not self.identity_branch,
            "g_src": not objective.has_src,
        }
        # Only the terms this configuration computes are tracked (and shown in logs and TensorBoard).
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOG_NAMES if not inactive.get(name)}

    # === Set-up ===

    def build_all(self, image_size: int = 32, channels: int = 3) -> None:
        """Creates every variable (networks, head, optimiser slots) before `fit` or a restore.

        Building first means one trace of the train step and lets checkpoints restore the head.
        """
        x = ops.zeros((1, image_size, image_size, channels))
        features = self.generator.encode(x, self.nce_layers)
        self.objective.keys(features)
        self.discriminator(x)
        self(x)
        self.build_optimizer_slots(self.generator.trainable_variables)

    def call(self, images, training: bool = False):
        return self.generator(images, training=training)

    # === Trainer contract ===

    def inference_network(self) -> keras.Model:
        return self.generator

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
                keys, patch_ids = self.objective.keys(real_features)

            # 3. Discriminator update on the detached translation, before G's update.
            with tape.stop_recording():
                d_logs = self._discriminator_step(real_b, ops.stop_gradient(fake_b))

            # 4. Generator + head losses, with the updated D.
            g_adv_per_sample = generator_loss(self.discriminator(fake_b, training=True), self.gan_mode)
            g_adv = global_batch_mean(g_adv_per_sample)
            objective = self.objective
            queries = objective.queries(self.generator.encode(fake, self.nce_layers), patch_ids)
            keys_xy = [k[:batch] for k in keys]
            queries_xy = [q[:batch] for q in queries]
            nce_xy = objective.contrastive(keys_xy, queries_xy)
            src = objective.relation(keys_xy, queries_xy)
            if self.identity_branch:
                keys_yy = [k[batch:] for k in keys]
                queries_yy = [q[batch:] for q in queries]
                nce_yy = objective.contrastive(keys_yy, queries_yy)
                nce = nce_xy + nce_yy
                if self.src_on_identity:
                    src = src + objective.relation(keys_yy, queries_yy)
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
        replicas = num_replicas()
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
        return self.step_outputs({name: tracker.result() for name, tracker in self.trackers.items()})

    def get_config(self):
        # Networks and losses are passed in built; the trainer is rebuilt from an experiment config,
        # so only its own scalar arguments are listed.
        return {
            "nce_layers": list(self.nce_layers),
            "gan_mode": self.gan_mode,
            "lambda_gan": self.lambda_gan,
            "identity_branch": self.identity_branch,
            "src_on_identity": self.src_on_identity,
            "branch_reduction": self.branch_reduction,
            "lambda_identity": self.lambda_identity,
            "lambda_r1": self.lambda_r1,
            "objective": self.objective.get_config(),
        }
