"""Builders: typed config sections → built Keras objects.

Each builder takes only the sections it needs (never the whole experiment), so
the same pieces serve every method. Architecture and loss choices are looked up
in the tables of `psr.registry` (name → builder below), not chosen by if-chains.
"""

from __future__ import annotations

from typing import Optional

import keras

from psr.config import (
    CompressionLossConfig,
    CompressionModelConfig,
    CurriculumConfig,
    DiscriminatorConfig,
    GeneratorConfig,
    HeadConfig,
    LossConfig,
    ModelConfig,
    MultimodalLossConfig,
    MultimodalModelConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
)
from psr.errors import ConfigError
from psr.losses.contrastive import DCELoss, HardDCELoss, PatchNCELoss
from psr.losses.patch_semantic import PatchSemanticObjective
from psr.losses.semantic_relation import SemanticRelationLoss
from psr.methods import TrainerInputs
from psr.models.fused import resolve_fused
from psr.models.layers import PatchSampler
from psr.models.patchgan import PatchGANDiscriminator
from psr.models.projection_head import PatchMLPHead
from psr.models.resnet_generator import ResnetGenerator
from psr.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from psr.registry import CONTRASTIVE_LOSSES, DISCRIMINATORS, GENERATORS
from psr.schedules import GammaCurriculum, LinearDecay, StepSchedule
from psr.trainers.cut import CUTTrainer

# === Networks (entries of psr.registry.GENERATORS / DISCRIMINATORS) ===


def resnet_generator(cfg: GeneratorConfig, channels: int, crop_size: int) -> keras.Model:
    return ResnetGenerator(
        input_channels=channels, output_channels=channels, filters=cfg.filters, num_blocks=cfg.num_blocks,
        antialias=cfg.antialias, antialias_up=cfg.antialias_up, fused=resolve_fused(cfg.fused),
    )


def stylegan2_generator(cfg: GeneratorConfig, channels: int, crop_size: int) -> keras.Model:
    # Its channel table depends on the training crop.
    return StyleGAN2Generator(
        input_channels=channels, output_channels=channels, filters=cfg.filters,
        num_downsampling=cfg.num_downsampling, num_blocks=cfg.num_blocks, crop_size=crop_size,
    )


def patchgan_discriminator(cfg: DiscriminatorConfig, channels: int, crop_size: int) -> keras.Model:
    return PatchGANDiscriminator(
        input_channels=channels, filters=cfg.filters, num_layers=cfg.num_layers, antialias=cfg.antialias,
        fused=resolve_fused(cfg.fused),
    )


def stylegan2_discriminator(cfg: DiscriminatorConfig, channels: int, crop_size: int) -> keras.Model:
    return StyleGAN2Discriminator(input_channels=channels, filters=cfg.filters, crop_size=crop_size)


def build_generator(cfg: GeneratorConfig, channels: int = 3, crop_size: int = 256) -> keras.Model:
    return GENERATORS.get(cfg.architecture)(cfg, channels, crop_size)


def build_discriminator(cfg: DiscriminatorConfig, channels: int = 3, crop_size: int = 256) -> keras.Model:
    return DISCRIMINATORS.get(cfg.architecture)(cfg, channels, crop_size)


def build_head(cfg: HeadConfig, generator: keras.Model) -> PatchMLPHead:
    try:
        channels = generator.feature_channels(cfg.layers)
    except ValueError as err:
        # A layer index the configured generator does not have is a configuration mistake.
        raise ConfigError(f"model.head.layers {list(cfg.layers)} does not fit this generator: {err}") from None
    return PatchMLPHead(input_channels=channels, units=cfg.units, use_mlp=cfg.use_mlp)


# === Losses (entries of psr.registry.CONTRASTIVE_LOSSES) ===


def hard_dce_loss(cfg: LossConfig, weight_temperature: keras.Variable) -> keras.losses.Loss:
    return HardDCELoss(
        temperature=cfg.temperature, weight_temperature=weight_temperature, reported_value=cfg.reported_value
    )


def dce_loss(cfg: LossConfig, weight_temperature: keras.Variable) -> keras.losses.Loss:
    return DCELoss(temperature=cfg.temperature, reported_value=cfg.reported_value)


def patchnce_loss(cfg: LossConfig, weight_temperature: keras.Variable) -> keras.losses.Loss:
    return PatchNCELoss(temperature=cfg.temperature)


