"""Experiment configuration: one YAML file → typed, validated, frozen dataclasses.

`load_experiment(path, overrides)` is the only place where user configuration is
checked. Every problem becomes one `ConfigError` whose message names the key
path, the value received and the fix (for unknown keys, the closest valid name).
Builders receive the typed sections (`GeneratorConfig`, `LossConfig`, ...),
never the whole experiment.

Defaults are the official code's (jcy132/Hneg_SRC, horse→zebra settings); the
`experiments/*.yaml` presets spell every value out anyway.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml

from psr import registry
from psr.errors import ConfigError


def _choices(values) -> dict:
    """Field metadata: the value must be one of `values` (a tuple or a `psr.registry.Registry`)."""
    return {"choices": values}


# === Sections ===


@dataclass(frozen=True)
class SyntheticDataConfig:
    """Embedded generated data, written into `data.root` on first use (no download).

    kind "shapes": plain shapes → striped shapes, with ground-truth translations (unaligned data);
    kind "rocket_pair": a painterly and a photographic view of scikit-image's rocket (single-image data);
    kind "scenes": one set of scenes in three styles (night, plain, striped) with every val scene rendered in
    every domain (multi-domain data; `num_train` / `num_test` scenes per domain for train / val);
    kind "paired_shapes": files `train/`, `test/` holding plain shapes (left, A) | the same shapes striped
    (right, B) (aligned data; `num_train` / `num_test` pairs).
    """

    kind: str = field(default="shapes", metadata=_choices(registry.SYNTHETIC_KINDS))
    image_size: int = field(default=32, metadata={"min": 8})
    num_train: int = field(default=200, metadata={"min": 1})
    num_test: int = field(default=16, metadata={"min": 1})
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """The training data: which kind, where, and its transforms.

    kind "unaligned": the CUT/CycleGAN layout `root/{trainA,trainB,testA,testB}`, random pairing (CUT).
    kind "single_image": one image in trainA and one in trainB, trained on random zoomed crops (SinCUT,
    spec §4.7). kind "multidomain": `root/{train,val}/<domain>/` (StarGAN v2). kind "aligned": the pix2pix
    layout `root/{train,val,test}/`, each file A|B side by side, both halves with the same resize, crop and
    flip (paired data, compression spec §2; `direction: BtoA` makes the right half the source).
    """

    kind: str = field(default="unaligned", metadata=_choices(registry.DATA_KINDS))
    root: str = "datasets/horse2zebra"
    direction: str = field(default="AtoB", metadata=_choices(registry.DIRECTIONS))
    load_size: int = field(default=286, metadata={"min": 1})  # resize target before the random crop
    crop_size: int = field(default=256, metadata={"min": 4})
    preprocess: str = field(
        default="resize_and_crop",
        metadata=_choices(registry.PREPROCESS_MODES),
    )
    flip: bool = True
    # Official behaviour: in decay epochs the images are resized straight to crop_size (no crop jitter).
    jitter_in_decay_epochs: bool = False
    max_dataset_size: Optional[int] = field(default=None, metadata={"min": 1})
    # single_image: zoom factors per axis are drawn from U(1/random_scale_max, 1); samples per epoch.
    random_scale_max: float = field(default=3.0, metadata={"min": 1.0})
    # multidomain: probability of the random resized crop (area 0.8–1, ratio 0.9–1.1) before the resize.
    random_resized_crop: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    epoch_length: int = field(default=100_000, metadata={"min": 1})
    # When set, `root` is filled with a generated dataset on first use (no download).
    synthetic: Optional[SyntheticDataConfig] = None


@dataclass(frozen=True)
class GeneratorConfig:
    """CUT ResNet generator (spec §4.1) or the StyleGAN2-style SinCUT generator (spec §4.6)."""

    architecture: str = field(default="resnet", metadata=_choices(registry.GENERATORS))
    filters: int = field(default=64, metadata={"min": 1})  # ngf
    num_blocks: int = field(default=9, metadata={"min": 1})
    antialias: bool = True  # resnet only
    antialias_up: bool = True  # resnet only
    # resnet only: conv units that keep one activation per conv and recompute norms/activations in the
    # backward pass (same values; ~25% less memory, faster gradients on AVX2 CPUs). false = plain layers;
    # auto = fused where measured faster (float32 without oneDNN), plain otherwise (`psr.models.fused`).
    fused: Any = field(default="auto", metadata={"bool_or_auto": True})
    num_downsampling: int = field(default=1, metadata={"min": 0})  # stylegan2 only


@dataclass(frozen=True)
class DiscriminatorConfig:
    """PatchGAN discriminator (spec §4.4) or the StyleGAN2-style SinCUT discriminator (spec §4.6)."""

    architecture: str = field(default="patchgan", metadata=_choices(registry.DISCRIMINATORS))
    filters: int = field(default=64, metadata={"min": 1})  # ndf
    num_layers: int = field(default=3, metadata={"min": 1})
    antialias: bool = True
    fused: Any = field(default="auto", metadata={"bool_or_auto": True})  # patchgan only: as model.generator.fused


@dataclass(frozen=True)
class HeadConfig:
    """Patch sampler + per-layer projection MLPs (spec §4.3)."""

    units: int = field(default=256, metadata={"min": 1})  # netF_nc
    num_patches: int = field(default=256, metadata={"min": 1})
    layers: tuple = (0, 4, 8, 12, 16)  # generator list indices whose outputs are compared
    use_mlp: bool = True


@dataclass(frozen=True)
class ModelConfig:
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    head: HeadConfig = HeadConfig()


@dataclass(frozen=True)
class CurriculumConfig:
    """Γ (= 1/γ, the official `HDCE_gamma`) of the hard-negative weights (spec §3).

    linear: Γ(e) = start + (end − start)·e/T for the 1-based epoch e, T = all epochs;
    after `step_epoch` (if set) Γ = `step_value` (Cityscapes). fixed: Γ = start.
    unit "epoch" (official CUT): Γ changes once per epoch; "step": e is fractional, (iteration + 1) / steps
    per epoch, so Γ changes at every iteration along the same line (official StarGAN v2 schedules per step).
    """

    mode: str = field(default="linear", metadata=_choices(registry.GAMMA_MODES))
    unit: str = field(default="epoch", metadata=_choices(registry.SCHEDULE_UNITS))
    start: float = field(default=50.0, metadata={"min_exclusive": 0.0})
    end: float = field(default=10.0, metadata={"min_exclusive": 0.0})
    step_epoch: Optional[int] = field(default=None, metadata={"min": 0})
    step_value: float = field(default=1.0, metadata={"min_exclusive": 0.0})


@dataclass(frozen=True)
class LossConfig:
    """Loss assembly (spec §2). Defaults reproduce the official code; switches give the supplement's variants."""

    gan_mode: str = field(default="lsgan", metadata=_choices(registry.GAN_MODES))
    contrastive: str = field(default="hdce", metadata=_choices(registry.CONTRASTIVE_LOSSES))
    temperature: float = field(default=0.07, metadata={"min_exclusive": 0.0})  # τ
    lambda_gan: float = field(default=1.0, metadata={"min": 0.0})
    lambda_contrastive: float = field(default=0.1, metadata={"min": 0.0})  # λ_hDCE
    lambda_src: float = field(default=0.05, metadata={"min": 0.0})  # λ_SRC
    src_divergence: str = field(default="jsd", metadata=_choices(registry.SRC_DIVERGENCES))
    identity_branch: bool = True  # Y→Y branch (`--dce_idt`)
    lambda_identity: float = field(default=0.0, metadata={"min": 0.0})  # L1(G(y), y); SinCUT: 1
    lambda_r1: float = field(default=0.0, metadata={"min": 0.0})  # R1 on real images; SinCUT: 1 (×½, spec §4.7)
    # SinCUT: all patches of the minibatch are one set of negatives ([1, B·N, C]) instead of per image.
    negatives_from_minibatch: bool = False
    # Supplement variants (official code: false / mean / mean).
    src_on_identity: bool = False
    layer_reduction: str = field(default="mean", metadata=_choices(registry.REDUCTIONS))
    branch_reduction: str = field(default="mean", metadata=_choices(registry.REDUCTIONS))
    # What the hDCE scalar reports: "infonce" = the official log value (gradient is DCE's either way).
    reported_value: str = field(default="infonce", metadata=_choices(registry.REPORTED_VALUES))
    curriculum: CurriculumConfig = CurriculumConfig()


