"""Name → implementation tables, and every valid-choice list of the configuration.

This module is the one owner of the names a user may write in a YAML file for a
choice (a method, an architecture, a loss variant, a data kind). Config
validation, builders and trainers all read these tables, so a name is added in
one place. It imports nothing heavy: entries are "module:attribute" strings
resolved on first use, so validating a config never loads TensorFlow.

A new method or architecture is registered from outside (a plug-in, a test)
with `Registry.register`, without touching the builders or the experiment.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import Any, Callable, Iterable, Iterator, Union

Target = Union[str, Callable[..., Any], type]


class Registry:
    """An ordered table of names → callables (or lazily imported "module:attribute" strings).

    Args:
        kind: what the names are, for error messages ("method", "generator architecture").
        entries: initial `{name: target}` pairs.
    """

    def __init__(self, kind: str, entries: dict[str, Target] | None = None):
        self.kind = kind
        self._entries: dict[str, Target] = dict(entries or {})

    def register(self, name: str, target: Target, *, replace: bool = False) -> Target:
        if not replace and name in self._entries:
            raise ValueError(f"A {self.kind} named {name!r} is already registered.")
        self._entries[name] = target
        return target

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{name!r} is not a known {self.kind} ({', '.join(self.names())}).{hint}"

    def get(self, name: str) -> Any:
        """The registered object, importing it on first use."""
        if name not in self._entries:
            raise KeyError(self.unknown_message(name))
        target = self._entries[name]
        if isinstance(target, str):
            module, _, attribute = target.partition(":")
            target = getattr(importlib.import_module(module), attribute)
            self._entries[name] = target
        return target


# === Simple choice lists (the owners of the behaviour import them from here) ===

GAN_MODES = ("lsgan", "nonsaturating", "hinge")
REDUCTIONS = ("mean", "sum")  # over layers and over the X→Y / Y→Y branches
SRC_DIVERGENCES = ("jsd", "kl", "l1", "l2")
REPORTED_VALUES = ("infonce", "dce")
GAMMA_MODES = ("linear", "fixed")
SCHEDULE_UNITS = ("epoch", "step")  # what a schedule's time axis counts
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width_and_crop", "none")
DIRECTIONS = ("AtoB", "BtoA")
SYNTHETIC_KINDS = ("shapes", "rocket_pair", "scenes", "paired_shapes")
# The data kind each generated dataset is: shapes → unaligned, rocket_pair → single_image, scenes → multidomain,
# paired_shapes → aligned.
SYNTHETIC_DATA_KINDS = {"shapes": "unaligned", "rocket_pair": "single_image", "scenes": "multidomain",
                        "paired_shapes": "aligned"}
DISTRIBUTE_MODES = ("none", "mirrored", "multi_worker")
FEATURE_EXTRACTORS = ("auto", "pytorch-fid", "torchvision", "keras-imagenet")  # FID/KID features
LPIPS_REFERENCES = ("input", "target")  # what a translation is compared with by the paired LPIPS metric
SEGMENTATION_NETWORKS = ("drn_d_22", "drn_d_105")  # Cityscapes FCN-score networks (single-modal, compression)
LABEL_FORMATS = ("color", "label_ids", "train_ids")
CHANNEL_CONFIG_SETS = ("channels-64-cycleGAN", "channels-64-pix2pix")  # compression student width lists
RECON_TARGETS = ("auto", "teacher", "ground_truth")  # compression L1: auto = teacher (unpaired) / truth (paired)
SEARCH_CRITERIA = ("fid", "miou", "teacher_psnr")  # evolution search metric of a compression sub-network
CYCLE_INPUTS = ("real", "fake")  # stargan2 reconstruction input: G(x, E(x)) (code) or G(G(x, s), E(x))


# === Metric names (the metric modules register exactly these; checked without importing TensorFlow) ===

BUILTIN_METRICS: tuple[str, ...] = ("fid", "kid")  # psr.metrics.registry: distribution metrics
BUILTIN_PAIRED_METRICS: tuple[str, ...] = ("lpips", "fcn", "miou")  # psr.metrics.paired


def known_metric_names() -> list[str]:
    """The built-in names plus any registered so far (without importing the registries)."""
    names = set(BUILTIN_METRICS) | set(BUILTIN_PAIRED_METRICS)
    registry = sys.modules.get("psr.metrics.registry")
    if registry is not None:
        names |= set(registry.list_metrics())
    paired = sys.modules.get("psr.metrics.paired")
    if paired is not None:
        names |= set(paired.list_paired_metrics())
    return sorted(names)


def unknown_metric_message(names: Iterable[str]) -> str | None:
    """"Unknown metric 'fdi' ... Did you mean 'fid'?" for the first unknown name, or None when all are known."""
    known = known_metric_names()
    names = list(names)
    if not names:
        return f"no metric given; choose from {', '.join(known)}"
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            return f"unknown metric {name!r}; valid metrics: {', '.join(known)}.{hint}"
    return None


# === Tables of implementations ===

#: Experiment methods: name → `psr.methods.Method` (its config sections and builder).
METHODS = Registry("method", {
    "cut": "psr.methods:CUT_METHOD",
    "sincut": "psr.methods:SINCUT_METHOD",
    "stargan2": "psr.methods:STARGAN2_METHOD",
    "compression": "psr.methods:COMPRESSION_METHOD",
})

#: Generator architectures: name → builder `(GeneratorConfig, channels, crop_size) -> keras.Model`.
GENERATORS = Registry("generator architecture", {
    "resnet": "psr.builders:resnet_generator",
    "stylegan2": "psr.builders:stylegan2_generator",
})

#: Discriminator architectures: name → builder `(DiscriminatorConfig, channels, crop_size) -> keras.Model`.
DISCRIMINATORS = Registry("discriminator architecture", {
    "patchgan": "psr.builders:patchgan_discriminator",
    "stylegan2": "psr.builders:stylegan2_discriminator",
})

#: Patch contrastive losses: name → builder `(LossConfig, weight_temperature) -> keras.losses.Loss`.
CONTRASTIVE_LOSSES = Registry("contrastive loss", {
    "hdce": "psr.builders:hard_dce_loss",
    "dce": "psr.builders:dce_loss",
    "patchnce": "psr.builders:patchnce_loss",
})

#: Training data kinds: name → builder `(DataConfig, batch_size, seed, create) -> dataset object`.
DATA_KINDS = Registry("data kind", {
    "unaligned": "psr.data.builders:unaligned_training_data",
    "single_image": "psr.data.builders:single_image_training_data",
    "multidomain": "psr.data.builders:multidomain_training_data",
    "aligned": "psr.data.builders:aligned_training_data",
})