def build_contrastive_loss(cfg: LossConfig, weight_temperature: keras.Variable) -> keras.losses.Loss:
    return CONTRASTIVE_LOSSES.get(cfg.contrastive)(cfg, weight_temperature)


def build_src_loss(cfg: LossConfig) -> Optional[SemanticRelationLoss]:
    if cfg.lambda_src == 0:
        return None
    return SemanticRelationLoss(divergence=cfg.src_divergence)


def build_objective(
    loss: LossConfig, head_cfg: HeadConfig, head: keras.layers.Layer, weight_temperature: keras.Variable,
    seed: Optional[int] = None, gather=None,
) -> PatchSemanticObjective:
    """The shared patch-semantic objective of a `loss` section and a `model.head` section."""
    return PatchSemanticObjective(
        head=head,
        sampler=PatchSampler(num_patches=head_cfg.num_patches, seed=seed),
        contrastive_loss=build_contrastive_loss(loss, weight_temperature),
        src_loss=build_src_loss(loss),
        lambda_contrastive=loss.lambda_contrastive,
        lambda_src=loss.lambda_src,
        layer_reduction=loss.layer_reduction,
        negatives_from_minibatch=loss.negatives_from_minibatch,
        gather=gather,
    )


# === Schedules and optimisers ===


def build_curriculum(cfg: CurriculumConfig, total_epochs: int) -> GammaCurriculum:
    return GammaCurriculum(
        start=cfg.start,
        end=cfg.end,
        total_epochs=total_epochs,
        step_epoch=cfg.step_epoch,
        step_value=cfg.step_value,
        mode=cfg.mode,
    )


def build_gamma_schedule(cfg: CurriculumConfig, total_epochs: int, steps_per_epoch: int) -> StepSchedule:
    """Γ as a function of the completed iterations (per epoch or per iteration, `curriculum.unit`)."""
    return StepSchedule(build_curriculum(cfg, total_epochs), steps_per_epoch, unit=cfg.unit)


def build_optimizers(cfg: TrainConfig, steps_per_epoch: int, names=("g_optimizer", "d_optimizer", "head_optimizer")):
    """Adam optimisers (one per name; CUT: G, D, head) sharing one linear-decay schedule (spec §5)."""

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

    return tuple(adam(name) for name in names)


# === Trainers (entries of psr.methods) ===


def build_cut_generator(model: ModelConfig, image_size: int, channels: int = 3) -> keras.Model:
    """The CUT / SinCUT inference network: the generator alone."""
    return build_generator(model.generator, channels, image_size)


def build_cut_trainer(
    model: ModelConfig, loss: LossConfig, train: TrainConfig, inputs: TrainerInputs, optimizers=None,
) -> CUTTrainer:
    """The single-modal (CUT / SinCUT) trainer, compiled and with every variable created.

    Call it inside the distribution strategy's scope. `optimizers` replaces the three Adams (tests).
    """
    from psr.trainers.distribution import gather_replicas

    crop = inputs.image_size
    generator = build_generator(model.generator, inputs.channels, crop)
    gamma = build_gamma_schedule(loss.curriculum, train.total_epochs, inputs.steps_per_epoch)
    weight_temperature = keras.Variable(gamma(0), trainable=False, dtype="float32", name="weight_temperature")
    objective = build_objective(loss, model.head, build_head(model.head, generator), weight_temperature,
                                seed=inputs.seed, gather=gather_replicas)
    trainer = CUTTrainer(
        generator=generator,
        discriminator=build_discriminator(model.discriminator, inputs.channels, crop),
        objective=objective,
        weight_temperature=weight_temperature,
        gamma_schedule=gamma,
        nce_layers=model.head.layers,
        gan_mode=loss.gan_mode,
        lambda_gan=loss.lambda_gan,
        identity_branch=loss.identity_branch,
        src_on_identity=loss.src_on_identity,
        branch_reduction=loss.branch_reduction,
        lambda_identity=loss.lambda_identity,
        lambda_r1=loss.lambda_r1,
    )
    g_opt, d_opt, h_opt = optimizers or build_optimizers(train, inputs.steps_per_epoch)
    trainer.compile(g_opt, d_opt, h_opt, jit_compile=train.jit_compile)
    # The StyleGAN2 discriminator only takes crop-sized images; the ResNet nets build on a small image.
    trainer.build_all(image_size=crop if model.discriminator.architecture == "stylegan2" else min(crop, 64))
    return trainer


# === Multi-modal translation (method stargan2; spec multimodal.md) ===