# === Multi-modal translation (method stargan2; spec multimodal.md) ===


@dataclass(frozen=True)
class StyleGeneratorConfig:
    """StarGAN v2 generator as released with the paper (spec multimodal §2.2)."""

    filters: Optional[int] = field(default=None, metadata={"min": 1})  # None: 2^14 / image side (64 at 256²)
    max_filters: int = field(default=512, metadata={"min": 1})
    num_res_blocks: int = field(default=4, metadata={"min": 1})  # plain ResBlks after the two down blocks
    num_adain_blocks: int = field(default=4, metadata={"min": 1})
    # Supplement A.2: the two up blocks take the style through AdaIN (code: plain IN, style ignored).
    style_upsampling: bool = False


@dataclass(frozen=True)
class ConvTrunkConfig:
    """Style encoder / multi-task discriminator trunk (spec multimodal §2.5–2.6)."""

    filters: Optional[int] = field(default=None, metadata={"min": 1})  # None: 2^14 / image side
    max_filters: int = field(default=512, metadata={"min": 1})


@dataclass(frozen=True)
class StyleHeadConfig:
    """Projection head of the semantic loss on the generator's encoder (spec multimodal §2.3)."""

    units: int = field(default=256, metadata={"min": 1})
    num_patches: int = field(default=128, metadata={"min": 1})  # supplement: 256
    # Indices into the encoder's bottleneck maps [2nd down block, ResBlk 1..4]; supplement: [1, 2, 3, 4].
    layers: tuple = (0, 1, 2, 3, 4)
    use_mlp: bool = True


@dataclass(frozen=True)
class MultimodalModelConfig:
    """Networks of `method: stargan2`: G, mapping network M, style encoder E, discriminator D, head F."""

    num_domains: int = field(default=4, metadata={"min": 2})  # checked against the dataset's domain folders
    latent_dim: int = field(default=16, metadata={"min": 1})
    style_dim: int = field(default=64, metadata={"min": 1})
    mapping_hidden: int = field(default=512, metadata={"min": 1})
    generator: StyleGeneratorConfig = StyleGeneratorConfig()
    style_encoder: ConvTrunkConfig = ConvTrunkConfig()
    discriminator: ConvTrunkConfig = ConvTrunkConfig()
    head: StyleHeadConfig = StyleHeadConfig()
    ema_decay: float = field(default=0.999, metadata={"min": 0.0, "max_exclusive": 1.0})


