"""Stage 1 of GAN compression: a once-for-all student distilled from a frozen teacher (spec compression §4–§5).

`CompressionTrainer` is a `keras.Model` whose `train_step` is one iteration of the released
`train_supernet.py` with the hDCE/SRC knowledge transfer:

1. draw one channel configuration c of the super student (a function of the iteration, so every
   replica and every resumed run draws the same one) and run the student at c by channel masks;
2. run the frozen teacher without gradient: T(x) and its four distilled maps T_l;
3. L_D = ½[ℓ(D(sg(S(x))), fake) + ℓ(D(y), real)] (D conditional on x for paired data);
4. L_G = λ_gan·ℓ_G(D(S(x))) + λ_recon·|S(x) − target|₁ + λ_distill·Σ_l mse(f_l(S_l), T_l)
   + Σ_l [λ_hDCE·hDCE + λ_SRC·SRC](keys = F(T_l) detached, queries = F(S_l)), with the
   current (not yet updated) D;
5. apply the three Adam updates (D; student + adaptors; heads) after both gradients exist.

The shared head F takes the teacher's and the student's maps at one input width; the masked
student map is zero beyond its R = 4·c2 active channels, so a full-width Dense on it equals the
code's elastic head that uses only the first R input columns (spec §3.6), and the same holds for
the 1×1 adaptors f_l (§3.5). Γ of the hard-negative weights is a variable set per epoch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from psr.losses.adversarial import discriminator_loss, generator_loss
from psr.losses.patch_semantic import PatchSemanticObjective
from psr.models.distillation import DistillationAdaptors, pad_channels
from psr.models.mobile_resnet import ChannelConfigSampler, SuperMobileResnetGenerator
from psr.models.profile import CONFIG_LENGTH
from psr.registry import GAN_MODES
from psr.trainers.base import AdversarialHeadTrainer
from psr.trainers.distribution import global_batch_mean, num_replicas

LOG_NAMES = ("d_loss", "d_real", "d_fake", "g_loss", "g_gan", "g_recon", "g_distill", "g_nce", "g_src")


@keras.saving.register_keras_serializable(package="psr")
class CompressionTrainer(AdversarialHeadTrainer):
    """Distils a `SuperMobileResnetGenerator` from a frozen ResNet teacher (stage 1, or a fine-tune at one config).

    Args:
        teacher: `ResnetGenerator` with `translate_and_encode(x, layer_ids)`; frozen here.
        student: the super student.
        discriminator: image (or concat(x, image) when `conditional`) → scores.
        objective: `PatchSemanticObjective` (sampler, contrastive loss, SRC, λs, layer reduction); its head is
            the student head F (shared with the teacher unless `teacher_head` is given).
        adaptors: `DistillationAdaptors`.
        teacher_layers: teacher list indices of the four distilled maps.
        config_sampler: `ChannelConfigSampler` of the training configs; None with `fixed_config`.
        fixed_config: train only this configuration (fine-tune, spec §5.4).
        teacher_head: the separate teacher head F_t of the Table 6 ablation (never trained: the key side is
            detached, as in the code).
        weight_temperature: the variable Γ read by the hard-negative weights.
        gamma_schedule: completed iterations → Γ (per epoch).
        gan_mode: lsgan (h2z) or hinge (pix2pix tasks); nonsaturating also works.
        conditional: D sees concat(x, image) (paired data).
        recon_target: "teacher" (|S(x) − T(x)|) or "ground_truth" (|S(x) − y|).
        lambda_gan, lambda_recon, lambda_distill: loss weights (λ_hDCE, λ_SRC live in the objective).
        seed: seed of the per-iteration config draws.
    """

    logged_terms = LOG_NAMES

    def __init__(
        self,
        teacher: keras.Model,
        student: SuperMobileResnetGenerator,
        discriminator: keras.Model,
        objective: PatchSemanticObjective,
        adaptors: DistillationAdaptors,
        teacher_layers: Sequence[int],
        config_sampler: Optional[ChannelConfigSampler] = None,
        fixed_config: Optional[Sequence[int]] = None,
        teacher_head: Optional[keras.layers.Layer] = None,
        weight_temperature: Optional[keras.Variable] = None,
        gamma_schedule=None,
        *,
        gan_mode: str = "lsgan",
        conditional: bool = False,
        recon_target: str = "teacher",
        lambda_gan: float = 1.0,
        lambda_recon: float = 10.0,
        lambda_distill: float = 0.01,
        seed: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if gan_mode not in GAN_MODES:
            raise ValueError(f"`gan_mode` must be one of {GAN_MODES}. Received: gan_mode={gan_mode!r}")
        if recon_target not in ("teacher", "ground_truth"):
            raise ValueError(f"`recon_target` must be 'teacher' or 'ground_truth'. Received: {recon_target!r}")
        if (config_sampler is None) == (fixed_config is None):
            raise ValueError("Pass exactly one of `config_sampler` (stage 1) and `fixed_config` (fine-tune).")
        if len(teacher_layers) != 4:
            raise ValueError(f"`teacher_layers` must name 4 maps. Received: teacher_layers={list(teacher_layers)}")
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.discriminator = discriminator
        self.objective = objective
        self.head = objective.head  # the student head (shared with the teacher by default); checkpointed
        self.teacher_head = teacher_head
        self.sampler = objective.sampler
        self.adaptors = adaptors
        self.teacher_layers = tuple(int(i) for i in teacher_layers)
        self.config_sampler = config_sampler
        self.fixed_config = None if fixed_config is None else tuple(student.check_config(fixed_config))
        if weight_temperature is None:
            weight_temperature = keras.Variable(1.0, trainable=False, name="weight_temperature")
        self.weight_temperature = weight_temperature
        self.gamma_schedule = gamma_schedule
        self.gan_mode = gan_mode
        self.conditional = bool(conditional)
        self.recon_target = recon_target
        self.lambda_gan = float(lambda_gan)
        self.lambda_recon = float(lambda_recon)
        self.lambda_distill = float(lambda_distill)
        self.seed = 0 if seed is None else int(seed)
        self.head_channels = int(self.head.input_channels[0])
        inactive = {"g_src": not objective.has_src, "g_distill": not self.lambda_distill,
                    "g_recon": not self.lambda_recon}
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOG_NAMES if not inactive.get(name)}

    # === Set-up ===

    @property
    def generator_variables(self) -> list:
        return self.student.trainable_variables + self.adaptors.trainable_variables

    def build_all(self, image_size: int = 32, channels: int = 3) -> None:
        x = ops.zeros((1, image_size, image_size, channels))
        _, teacher_maps = self.teacher.translate_and_encode(x, self.teacher_layers)
        image, student_maps = self.student.translate_and_features(x)
        self.adaptors(student_maps)
        keys, ids = self._embed_keys(teacher_maps)
        self._embed_queries(student_maps, ids)
        self.discriminator(self._judged(x, image))
        self(x)  # marks the trainer built (its variables all exist now)
        self.build_optimizer_slots(self.generator_variables)

    def call(self, images, training: bool = False):
        return self.student(images, training=training)

    # === Trainer contract ===

    def inference_network(self) -> keras.Model:
        return self.student

    def sample_grid(self, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Rows of input | teacher | widest student | narrowest student | target sample."""
        teacher = ops.convert_to_numpy(self.teacher(sources, training=False))
        columns = [sources, teacher]
        for config in self.grid_configs():
            columns.append(ops.convert_to_numpy(self.student.translate_and_features(
                sources, config=ops.convert_to_tensor(np.asarray(config, "int32")))[0]))
        columns.append(targets)
        rows = [np.concatenate(list(cols), axis=1) for cols in zip(*columns)]
        return np.concatenate(rows, axis=0)

    def evaluated_configs(self) -> list[tuple[str, tuple[int, ...]]]:
        """`(label, config)` of the sub-networks periodic evaluation scores: widest first (spec §5.3)."""
        configs = self.grid_configs()
        return list(zip(("widest", "smallest")[: len(configs)], configs))

    def grid_configs(self) -> list[tuple[int, ...]]:
        """The configurations shown and evaluated during training: the widest and the narrowest (spec §5.3)."""
        if self.fixed_config is not None:
            return [self.fixed_config]
        return [self.config_sampler.largest, self.config_sampler.smallest]

    # === Pieces of the step ===

    def draw_config(self):
        """The iteration's channel configuration: a stateless draw keyed on (seed, completed iterations)."""
        if self.fixed_config is not None:
            return ops.convert_to_tensor(np.asarray(self.fixed_config, "int32"))
        step = ops.cast(self.step_counter, "int32")
        uniform = tf.random.stateless_uniform((CONFIG_LENGTH,), seed=tf.stack([tf.constant(self.seed), step]))
        return self.config_sampler.config_from_uniform(uniform)

    def _judged(self, inputs, images):
        return ops.concatenate([ops.cast(inputs, images.dtype), images], axis=-1) if self.conditional else images

    def _embed_keys(self, teacher_maps):
        """Patch ids drawn once per step on the teacher maps, and the detached teacher embeddings there."""
        maps = [ops.stop_gradient(pad_channels(f, self.head_channels)) for f in teacher_maps]
        ids = self.sampler(maps)
        head = self.teacher_head if self.teacher_head is not None else self.head
        return [ops.stop_gradient(k) for k in head(maps, ids)], ids

    def _embed_queries(self, student_maps, ids):
        return self.head([pad_channels(f, self.head_channels) for f in student_maps], ids)

    def distillation(self, student_maps, teacher_maps):
        """Per sample Σ_l mean over (H, W, C) of (f_l(S_l) − T_l)² (PyTorch `mse_loss` per layer, spec §4.3)."""
        total = 0.0
        for mapped, target in zip(self.adaptors(student_maps), teacher_maps):
            diff = ops.cast(mapped, "float32") - ops.cast(target, "float32")
            total = total + ops.mean(ops.square(diff), axis=(1, 2, 3))
        return total

    # === Training step ===

    def train_step(self, data):
        real_a, real_b = data
        config = self.draw_config()
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            # Teacher: frozen, no gradient (its activations are constants of the step).
            with g_tape.stop_recording(), d_tape.stop_recording():
                teacher_image, teacher_maps = self.teacher.translate_and_encode(real_a, self.teacher_layers)
                teacher_image = ops.stop_gradient(ops.cast(teacher_image, "float32"))
                teacher_maps = [ops.stop_gradient(f) for f in teacher_maps]
                keys, ids = self._embed_keys(teacher_maps)
            fake, student_maps = self.student.translate_and_features(real_a, config=config)
            fake = ops.cast(fake, "float32")

            # D on the detached student output and the real target (spec §4.1).
            real_scores = self.discriminator(self._judged(real_a, ops.cast(real_b, "float32")), training=True)
            fake_scores = self.discriminator(self._judged(real_a, ops.stop_gradient(fake)), training=True)
            loss_real, loss_fake = discriminator_loss(real_scores, fake_scores, self.gan_mode)
            d_loss = 0.5 * (global_batch_mean(loss_real) + global_batch_mean(loss_fake))

            # G with the current D (gradients of both are taken before any update, spec §5.1).
            gan = generator_loss(self.discriminator(self._judged(real_a, fake), training=True), self.gan_mode)
            target = teacher_image if self.recon_target == "teacher" else ops.cast(real_b, "float32")
            recon = ops.mean(ops.abs(fake - target), axis=(1, 2, 3))
            distill = self.distillation(student_maps, teacher_maps) if self.lambda_distill else ops.zeros_like(recon)
            queries = self._embed_queries(student_maps, ids)
            nce = self.objective.contrastive(keys, queries)
            src = self.objective.relation(keys, queries)
            g_loss = (self.lambda_gan * global_batch_mean(gan) + self.lambda_recon * global_batch_mean(recon)
                      + self.lambda_distill * global_batch_mean(distill) + nce + src)

        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator_variables
        h_vars = self.head.trainable_variables
        d_grads = d_tape.gradient(d_loss, d_vars)
        grads = g_tape.gradient(g_loss, g_vars + h_vars)
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        self.g_optimizer.apply_gradients(zip(grads[: len(g_vars)], g_vars))
        self.head_optimizer.apply_gradients(zip(grads[len(g_vars):], h_vars))

        replicas = num_replicas()
        logs = {
            "d_loss": 0.5 * (ops.mean(loss_real) + ops.mean(loss_fake)),
            "d_real": ops.mean(loss_real),
            "d_fake": ops.mean(loss_fake),
            "g_gan": ops.mean(gan),
            "g_recon": self.lambda_recon * ops.mean(recon),
            "g_distill": self.lambda_distill * ops.mean(distill),
            "g_nce": nce * replicas,
            "g_src": src * replicas,
        }
        logs["g_loss"] = (self.lambda_gan * logs["g_gan"] + logs["g_recon"] + logs["g_distill"]
                          + logs["g_nce"] + logs["g_src"])
        for name, tracker in self.trackers.items():
            tracker.update_state(logs[name])
        return self.step_outputs({name: tracker.result() for name, tracker in self.trackers.items()})

    def get_config(self):
        return {
            "teacher_layers": list(self.teacher_layers),
            "fixed_config": None if self.fixed_config is None else list(self.fixed_config),
            "gan_mode": self.gan_mode,
            "conditional": self.conditional,
            "recon_target": self.recon_target,
            "lambda_gan": self.lambda_gan,
            "lambda_recon": self.lambda_recon,
            "lambda_distill": self.lambda_distill,
            "seed": self.seed,
            "objective": self.objective.get_config(),
        }


__all__ = ["CompressionTrainer"]