def build_stargan2_networks(model: MultimodalModelConfig, image_size: int) -> dict:
    """G, M, E and D of a `stargan2` model section (one fresh set; call twice for the EMA copies)."""
    from psr.models.stargan2 import (
        MappingNetwork,
        MultiTaskDiscriminator,
        StarGAN2Generator,
        StyleEncoder,
    )

    g = model.generator
    return {
        "generator": StarGAN2Generator(
            image_size=image_size, style_dim=model.style_dim, filters=g.filters, max_filters=g.max_filters,
            num_res=g.num_res_blocks, num_adain=g.num_adain_blocks, style_upsampling=g.style_upsampling,
        ),
        "mapping": MappingNetwork(latent_dim=model.latent_dim, style_dim=model.style_dim,
                                  num_domains=model.num_domains, hidden=model.mapping_hidden),
        "style_encoder": StyleEncoder(image_size=image_size, style_dim=model.style_dim, num_domains=model.num_domains,
                                      filters=model.style_encoder.filters, max_filters=model.style_encoder.max_filters),
        "discriminator": MultiTaskDiscriminator(image_size=image_size, num_domains=model.num_domains,
                                                filters=model.discriminator.filters,
                                                max_filters=model.discriminator.max_filters),
    }


def build_stargan2_translator(model: MultimodalModelConfig, image_size: int, channels: int = 3) -> keras.Model:
    """The `stargan2` inference network (G, M, E: what the EMA copies are), built with every weight."""
    from psr.models.multimodal import MultimodalTranslator

    nets = build_stargan2_networks(model, image_size)
    translator = MultimodalTranslator(nets["generator"], nets["mapping"], nets["style_encoder"],
                                      latent_dim=model.latent_dim)
    translator.translate_latent(keras.ops.zeros((1, image_size, image_size, channels)), keras.ops.zeros((1,), "int32"),
                                keras.ops.zeros((1, model.latent_dim)))
    translator.style_encoder(keras.ops.zeros((1, image_size, image_size, channels)), keras.ops.zeros((1,), "int32"))
    return translator


def multimodal_gamma_schedule(cfg: CurriculumConfig, total_steps: int):
    """Γ of the 0-based iteration t: start + (end − start)·t / total_steps (spec multimodal §3.4)."""
    if cfg.mode == "fixed":
        return lambda step: float(cfg.start)
    return lambda step: float(cfg.start + (cfg.end - cfg.start) * min(step, total_steps) / total_steps)


def diversity_weight_schedule(initial: float, steps: int):
    """λ_ds after t iterations: linear from `initial` to 0 over `steps`, then 0 (spec multimodal §4.1 step 7)."""
    return lambda step: float(max(0.0, initial * (1.0 - step / steps)))


def build_multimodal_optimizers(train: TrainConfig, steps_per_epoch: int) -> dict:
    """Five Adams (G, M, E, D, head); M at `train.mapping_learning_rate`; coupled decay is the trainer's."""

    def adam(name: str, rate: float) -> keras.optimizers.Adam:
        schedule = LinearDecay(initial_learning_rate=rate, n_epochs=train.epochs, n_epochs_decay=train.decay_epochs,
                               steps_per_epoch=steps_per_epoch)
        return keras.optimizers.Adam(learning_rate=schedule, beta_1=train.beta_1, beta_2=train.beta_2,
                                     epsilon=train.epsilon, name=f"{name}_optimizer")

    mapping_rate = train.mapping_learning_rate or train.learning_rate
    return {name: adam(name, mapping_rate if name == "mapping" else train.learning_rate)
            for name in ("generator", "mapping", "style_encoder", "discriminator", "head")}