@dataclass(frozen=True)
class MultimodalLossConfig:
    """Losses of `method: stargan2` (spec multimodal §3). Defaults = the released code (Seasons)."""

    lambda_adv: float = field(default=1.0, metadata={"min": 0.0})
    lambda_r1: float = field(default=1.0, metadata={"min": 0.0})  # λ_reg, R1 on reals in both D updates
    lambda_style: float = field(default=1.0, metadata={"min": 0.0})
    lambda_ds: float = field(default=2.0, metadata={"min": 0.0})  # initial λ_ds, linear decay to 0
    ds_steps: int = field(default=100_000, metadata={"min": 1})  # iterations of the λ_ds decay
    lambda_cycle: float = field(default=1.0, metadata={"min": 0.0})
    # real (code): ‖x − G(x, E(x))‖₁, a self-reconstruction; fake (supplement, upstream): ‖x − G(G(x, s), E(x))‖₁.
    cycle_input: str = field(default="real", metadata=_choices(registry.CYCLE_INPUTS))
    contrastive: str = field(default="hdce", metadata=_choices(registry.CONTRASTIVE_LOSSES))
    temperature: float = field(default=0.07, metadata={"min_exclusive": 0.0})
    lambda_contrastive: float = field(default=1.0, metadata={"min": 0.0})  # λ_hDCE: Seasons 1, Weather 0.1
    lambda_src: float = field(default=0.1, metadata={"min": 0.0})
    src_divergence: str = field(default="jsd", metadata=_choices(registry.SRC_DIVERGENCES))
    layer_reduction: str = field(default="mean", metadata=_choices(registry.REDUCTIONS))  # supplement: sum
    # SRC over the batch: sum of the per-image values (code) or their mean.
    src_batch_reduction: str = field(default="sum", metadata=_choices(registry.REDUCTIONS))
    reported_value: str = field(default="infonce", metadata=_choices(registry.REPORTED_VALUES))
    # The code applies the semantic loss in both G updates; the supplement names only the latent-guided one.
    semantic_in_reference_step: bool = True
    # Γ of the hard-negative weights, linear in the 0-based iteration over the whole run (spec §3.4).
    curriculum: CurriculumConfig = CurriculumConfig(start=50.0, end=1.0, unit="step")

    negatives_from_minibatch = False  # per-image problems (spec §3.3); not a key


