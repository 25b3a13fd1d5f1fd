"""Builders: typed config sections → built Keras objects.

Each builder takes only the section it needs (never the whole experiment), so
the same pieces serve the single-modal trainer and the later applications.
"""

from __future__ import annotations

from typing import Optional

import keras

from psr.config import (
    CurriculumConfig,
    DiscriminatorConfig,
    ExperimentConfig,
    GeneratorConfig,
    HeadConfig,
    LossConfig,
    TrainConfig,
)
from psr.errors import ConfigError
from psr.losses.contrastive import DCELoss, HardDCELoss, PatchNCELoss
from psr.losses.semantic_relation import SemanticRelationLoss
from psr.models.layers import PatchSampler
from psr.models.patchgan import PatchGANDiscriminator
from psr.models.projection_head import PatchMLPHead
from psr.models.resnet_generator import ResnetGenerator
from psr.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from psr.schedules import GammaCurriculum, LinearDecay
from psr.trainers.cut import CUTTrainer


def build_generator(cfg: GeneratorConfig, channels: int = 3, crop_size: int = 256) -> keras.Model:
    """ResNet generator (CUT) or StyleGAN2-style generator (SinCUT; its channel table depends on the crop)."""
    if cfg.architecture == "stylegan2":
        return StyleGAN2Generator(
            input_channels=channels,
            output_channels=channels,
            filters=cfg.filters,
            num_downsampling=cfg.num_downsampling,
            num_blocks=cfg.num_blocks,
            crop_size=crop_size,
        )
    return ResnetGenerator(
        input_channels=channels,
        output_channels=channels,
        filters=cfg.filters,
        num_blocks=cfg.num_blocks,
        antialias=cfg.antialias,
        antialias_up=cfg.antialias_up,
        fused=cfg.fused,
    )


def build_discriminator(cfg: DiscriminatorConfig, channels: int = 3, crop_size: int = 256) -> keras.Model:
    if cfg.architecture == "stylegan2":
        return StyleGAN2Discriminator(input_channels=channels, filters=cfg.filters, crop_size=crop_size)
    return PatchGANDiscriminator(
        input_channels=channels, filters=cfg.filters, num_layers=cfg.num_layers, antialias=cfg.antialias,
        fused=cfg.fused,
    )


def build_head(cfg: HeadConfig, generator: keras.Model) -> PatchMLPHead:
    try:
        channels = generator.feature_channels(cfg.layers)
    except ValueError as err:
        # A layer index the configured generator does not have is a configuration mistake.
        raise ConfigError(f"model.head.layers {list(cfg.layers)} does not fit this generator: {err}") from None
    return PatchMLPHead(input_channels=channels, units=cfg.units, use_mlp=cfg.use_mlp)


def build_curriculum(cfg: CurriculumConfig, total_epochs: int) -> GammaCurriculum:
    return GammaCurriculum(
        start=cfg.start,
        end=cfg.end,
        total_epochs=total_epochs,
        step_epoch=cfg.step_epoch,
        step_value=cfg.step_value,
        mode=cfg.mode,
    )


def build_contrastive_loss(cfg: LossConfig, weight_temperature: keras.Variable) -> keras.losses.Loss:
    if cfg.contrastive == "hdce":
        return HardDCELoss(
            temperature=cfg.temperature,
            weight_temperature=weight_temperature,
            reported_value=cfg.reported_value,
        )
    if cfg.contrastive == "dce":
        return DCELoss(temperature=cfg.temperature, reported_value=cfg.reported_value)
    return PatchNCELoss(temperature=cfg.temperature)


def build_src_loss(cfg: LossConfig) -> Optional[SemanticRelationLoss]:
    if cfg.lambda_src == 0:
        return None
    return SemanticRelationLoss(divergence=cfg.src_divergence)


def build_optimizers(cfg: TrainConfig, steps_per_epoch: int) -> tuple:
    """Three Adam optimisers (G, D, head) sharing one linear-decay schedule (spec §5)."""

    def adam(name: str) -> keras.optimizers.Adam:
        schedule = LinearDecay(
            initial_learning_rate=cfg.learning_rate,
            n_epochs=cfg.epochs,
            n_epochs_decay=cfg.decay_epochs,
            steps_per_epoch=steps_per_epoch,
        )
        return keras.optimizers.Adam(
            learning_rate=schedule, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, name=name
        )

    return adam("g_optimizer"), adam("d_optimizer"), adam("head_optimizer")


def build_cut_trainer(cfg: ExperimentConfig, steps_per_epoch: int, seed: Optional[int] = None) -> CUTTrainer:
    """The full single-modal trainer, compiled and with every variable created."""
    crop = cfg.data.crop_size
    generator = build_generator(cfg.model.generator, crop_size=crop)
    curriculum = build_curriculum(cfg.loss.curriculum, cfg.train.total_epochs)
    weight_temperature = keras.Variable(
        float(curriculum(1)), trainable=False, dtype="float32", name="weight_temperature"
    )
    trainer = CUTTrainer(
        generator=generator,
        discriminator=build_discriminator(cfg.model.discriminator, crop_size=crop),
        head=build_head(cfg.model.head, generator),
        sampler=PatchSampler(num_patches=cfg.model.head.num_patches, seed=seed),
        contrastive_loss=build_contrastive_loss(cfg.loss, weight_temperature),
        src_loss=build_src_loss(cfg.loss),
        weight_temperature=weight_temperature,
        nce_layers=cfg.model.head.layers,
        gan_mode=cfg.loss.gan_mode,
        lambda_gan=cfg.loss.lambda_gan,
        lambda_contrastive=cfg.loss.lambda_contrastive,
        lambda_src=cfg.loss.lambda_src,
        identity_branch=cfg.loss.identity_branch,
        src_on_identity=cfg.loss.src_on_identity,
        layer_reduction=cfg.loss.layer_reduction,
        branch_reduction=cfg.loss.branch_reduction,
        lambda_identity=cfg.loss.lambda_identity,
        lambda_r1=cfg.loss.lambda_r1,
        negatives_from_minibatch=cfg.loss.negatives_from_minibatch,
    )
    g_opt, d_opt, h_opt = build_optimizers(cfg.train, steps_per_epoch)
    trainer.compile(g_opt, d_opt, h_opt, jit_compile=cfg.train.jit_compile)
    # The StyleGAN2 discriminator only takes crop-sized images; the ResNet nets build on a small image.
    trainer.build_all(image_size=crop if cfg.model.discriminator.architecture == "stylegan2" else min(crop, 64))
    return trainer