def build_stargan2_trainer(
    model: MultimodalModelConfig, loss: MultimodalLossConfig, train: TrainConfig, inputs: TrainerInputs,
    optimizers: Optional[dict] = None,
):
    """The multi-modal trainer, compiled and with every variable created (inside the strategy's scope)."""
    from psr.trainers.stargan2 import StarGAN2Trainer

    size = inputs.image_size
    nets = build_stargan2_networks(model, size)
    ema = build_stargan2_networks(model, size)
    total_steps = max(1, inputs.steps_per_epoch * train.total_epochs)
    gamma = multimodal_gamma_schedule(loss.curriculum, total_steps)
    weight_temperature = keras.Variable(gamma(0), trainable=False, dtype="float32", name="weight_temperature")
    channels = nets["generator"].feature_channels
    head_cfg = model.head
    try:
        head_channels = [channels[i] for i in head_cfg.layers]
    except IndexError:
        raise ConfigError(f"model.head.layers {list(head_cfg.layers)}: the generator's encoder has "
                          f"{len(channels)} maps (indices 0–{len(channels) - 1}).") from None
    head = PatchMLPHead(input_channels=head_channels, units=head_cfg.units, use_mlp=head_cfg.use_mlp)
    objective = build_objective(loss, head_cfg, head, weight_temperature, seed=inputs.seed)
    trainer = StarGAN2Trainer(
        nets["generator"], nets["mapping"], nets["style_encoder"], nets["discriminator"], objective,
        generator_ema=ema["generator"], mapping_ema=ema["mapping"], style_encoder_ema=ema["style_encoder"],
        weight_temperature=weight_temperature, gamma_schedule=gamma,
        lambda_ds_schedule=diversity_weight_schedule(loss.lambda_ds, loss.ds_steps),
        latent_dim=model.latent_dim, feature_layers=head_cfg.layers, lambda_adv=loss.lambda_adv,
        lambda_r1=loss.lambda_r1, lambda_style=loss.lambda_style, lambda_cycle=loss.lambda_cycle,
        cycle_input=loss.cycle_input, src_batch_reduction=loss.src_batch_reduction,
        semantic_in_reference_step=loss.semantic_in_reference_step, ema_decay=model.ema_decay,
        weight_decay=train.weight_decay, seed=inputs.seed,
    )
    trainer.compile(optimizers or build_multimodal_optimizers(train, inputs.steps_per_epoch),
                    jit_compile=train.jit_compile)
    trainer.build_all(image_size=size, channels=inputs.channels)
    return trainer


# === GAN compression (method compression; spec compression.md) ===


def student_candidates(student: StudentConfig) -> tuple[int, ...]:
    """The widths every config entry may take: `candidates`, else the named set (widest first)."""
    from psr.models.mobile_resnet import channel_candidates

    widths = tuple(student.candidates) if student.candidates is not None else channel_candidates(student.config_set)
    if max(widths) > student.filters:
        raise ConfigError(
            f"model.student: the widths {list(widths)} exceed model.student.filters {student.filters}; "
            "raise filters or set model.student.candidates."
        )
    return tuple(sorted(set(int(w) for w in widths), reverse=True))


def build_compression_student(model: CompressionModelConfig, image_size: int, channels: int = 3) -> keras.Model:
    """The `compression` inference network: the super student (any configuration by `set_channel_config`)."""
    from psr.models.mobile_resnet import SuperMobileResnetGenerator

    s = model.student
    return SuperMobileResnetGenerator(filters=s.filters, input_channels=channels, output_channels=channels,
                                      num_blocks=s.num_blocks)


def load_teacher(teacher: TeacherConfig):
    """The frozen teacher generator of a psr run directory (its newest `teacher.checkpoint`)."""
    from psr.inference import load_run_generator
    from psr.models.resnet_generator import ResnetGenerator
    from psr.trainers.checkpoints import latest_checkpoint

    if latest_checkpoint(teacher.run, teacher.checkpoint) is None:
        hint = " or set model.teacher.experiment to the YAML that trains it" if teacher.experiment is None else ""
        raise ConfigError(
            f"model.teacher.run {teacher.run} holds no {teacher.checkpoint} checkpoint; train the teacher there "
            f"(`main.py run`), convert a PyTorch resnet_9blocks generator into it (`main.py import-torch`){hint}."
        )
    generator, _, _ = load_run_generator(teacher.run, teacher.checkpoint)
    if not isinstance(generator, ResnetGenerator):
        raise ConfigError(
            f"model.teacher.run {teacher.run} holds a {type(generator).__name__}; the compression teacher must be "
            "a ResNet generator (a cut run, or an imported CycleGAN / pix2pix resnet_9blocks)."
        )
    return generator