# === GAN compression (method compression; spec compression.md) ===


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen teacher of `method: compression`: a psr run directory holding a ResNet generator.

    A CycleGAN / pix2pix `resnet_9blocks` PyTorch checkpoint becomes one with `main.py import-torch`.
    `experiment` names the YAML that trains the teacher when `run` has no checkpoint yet (the quickstart).
    `layers`: the teacher's list indices of the four distilled maps; None = the encoder output and the ends
    of the three residual-block groups (9, 12, 15, 18 for CycleGAN's resnet_9blocks, spec §3.1).
    """

    run: str = "runs/horse2zebra_teacher"
    checkpoint: str = "latest"  # latest | best | epochs
    experiment: Optional[str] = None
    layers: Optional[tuple] = None


@dataclass(frozen=True)
class StudentConfig:
    """The once-for-all super mobile ResNet student (spec §3.2)."""

    filters: int = field(default=64, metadata={"min": 1})  # student ngf = the widest value of each entry
    num_blocks: int = field(default=9, metadata={"min": 3})  # a multiple of 3
    config_set: str = field(default="channels-64-cycleGAN", metadata=_choices(registry.CHANNEL_CONFIG_SETS))
    candidates: Optional[tuple] = None  # own widths for every entry (e.g. [16, 12, 8]); replaces config_set
    fixed_config: Optional[str] = None  # fine-tune: train only this sub-network, "c0_c1_..._c7" (spec §5.4)
    # Fine-tune: start the student from this compression run's newest checkpoint (the code also restores D).
    init_from: Optional[str] = None


@dataclass(frozen=True)
class CompressionHeadConfig:
    """The projection heads F_l, shared by teacher and student (elastic input; spec §3.6)."""

    units: int = field(default=256, metadata={"min": 1})
    num_patches: int = field(default=256, metadata={"min": 1})
    # Table 6 ablation: a student head F_s and a teacher head F_t (F_t gets no gradient, as in the code).
    separate_heads: bool = False


@dataclass(frozen=True)
class CompressionModelConfig:
    """Networks of `method: compression`: teacher T (frozen), super student S, its D, adaptors, heads."""

    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    # The code's n_layers D without antialiasing; h2z ndf 64, the pix2pix tasks 128.
    discriminator: DiscriminatorConfig = DiscriminatorConfig(antialias=False)
    # D sees concat(input, image) (pix2pix); None = conditional exactly for paired (aligned) data.
    conditional_discriminator: Optional[bool] = None
    head: CompressionHeadConfig = CompressionHeadConfig()


@dataclass(frozen=True)
class CompressionLossConfig:
    """Stage-1 losses (spec §4). Defaults = the released code for horse→zebra."""

    gan_mode: str = field(default="lsgan", metadata=_choices(registry.GAN_MODES))  # pix2pix tasks: hinge
    lambda_gan: float = field(default=1.0, metadata={"min": 0.0})
    lambda_recon: float = field(default=10.0, metadata={"min": 0.0})  # Cityscapes 100
    # L1 of S(x) against the teacher's T(x) or the ground truth y; auto = the code (teacher for unpaired data,
    # ground truth for paired); the supplement A.3 writes the teacher for every task (spec §9.1).
    recon_target: str = field(default="auto", metadata=_choices(registry.RECON_TARGETS))
    lambda_distill: float = field(default=0.01, metadata={"min": 0.0})  # Cityscapes 1
    contrastive: str = field(default="hdce", metadata=_choices(registry.CONTRASTIVE_LOSSES))
    temperature: float = field(default=0.07, metadata={"min_exclusive": 0.0})
    lambda_contrastive: float = field(default=0.1, metadata={"min": 0.0})  # λ_hDCE
    lambda_src: float = field(default=10.0, metadata={"min": 0.0})
    src_divergence: str = field(default="jsd", metadata=_choices(registry.SRC_DIVERGENCES))
    layer_reduction: str = field(default="sum", metadata=_choices(registry.REDUCTIONS))  # the code sums layers
    reported_value: str = field(default="infonce", metadata=_choices(registry.REPORTED_VALUES))
    curriculum: CurriculumConfig = CurriculumConfig(start=50.0, end=10.0)

    negatives_from_minibatch = False  # per-image patch sets (spec §5.2); not a key


@dataclass(frozen=True)
class SearchConfig:
    """Evolution search of a compression run (`main.py search`, spec §6). Defaults = the h2z script."""

    budget: Optional[float] = field(default=None, metadata={"min_exclusive": 0.0})  # MACs at 256², h2z 3e9
    criterion: str = field(default="fid", metadata=_choices(registry.SEARCH_CRITERIA))
    # Held-out search images (spec §2: train2 split): source images, and target-domain images for FID
    # (or `target_statistics`, a .npz with mu/sigma). None = the data section's training folders.
    source: Optional[str] = None
    target: Optional[str] = None
    target_statistics: Optional[str] = None
    labels: Optional[str] = None  # miou: ground-truth label maps named like the source images
    image_size: Optional[int] = field(default=None, metadata={"min": 4})  # None = data.crop_size
    max_images: Optional[int] = field(default=None, metadata={"min": 1})
    batch_size: int = field(default=32, metadata={"min": 1})
    population_size: int = field(default=100, metadata={"min": 2})
    generations: int = field(default=500, metadata={"min": 0})
    mutation_ratio: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    parent_ratio: float = field(default=0.25, metadata={"min_exclusive": 0.0, "max": 1.0})
    mutate_prob: float = field(default=0.4, metadata={"min": 0.0, "max": 1.0})
    weighted_sample: float = field(default=2.0, metadata={"min": 1.0})
    seed: int = 233
    after_training: bool = False  # search (and export the best sub-network) when `main.py run` ends


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=200, metadata={"min": 0})  # n_epochs at the initial learning rate
    decay_epochs: int = field(default=200, metadata={"min": 0})  # then linear decay to 0
    batch_size: int = field(default=1, metadata={"min": 1})
    learning_rate: float = field(default=2e-4, metadata={"min_exclusive": 0.0})
    beta_1: float = field(default=0.5, metadata={"min": 0.0, "max_exclusive": 1.0})
    beta_2: float = field(default=0.999, metadata={"min": 0.0, "max_exclusive": 1.0})
    epsilon: float = field(default=1e-8, metadata={"min_exclusive": 0.0})  # PyTorch Adam's default
    # Coupled L2 weight decay as PyTorch Adam's `weight_decay` (g ← g + wd·θ before the moments); stargan2: 1e-4.
    weight_decay: float = field(default=0.0, metadata={"min": 0.0})
    mapping_learning_rate: Optional[float] = field(default=None, metadata={"min_exclusive": 0.0})  # stargan2 M: 1e-6
    steps_per_epoch: Optional[int] = field(default=None, metadata={"min": 1})  # None = dataset size // batch
    jit_compile: bool = False
    mixed_precision: bool = False  # mixed_bfloat16, losses in float32; GPUs need compute capability ≥ 8.0
    seed: Optional[int] = 0
    # none: one device; mirrored: every local GPU (or the logical CPUs); multi_worker: several machines
    # configured by TF_CONFIG (tf.distribute.MultiWorkerMirroredStrategy).
    distribute: str = field(default="none", metadata=_choices(registry.DISTRIBUTE_MODES))
    # Bit-identical reruns on the same machine: TensorFlow op determinism + seeded data order/augmentation.
    deterministic: bool = False

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs


@dataclass(frozen=True)
class LogConfig:
    run_dir: str = "runs/horse2zebra"
    log_every_steps: int = field(default=100, metadata={"min": 1})  # TensorBoard step scalars
    sample_every_epochs: int = field(default=1, metadata={"min": 1})
    num_samples: int = field(default=4, metadata={"min": 1})
    checkpoint_every_epochs: int = field(default=5, metadata={"min": 1})  # kept snapshots
    keep_checkpoints: int = field(default=3, metadata={"min": 1})
    # A rolling "latest" checkpoint is also written every this many steps (0 = only at epoch ends) and
    # every this many minutes of training (0 = never), so a hard kill loses bounded work.
    save_every_steps: int = field(default=0, metadata={"min": 0})
    save_every_minutes: float = field(default=30.0, metadata={"min": 0.0})
    verbose: int = field(default=1, metadata={"min": 0, "max": 2})  # Keras fit verbosity


@dataclass(frozen=True)
class ExportConfig:
    after_training: bool = True
    pad_multiple: int = field(default=4, metadata={"min": 1})


@dataclass(frozen=True)
class EvalConfig:
    every_epochs: int = field(default=0, metadata={"min": 0})  # 0 = no evaluation during training
    metrics: tuple = ("fid",)
    best_metric: str = "fid"  # lower is better (higher for fcn, miou)
    # FID/KID features: auto = the paper protocol (pytorch-fid for single-modal; needs its weights file)
    features: str = field(default="auto", metadata=_choices(registry.FEATURE_EXTRACTORS))
    feature_weights: Optional[str] = None  # weights file (or folder to search) of `features`
    inception_weights: Optional[str] = None  # keras-imagenet weights file; None = Keras' ImageNet download
    kid_subset_size: int = field(default=1000, metadata={"min": 2})
    max_images: Optional[int] = field(default=None, metadata={"min": 1})
    # Paired metrics (psr/metrics/paired.py): lpips, fcn, miou.
    lpips_alexnet_weights: Optional[str] = None  # torchvision alexnet-owt-7be5be79.pth
    lpips_weights: Optional[str] = None  # LPIPS lpips/weights/v0.1/alex.pth
    lpips_against: str = field(default="input", metadata=_choices(registry.LPIPS_REFERENCES))
    segmentation_network: str = field(default="drn_d_22", metadata=_choices(registry.SEGMENTATION_NETWORKS))
    segmentation_weights: Optional[str] = None  # drn_d_22_cityscapes.pth / drn-d-105_ms_cityscapes.pth
    segmentation_labels: Optional[str] = None  # GT label maps named like the source test images
    label_format: str = field(default="color", metadata=_choices(registry.LABEL_FORMATS))


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment. `model` and `loss` are the sections of `method` (`psr.methods.Method`)."""

    name: str = "experiment"
    method: str = field(default="cut", metadata=_choices(registry.METHODS))
    data: DataConfig = DataConfig()
    model: Any = ModelConfig()
    loss: Any = LossConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()
    export: ExportConfig = ExportConfig()
    eval: EvalConfig = EvalConfig()
    search: SearchConfig = SearchConfig()  # method compression only


# === Parsing and validation ===


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is tuple:
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and type(None) in typing.get_args(tp):
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed; expected {_type_name(tp)}.")
    tp = inner
    if meta.get("bool_or_auto"):
        if not (isinstance(value, bool) or value == "auto"):
            raise ConfigError(f"{key}: expected true, false or auto, got {value!r}.")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}.")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: expected an integer, got {value!r}.")
        value = int(value)
    elif tp is float:
        if isinstance(value, str):  # YAML reads 2e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}.") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}.")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}.")
    elif tp is str:
        if not isinstance(value, str):
            # YAML reads 16_16_32_… as one integer (underscores group digits): the text must be quoted.
            hint = " Quote it, e.g. '16_16_32_16_16_64_16_24'." if isinstance(value, int) else ""
            raise ConfigError(f"{key}: expected a string, got {value!r}.{hint}")
    elif tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}.")
        return tuple(value)
    _check_range(value, key, meta)
    return value


