"""Methods: what `method:` in an experiment file selects.

A `Method` names the typed config classes of its `model` and `loss` sections,
the defaults it lays under the user's YAML, and the builder that turns those
sections into a trainer (`psr.trainers.base.Trainer`). The experiment runner
only talks to this interface, so a new application registers a `Method` in
`psr.registry.METHODS` and needs no change to `psr/experiment.py`.

This module is light (no TensorFlow): `--dry-run` resolves a method without
building anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

from psr.registry import METHODS


@dataclass(frozen=True)
class TrainerInputs:
    """What a trainer builder needs besides its own typed sections; derived from the data, not the YAML."""

    image_size: int  # training crop side
    steps_per_epoch: int
    seed: Optional[int] = None
    channels: int = 3
    domains: tuple = ()  # domain names of multi-domain data (sorted folder names), else empty
    paired: bool = False  # each source image comes with its ground-truth target (data.kind aligned)


@dataclass(frozen=True)
class Method:
    """One application of the losses.

    Attributes:
        name: the `method:` value.
        model_config, loss_config: dataclasses of the `model` and `loss` sections.
        build_trainer: `(model_cfg, loss_cfg, train_cfg, inputs: TrainerInputs) -> Trainer`, or a
            "module:attribute" string naming it (imported on first use).
        build_inference_network: `(model_cfg, image_size) -> keras.Model`, the network that the trainer's
            `inference_network()` returns, built alone (export, translate and evaluation of a run directory
            load its weights from a checkpoint); callable or "module:attribute".
        defaults: raw YAML values laid under the user's file (the user's keys win).
        data_kinds: `data.kind` values this method trains on.
        description: one line for `--dry-run` and errors.
    """

    name: str
    model_config: type
    loss_config: type
    build_trainer: Union[str, Callable[..., Any]]
    build_inference_network: Union[str, Callable[..., Any]]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    data_kinds: tuple = ("unaligned",)
    description: str = ""
    check: Optional[Callable[[Any], None]] = None  # cross-field checks of the method's sections
    # The paper's evaluation protocol (`psr.metrics.extractors.PAPER_FEATURES`): which FID features `auto` uses.
    eval_protocol: str = "single_modal"
    # `(network, path, pad_multiple, inputs=..., force=..., fix=..., domains=...) -> Path`: writes the SavedModel.
    export: Union[str, Callable[..., Any]] = "psr.export:export_generator"
    # `(data_cfg, pad_multiple, run, network) -> dict | None`: scores on embedded data with ground truth.
    report: Optional[Union[str, Callable[..., Any]]] = "psr.experiment:report_content_scores"
    # `(cfg) -> None`, run before the data and trainer are built (compression: make sure the teacher exists).
    prepare: Optional[Union[str, Callable[..., Any]]] = None
    # `(cfg, run, network) -> None`, after training and before the export (compression: search, pick the config).
    after_training: Optional[Union[str, Callable[..., Any]]] = None
    # `(network, run_dir, cfg) -> network`: the network a run directory's export / translate / eval use
    # (compression: the supernet set to the searched configuration).
    select_network: Optional[Union[str, Callable[..., Any]]] = None

    def hook(self, name: str) -> Optional[Callable[..., Any]]:
        """The optional hook `prepare`, `after_training` or `select_network`, resolved; None when unset."""
        target = getattr(self, name)
        return None if target is None else _resolve(target)

    def exporter(self) -> Callable[..., Any]:
        return _resolve(self.export)

    def reporter(self) -> Optional[Callable[..., Any]]:
        return None if self.report is None else _resolve(self.report)

    def trainer_builder(self) -> Callable[..., Any]:
        return _resolve(self.build_trainer)

    def inference_network_builder(self) -> Callable[..., Any]:
        return _resolve(self.build_inference_network)


def _resolve(target: Union[str, Callable[..., Any]]) -> Callable[..., Any]:
    if isinstance(target, str):
        import importlib

        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return target


def get_method(name: str) -> Method:
    """The registered method `name` (a one-line `ConfigError` naming the valid ones otherwise)."""
    from psr.errors import ConfigError

    if name not in METHODS:
        raise ConfigError(f"method: {METHODS.unknown_message(name)}")
    return METHODS.get(name)


def _cut_and_sincut() -> tuple[Method, Method]:
    from psr.config import LossConfig, ModelConfig, check_single_modal

    cut = Method(
        name="cut",
        model_config=ModelConfig,
        loss_config=LossConfig,
        build_trainer="psr.builders:build_cut_trainer",
        build_inference_network="psr.builders:build_cut_generator",
        check=check_single_modal,
        data_kinds=("unaligned",),
        description="single-modal unpaired translation (CUT + hDCE/SRC; spec single_modal.md §1–§6)",
    )
    # SinCUT is the CUT trainer with StyleGAN2-style networks on one image pair (spec §4.6–4.7); its
    # defaults are the official single-image options, so `method: sincut` alone gives them.
    sincut = dataclasses.replace(
        cut,
        name="sincut",
        data_kinds=("single_image",),
        defaults={
            "data": {"kind": "single_image", "load_size": 1024, "crop_size": 64},
            "model": {
                "generator": {"architecture": "stylegan2", "filters": 10, "num_blocks": 6},
                "discriminator": {"architecture": "stylegan2", "filters": 8},
                "head": {"num_patches": 1, "layers": [0, 2, 4]},
            },
            "loss": {
                "gan_mode": "nonsaturating", "contrastive": "dce", "lambda_contrastive": 4.0, "lambda_src": 10.0,
                "lambda_identity": 1.0, "lambda_r1": 1.0, "negatives_from_minibatch": True,
                "curriculum": {"start": 200.0, "end": 40.0},
            },
            "train": {"epochs": 8, "decay_epochs": 8, "batch_size": 16, "learning_rate": 0.002,
                      "beta_1": 0.0, "beta_2": 0.99},
        },
        description="high-resolution single-image translation (SinCUT + hDCE/SRC; spec single_modal.md §4.6–4.7)",
    )
    return cut, sincut


CUT_METHOD, SINCUT_METHOD = _cut_and_sincut()


def _stargan2() -> Method:
    from psr.config import MultimodalLossConfig, MultimodalModelConfig, check_multimodal

    # The released code's settings (spec multimodal §1): 100k iterations of batch 8, counted here as 100
    # "epochs" of 1,000 iterations (samples every 1k, snapshots every 10k, as the official cadence).
    return Method(
        name="stargan2",
        model_config=MultimodalModelConfig,
        loss_config=MultimodalLossConfig,
        build_trainer="psr.builders:build_stargan2_trainer",
        build_inference_network="psr.builders:build_stargan2_translator",
        check=check_multimodal,
        data_kinds=("multidomain",),
        defaults={
            "data": {"kind": "multidomain", "load_size": 256, "crop_size": 256, "random_resized_crop": 0.5},
            "train": {"epochs": 100, "decay_epochs": 0, "steps_per_epoch": 1000, "batch_size": 8,
                      "learning_rate": 1e-4, "mapping_learning_rate": 1e-6, "beta_1": 0.0, "beta_2": 0.99,
                      "weight_decay": 1e-4, "seed": 777},
            "log": {"log_every_steps": 10, "checkpoint_every_epochs": 10},
        },
        description="multi-modal translation (StarGAN v2 + hDCE/SRC; spec multimodal.md)",
        eval_protocol="multimodal",
        export="psr.export:export_multimodal",
        report="psr.evaluation_multimodal:report_multimodal_scores",
    )


STARGAN2_METHOD = _stargan2()


def _compression() -> Method:
    from psr.config import CompressionLossConfig, CompressionModelConfig, check_compression

    # The released horse→zebra settings (spec §1.1): batch 1, seed 233, 200 + 200 epochs, 286 → 256 crops.
    return Method(
        name="compression",
        model_config=CompressionModelConfig,
        loss_config=CompressionLossConfig,
        build_trainer="psr.builders:build_compression_trainer",
        build_inference_network="psr.builders:build_compression_student",
        check=check_compression,
        data_kinds=("unaligned", "aligned"),
        defaults={
            "data": {"load_size": 286, "crop_size": 256},
            "train": {"epochs": 200, "decay_epochs": 200, "batch_size": 1, "learning_rate": 2e-4,
                      "beta_1": 0.5, "beta_2": 0.999, "seed": 233},
        },
        description="GAN compression (Fast GAN Compression + hDCE/SRC transfer; spec compression.md)",
        export="psr.compression:export_subnetwork",
        prepare="psr.compression:prepare_teacher",
        after_training="psr.compression:after_training",
        select_network="psr.compression:select_network",
    )


COMPRESSION_METHOD = _compression()