def build_compression_trainer(
    model: CompressionModelConfig, loss: CompressionLossConfig, train: TrainConfig, inputs: TrainerInputs,
    optimizers=None,
):
    """Stage 1 (or the fine-tune at `model.student.fixed_config`), compiled and with every variable created."""
    from psr.models.distillation import DistillationAdaptors, teacher_feature_layers
    from psr.models.mobile_resnet import ChannelConfigSampler
    from psr.models.profile import parse_channel_config
    from psr.trainers.compression import CompressionTrainer

    crop, channels = inputs.image_size, inputs.channels
    teacher = load_teacher(model.teacher)
    layers = list(model.teacher.layers) if model.teacher.layers is not None else teacher_feature_layers(teacher)
    try:
        teacher_channels = teacher.feature_channels(layers)
    except ValueError as err:
        raise ConfigError(f"model.teacher.layers {layers} does not fit the teacher: {err}") from None
    student = build_compression_student(model, crop, channels)
    stream = student.max_widths[2]
    head_width = max(max(teacher_channels), stream)
    head_cfg = model.head

    def head(name: str) -> PatchMLPHead:
        return PatchMLPHead(input_channels=[head_width] * 4, units=head_cfg.units, name=name)

    gamma = build_gamma_schedule(loss.curriculum, train.total_epochs, inputs.steps_per_epoch)
    weight_temperature = keras.Variable(gamma(0), trainable=False, dtype="float32", name="weight_temperature")
    objective = build_objective(loss, head_cfg, head("head"), weight_temperature, seed=inputs.seed)
    conditional = inputs.paired if model.conditional_discriminator is None else model.conditional_discriminator
    recon_target = loss.recon_target
    if recon_target == "auto":
        recon_target = "ground_truth" if inputs.paired else "teacher"
    fixed = model.student.fixed_config
    trainer = CompressionTrainer(
        teacher=teacher,
        student=student,
        discriminator=build_discriminator(model.discriminator, channels * (2 if conditional else 1), crop),
        objective=objective,
        adaptors=DistillationAdaptors(stream, teacher_channels, name="adaptors"),
        teacher_layers=layers,
        config_sampler=None if fixed else ChannelConfigSampler(student_candidates(model.student)),
        fixed_config=parse_channel_config(fixed) if fixed else None,
        teacher_head=head("teacher_head") if head_cfg.separate_heads else None,
        weight_temperature=weight_temperature,
        gamma_schedule=gamma,
        gan_mode=loss.gan_mode,
        conditional=conditional,
        recon_target=recon_target,
        lambda_gan=loss.lambda_gan,
        lambda_recon=loss.lambda_recon,
        lambda_distill=loss.lambda_distill,
        seed=inputs.seed,
    )
    g_opt, d_opt, h_opt = optimizers or build_optimizers(train, inputs.steps_per_epoch)
    trainer.compile(g_opt, d_opt, h_opt, jit_compile=train.jit_compile)
    trainer.build_all(image_size=min(crop, 64), channels=channels)
    if model.student.init_from:
        start_from_run(trainer, model.student.init_from)
    return trainer


def start_from_run(trainer, run_dir: str) -> None:
    """Fine-tune start (spec §5.4): the student and D of a compression run's newest checkpoint; adaptors, heads,
    optimisers and Γ start anew. A run without trainer state (an imported student) gives the student only."""
    import dataclasses
    import sys

    from psr.config import load_run_config
    from psr.trainers.checkpoints import TRAINER_FILE, latest_checkpoint, restore_generator

    source_cfg = load_run_config(run_dir)
    if source_cfg.method != "compression":
        raise ConfigError(f"model.student.init_from {run_dir} is a {source_cfg.method} run; name a compression run.")
    path = latest_checkpoint(run_dir)
    if path is None:
        raise ConfigError(f"model.student.init_from {run_dir} has no checkpoint yet; train that run first.")
    if not (path / TRAINER_FILE).is_file():
        restore_generator(run_dir, trainer.student)
        print(f"{path} holds no discriminator; the fine-tune starts D afresh.", file=sys.stderr)
        return
    source_student = dataclasses.replace(source_cfg.model.student, init_from=None)
    source = build_compression_trainer(
        dataclasses.replace(source_cfg.model, student=source_student), source_cfg.loss, source_cfg.train,
        TrainerInputs(source_cfg.data.crop_size, steps_per_epoch=1, paired=source_cfg.data.kind == "aligned"),
    )
    source.load_weights(str(path / TRAINER_FILE))
    for name in ("student", "discriminator"):
        mine, theirs = getattr(trainer, name), getattr(source, name)
        shapes = [tuple(w.shape) for w in mine.weights], [tuple(w.shape) for w in theirs.weights]
        if shapes[0] != shapes[1]:
            raise ConfigError(f"model.student.init_from {run_dir}: its {name} has other shapes than this run's; "
                              f"use the same model.student and model.discriminator settings.")
        for target, value in zip(mine.weights, theirs.weights):
            target.assign(value)