def _check_range(value: Any, key: str, meta: dict) -> None:
    if "choices" in meta and value not in meta["choices"]:
        names = tuple(meta["choices"])
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(names)}.{hint}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key}: must be >= {meta['min']}, got {value!r}.")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise ConfigError(f"{key}: must be > {meta['min_exclusive']}, got {value!r}.")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{key}: must be <= {meta['max']}, got {value!r}.")
    if "max_exclusive" in meta and value >= meta["max_exclusive"]:
        raise ConfigError(f"{key}: must be < {meta['max_exclusive']}, got {value!r}.")


def _build(cls: type, raw: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            where = f"section '{prefix}'" if prefix else "the top level"
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(fields)}."
            raise ConfigError(f"Unknown key '{_join(prefix, key)}' in {where}.{hint}")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], _join(prefix, name), dict(f.metadata))
    return cls(**values)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _check_consistency(cfg: ExperimentConfig) -> None:
    """Cross-field checks that a single key cannot express (the method's own checks run after these)."""
    if cfg.data.preprocess in ("resize_and_crop", "scale_width_and_crop") and cfg.data.load_size < cfg.data.crop_size:
        raise ConfigError(
            f"data.load_size ({cfg.data.load_size}) is smaller than data.crop_size ({cfg.data.crop_size}); "
            "set load_size >= crop_size."
        )
    if cfg.train.total_epochs < 1:
        raise ConfigError("train.epochs + train.decay_epochs must be at least 1.")
    if cfg.data.preprocess == "none" and cfg.train.batch_size != 1:
        raise ConfigError("data.preprocess 'none' keeps each image's own size, so train.batch_size must be 1.")
    synthetic = cfg.data.synthetic
    if synthetic is not None and registry.SYNTHETIC_DATA_KINDS[synthetic.kind] != cfg.data.kind:
        wanted = registry.SYNTHETIC_DATA_KINDS[synthetic.kind]
        fitting = [k for k, v in registry.SYNTHETIC_DATA_KINDS.items() if v == cfg.data.kind]
        raise ConfigError(
            f"data.synthetic.kind {synthetic.kind} is {wanted} data; set data.kind: {wanted}"
            + (f" or data.synthetic.kind: {fitting[0]}." if fitting else ".")
        )
    if cfg.eval.best_metric not in cfg.eval.metrics:
        raise ConfigError(
            f"eval.best_metric {cfg.eval.best_metric!r} is not in eval.metrics {list(cfg.eval.metrics)!r}."
        )
    if cfg.train.jit_compile and cfg.train.distribute != "none":
        raise ConfigError(
            "train.jit_compile does not work under tf.distribute (XLA cannot reach the other replicas' "
            "variables); set train.jit_compile: false or train.distribute: none."
        )
    check_eval_metrics(cfg)


def check_single_modal(cfg: ExperimentConfig) -> None:
    """Checks of the `cut` / `sincut` model and loss sections."""
    layers = cfg.model.head.layers
    if not layers or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in layers):
        raise ConfigError(f"model.head.layers: expected a list of generator layer indices >= 0, got {list(layers)!r}.")
    if list(layers) != sorted(set(layers)):
        raise ConfigError(f"model.head.layers: indices must be increasing and unique, got {list(layers)!r}.")
    if cfg.loss.curriculum.step_epoch is not None and cfg.loss.curriculum.mode == "fixed":
        raise ConfigError("loss.curriculum.step_epoch only applies to mode 'linear'; remove it or set mode: linear.")
    if cfg.loss.lambda_identity > 0 and not cfg.loss.identity_branch:
        raise ConfigError("loss.lambda_identity needs loss.identity_branch: true (it compares G(y) with y).")
    check_crop_size(cfg)


def check_multimodal(cfg: ExperimentConfig) -> None:
    """Checks of the `stargan2` sections: image side and head layers the networks can take."""
    side = cfg.data.crop_size
    if side < 8 or side & (side - 1):
        lower = 2 ** max(3, side.bit_length() - 1)
        raise ConfigError(
            f"data.crop_size {side}: the style encoder and discriminator halve the image down to 4×4, so it must be "
            f"a power of two >= 8; use {lower} or {lower * 2}."
        )
    layers = cfg.model.head.layers
    maps = cfg.model.generator.num_res_blocks + 1
    if (not layers or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < maps for v in layers)
            or list(layers) != sorted(set(layers))):
        raise ConfigError(
            f"model.head.layers: expected increasing indices of the encoder's {maps} bottleneck maps (0–{maps - 1}), "
            f"got {list(layers)!r}."
        )


def check_compression(cfg: ExperimentConfig) -> None:
    """Checks of the `compression` sections: student widths, fixed config, teacher layers, patches, search."""
    student, teacher, head = cfg.model.student, cfg.model.teacher, cfg.model.head
    if student.num_blocks % 3:
        raise ConfigError(f"model.student.num_blocks {student.num_blocks}: the three width groups need a multiple of 3 (9).")
    if student.candidates is not None:
        widths = student.candidates
        if (not widths or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= student.filters
                              for v in widths)):
            raise ConfigError(
                f"model.student.candidates: expected a non-empty list of widths 1–{student.filters} "
                f"(model.student.filters), got {list(widths)!r}."
            )
    if student.fixed_config is not None:
        parts = str(student.fixed_config).split("_")
        if len(parts) != 8 or not all(p.isdigit() and 0 < int(p) <= student.filters for p in parts):
            raise ConfigError(
                f"model.student.fixed_config {student.fixed_config!r}: expected 8 widths joined by '_' "
                f"(e.g. 16_16_32_16_16_64_16_24), each at most model.student.filters ({student.filters})."
            )
    if teacher.checkpoint not in ("latest", "best", "epochs"):
        raise ConfigError(f"model.teacher.checkpoint {teacher.checkpoint!r}: choose latest, best or epochs.")
    if teacher.layers is not None and (
        len(teacher.layers) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in teacher.layers)
    ):
        raise ConfigError(
            f"model.teacher.layers: expected the 4 teacher list indices of the distilled maps (e.g. [9, 12, 15, 18]), "
            f"got {list(teacher.layers)!r}."
        )
    side = cfg.data.crop_size
    if side % 4:
        raise ConfigError(f"data.crop_size {side}: the generators downsample twice, so use a multiple of 4.")
    locations = (side // 4) ** 2
    if head.num_patches > locations:
        raise ConfigError(
            f"model.head.num_patches {head.num_patches} exceeds the {locations} locations of the {side // 4}×{side // 4} "
            f"distilled maps at data.crop_size {side}; lower it to at most {locations}."
        )
    if cfg.data.kind == "aligned" and cfg.eval.every_epochs:
        raise ConfigError(
            "eval.every_epochs on paired (aligned) data is not supported yet: the test split must be folders "
            "of source and target images; set eval.every_epochs: 0 and score the export with `main.py eval`."
        )
    search = cfg.search
    if search.criterion == "miou" and search.labels is None:
        raise ConfigError("search.criterion miou needs search.labels (the ground-truth label maps of search.source).")
    if search.after_training and search.budget is None:
        raise ConfigError("search.after_training needs search.budget (MACs at 256², e.g. 3e9 for horse→zebra).")


# === Overrides (`--set a.b=c`) ===


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"train.batch_size=4"` → (["train", "batch_size"], 4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.batch_size=4.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: the key must be a dotted path such as train.batch_size.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = _deep_copy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: '{part}' is a value, not a section.")
            node = child
        node[path[-1]] = value
    return raw


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


# === Public entry points ===


def _merge(defaults: Mapping, raw: Mapping) -> dict:
    """`raw` laid over `defaults`, section by section."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in defaults.items()}
    for key, value in raw.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def infer_method(raw: Mapping) -> str:
    """The method of a file written before `method:` existed: single-image data means SinCUT."""
    data = raw.get("data") if isinstance(raw.get("data"), Mapping) else {}
    return "sincut" if data.get("kind") == "single_image" else "cut"


def config_from_dict(raw: Optional[dict], overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Validates a raw mapping (a parsed YAML file) into an `ExperimentConfig`.

    The `method` key (inferred for files written before it existed) chooses the classes of the `model` and
    `loss` sections and the defaults laid under the file's values.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"The experiment file must be a YAML mapping of sections, got {type(raw).__name__}.")
    raw = apply_overrides(raw, list(overrides or []))
    name = raw.get("method")
    if name is None:
        name = infer_method(raw)
    elif not isinstance(name, str):
        raise ConfigError(f"method: expected a string, got {name!r}.")
    if name not in registry.METHODS:
        raise ConfigError(f"method: {registry.METHODS.unknown_message(name)}")
    method = registry.METHODS.get(name)  # a `psr.methods.Method`, imported on first use
    raw = _merge(method.defaults, {**raw, "method": name})
    sections = {
        "model": _build(method.model_config, _section(raw, "model"), "model"),
        "loss": _build(method.loss_config, _section(raw, "loss"), "loss"),
    }
    cfg = _build(ExperimentConfig, {k: v for k, v in raw.items() if k not in sections}, "")
    cfg = dataclasses.replace(cfg, **sections)
    if cfg.data.kind not in method.data_kinds:
        raise ConfigError(
            f"method {name!r} trains on data.kind {' or '.join(method.data_kinds)}, got {cfg.data.kind!r}; "
            f"change data.kind or the method."
        )
    _check_consistency(cfg)
    if method.check is not None:
        method.check(cfg)
    return cfg


def _section(raw: dict, name: str) -> dict:
    value = raw.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping, got {value!r}.")
    return value


def load_experiment(path: Union[str, Path], overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Reads, validates and returns an experiment. Raises `ConfigError` with a one-line message."""
    path = Path(path)
    text = read_config_text(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}. Fix the syntax and retry.") from None
    try:
        return config_from_dict(raw, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def config_to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        return [config_to_dict(v) for v in cfg]
    return cfg


def dump_config(cfg: ExperimentConfig, extra: Optional[dict] = None) -> str:
    """YAML text of the resolved configuration (plus derived values under `resolved:`)."""
    data = config_to_dict(cfg)
    text = yaml.safe_dump(data, sort_keys=False)
    if extra:
        text += "# Values derived from the data and the machine (not read back):\n"
        text += yaml.safe_dump({"resolved": extra}, sort_keys=False)
    return text


# === Resuming a run directory ===

# Keys whose change does not make a run directory a different experiment. Changing them on resume is
# accepted (with a notice for the ones that change training): epochs extend a run; the learning rate, the
# loss weights and the loss switches are the fixes a non-finite loss asks for. None of them creates, removes
# or reshapes a variable, so the checkpoint still loads.
RESUMABLE_KEYS = (
    ("log",), ("export",), ("eval",), ("name",), ("loss",),
    ("train", "jit_compile"), ("train", "epochs"), ("train", "decay_epochs"), ("train", "distribute"),
    ("train", "learning_rate"), ("train", "beta_1"), ("train", "beta_2"), ("train", "epsilon"),
    ("train", "deterministic"),
    # Same weights and values either way (memory and speed only); runs stored before `auto` say `true`.
    ("model", "generator", "fused"), ("model", "discriminator", "fused"),
    ("search",),  # the evolution search runs after training, on the trained supernet
)
# Of those, the ones that only change bookkeeping (no notice).
_QUIET_KEYS = (("log",), ("export",), ("eval",), ("name",), ("train", "jit_compile"), ("train", "epochs"),
               ("train", "decay_epochs"), ("search",))


def _differences(old: dict, new: dict, prefix: tuple = ()) -> list[tuple]:
    keys = []
    for key in sorted(set(old) | set(new)):
        path = prefix + (key,)
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differences(a, b, path)
        elif a != b:
            keys.append(path)
    return keys


def _value(tree: dict, path: tuple):
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def resume_notices(path: Union[str, Path], cfg: ExperimentConfig) -> list[str]:
    """Refuses to resume a run whose stored configuration (`path`, a run's config.yaml) is another experiment.

    Returns notices for the resumable keys that changed (e.g. a lower learning rate after a NaN).
    """
    path = Path(path)
    if not path.is_file():
        return []
    run_dir = path.parent
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raw.pop("resolved", None)
    try:
        # Read back through the parser: files written before a key existed get its default (`method`, ...).
        old = config_to_dict(config_from_dict(raw))
    except ConfigError:
        old = raw
    new = config_to_dict(cfg)
    changed = _differences(old, new)
    refused = [k for k in changed if not any(k[: len(p)] == p for p in RESUMABLE_KEYS)]
    if refused:
        names = ", ".join(".".join(k) for k in refused[:5])
        raise ConfigError(
            f"{run_dir} holds a run of a different configuration (changed: {names}). "
            "Use another run directory (--set log.run_dir=...) or delete it to start over."
        )
    return [
        f"{'.'.join(k)} {_value(old, k)!r} → {_value(new, k)!r}"
        for k in changed if not any(k[: len(p)] == p for p in _QUIET_KEYS)
    ]


def load_run_config(run_dir: Union[str, Path]) -> ExperimentConfig:
    """Reads `<run_dir>/config.yaml` written by `psr run` (ignores the informational `resolved:` section)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a psr run directory (no config.yaml). Pass the folder `main.py run` created.")
    raw = yaml.safe_load(read_config_text(path)) or {}
    raw.pop("resolved", None)
    try:
        return config_from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# === Load-time checks (sizes, metric names, the file itself) ===

# The StyleGAN2 networks' channel tables exist for these resolutions (psr/models/stylegan2.py).
_STYLEGAN2_RESOLUTIONS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
# The CUT ResNet generator halves the resolution twice (two stride-2 convolutions or blur-downsamplings).
_RESNET_DOWNSAMPLINGS = 2


def _stylegan2_table_resolution(crop_size: int) -> int:
    """2^round(log2(crop_size)) as the StyleGAN2 networks compute it (NumPy's round: half to even)."""
    exponent = math.log2(crop_size)
    nearest = round(exponent)  # Python's round is half to even too
    return 2 ** nearest


def check_crop_size(cfg: ExperimentConfig) -> None:
    """`data.crop_size` must suit the generator's downsamplings and the networks' size tables."""
    crop = cfg.data.crop_size
    g, d = cfg.model.generator, cfg.model.discriminator
    if g.architecture == "resnet" or cfg.data.kind == "unaligned":
        multiple = 2 ** _RESNET_DOWNSAMPLINGS
        if crop % multiple:
            why = "the ResNet generator halves it twice" if g.architecture == "resnet" else "the data pipeline"
            raise ConfigError(
                f"data.crop_size {crop} is not a multiple of {multiple} ({why}); "
                f"use {crop - crop % multiple or multiple} or {crop + multiple - crop % multiple}."
            )
    if g.architecture == "stylegan2":
        multiple = 2 ** g.num_downsampling
        if crop % multiple:
            raise ConfigError(
                f"data.crop_size {crop} is not a multiple of {multiple} (2^model.generator.num_downsampling); "
                f"use {crop - crop % multiple or multiple} or {crop + multiple - crop % multiple}."
            )
        table = _stylegan2_table_resolution(crop)
        if table not in _STYLEGAN2_RESOLUTIONS or table // multiple not in _STYLEGAN2_RESOLUTIONS:
            raise ConfigError(
                f"data.crop_size {crop} with model.generator.num_downsampling {g.num_downsampling} is outside the "
                f"StyleGAN2 generator's tables (2^round(log2(crop_size)) / 2^num_downsampling must lie in 4..1024); "
                "choose another crop_size or num_downsampling."
            )
    if d.architecture == "stylegan2" and crop not in _STYLEGAN2_RESOLUTIONS:
        raise ConfigError(
            f"data.crop_size {crop} must be a power of two from 4 to 1024 for the StyleGAN2 discriminator; "
            f"use {_stylegan2_table_resolution(min(max(crop, 4), 1024))}."
        )


def check_eval_metrics(cfg: ExperimentConfig) -> None:
    """`eval.metrics` names must be registered metrics (checked without importing TensorFlow)."""
    from psr.registry import unknown_metric_message

    problem = unknown_metric_message(cfg.eval.metrics)
    if problem:
        raise ConfigError(f"eval.metrics: {problem}")


def minimum_image_side(generator: GeneratorConfig, pad_multiple: int = 4) -> int:
    """The smallest image side `translate` accepts: inputs are reflect-padded to `pad_multiple`, then
    the generator's own reflection pads need sides larger than the padding at every resolution.

    - reflect-padding a side h up to a multiple m adds (-h) % m < h pixels (reflection repeats no edge);
    - ResNet: the side after the two halvings feeds the blocks' 1-pixel reflection pads, so it must be
      >= 2 (padded side >= 8); without blocks, the 3-pixel pads at full resolution need >= 4;
    - StyleGAN2: zero padding only; any padded side works.
    """
    if generator.architecture == "resnet":
        needed = 2 * 2 ** _RESNET_DOWNSAMPLINGS if generator.num_blocks else 4
    else:
        needed = 1
    return minimum_padded_side(needed, pad_multiple)


def minimum_padded_side(needed: int, pad_multiple: int) -> int:
    """The smallest side from which every side reflect-pads to a multiple of `pad_multiple` that is >= `needed`."""
    side = 1
    # Smallest h from which every larger side also works (the reflect rule fails again below m/2 + 1).
    while True:
        if all(_pads_to(h, pad_multiple, needed) for h in range(side, side + 2 * pad_multiple + needed)):
            return side
        side += 1


def _pads_to(side: int, multiple: int, needed: int) -> bool:
    pad = (-side) % multiple
    return (pad == 0 or pad < side) and side + pad >= needed


def read_config_text(path: Union[str, Path]) -> str:
    """The text of an experiment file; a missing path, a folder or a file that is not UTF-8 text is refused."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{path} is a folder, not an experiment file; pass a YAML file such as experiments/quickstart.yaml."
        )
    if not path.is_file():
        raise ConfigError(f"Experiment file not found: {path}. Pass a YAML file such as experiments/quickstart.yaml.")
    try:
        data = path.read_bytes()
    except OSError as err:
        from psr.errors import describe_os_error

        raise ConfigError(describe_os_error(err, path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x}); pass the experiment YAML file "
            "or save it as UTF-8."
        ) from None
