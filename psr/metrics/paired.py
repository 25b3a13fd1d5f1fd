"""Paired metrics by name: LPIPS and the Cityscapes segmentation scores.

The metrics of `psr.metrics.registry` compare two *distributions* (feature
statistics of two folders). The metrics here compare each translation with its
own partner: LPIPS with the input it came from (or its paired target), `fcn` and
`miou` with the ground-truth labels of the scene. They register with
`@register_paired_metric(name)` and take `(inputs: PairedInputs, shared: dict,
**options)`; `shared` lets `fcn` and `miou` segment the images once.

`split_metric_names` checks names against both registries and
`check_paired_requirements` checks weights files and label folders, so
`main.py eval` fails in one line before any image is translated.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from psr.errors import ConfigError, DatasetError
from psr.registry import LPIPS_REFERENCES

PairedMetric = Callable[..., dict]
_PAIRED_METRICS: dict[str, PairedMetric] = {}


@dataclass(frozen=True)
class PairedInputs:
    """Folders a paired metric may use.

    Attributes:
        generated_dir: the translations (`<stem>.png` per source image).
        source_dir: the images that were translated.
        target_dir: target-domain images, paired by name for paired datasets
            (Cityscapes `i_A` ↔ `i_B`); `None` when there is none.
        labels_dir: ground-truth label maps of the translated scenes; `None` when
            there are none.
    """

    generated_dir: str
    source_dir: str | None = None
    target_dir: str | None = None
    labels_dir: str | None = None


def register_paired_metric(name: str) -> Callable[[PairedMetric], PairedMetric]:
    """Decorator that registers a paired metric `(inputs, shared, **options) -> dict` under `name`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"A metric name must be a non-empty string. Received: name={name!r}")

    def decorator(function: PairedMetric) -> PairedMetric:
        if name in _PAIRED_METRICS and _PAIRED_METRICS[name] is not function:
            raise ValueError(f"A paired metric named {name!r} is already registered. Received: name={name!r}")
        _PAIRED_METRICS[name] = function
        return function

    return decorator


def list_paired_metrics() -> list[str]:
    """Names of the registered paired metrics, sorted."""
    return sorted(_PAIRED_METRICS)


def split_metric_names(names: str | Iterable[str]) -> tuple[list[str], list[str]]:
    """(distribution metric names, paired metric names) of `names`, in the given order.

    Raises:
        ConfigError: an empty list, or a name in neither registry (one line listing the valid names).
    """
    from psr.metrics.registry import list_metrics
    from psr.registry import unknown_metric_message

    names = [names] if isinstance(names, str) else list(names)
    problem = unknown_metric_message(names)
    if problem:
        raise ConfigError(f"--metrics: {problem}")
    distribution, paired = set(list_metrics()), set(list_paired_metrics())
    return [n for n in names if n in distribution], [n for n in names if n in paired]


# Metric name -> the result key that stands for it (e.g. to pick the best checkpoint).
_RESULT_KEYS = {"fcn": "fcn_miou"}
_HIGHER_IS_BETTER = {"fcn", "fcn_miou", "fcn_pixel_acc", "fcn_class_acc", "miou"}


def result_key(name: str) -> str:
    """The result key a metric name stands for (`fcn` -> `fcn_miou`; others: the name itself)."""
    return _RESULT_KEYS.get(name, name)


def higher_is_better(name: str) -> bool:
    """True for the segmentation scores; FID, KID and paired LPIPS are distances (lower is better)."""
    return name in _HIGHER_IS_BETTER


# === Pairing ===


def _images_by_stem(folder: str, role: str) -> dict[str, str]:
    from psr.data.images import list_images

    return {os.path.splitext(os.path.relpath(p, folder))[0]: p for p in list_images(folder, role=role)}


def _partner_stems(stem: str) -> list[str]:
    # psr's Cityscapes dataset names a scene `i_A.jpg` (photo) and `i_B.jpg` (labels).
    stems = [stem]
    match = re.fullmatch(r"(.*)_([AB])", stem)
    if match:
        stems.append(f"{match.group(1)}_{'B' if match.group(2) == 'A' else 'A'}")
    return stems


def pair_by_name(generated_dir: str, partner_dir: str, role: str) -> list[tuple[str, str]]:
    """(generated, partner) paths paired by file stem (or the `_A` ↔ `_B` twin), sorted by stem.

    Raises:
        DatasetError: a generated image without a partner in `partner_dir`.
    """
    generated = _images_by_stem(os.fspath(generated_dir), role="translations")
    partners = _images_by_stem(os.fspath(partner_dir), role=role)
    pairs = []
    for stem in sorted(generated):
        match = next((partners[s] for s in _partner_stems(stem) if s in partners), None)
        if match is None:
            raise DatasetError(
                f"No {role} for {generated[stem]} in {partner_dir} (looked for "
                f"{' or '.join(s + '.*' for s in _partner_stems(stem))}): name each file like its source image"
            )
        pairs.append((generated[stem], match))
    return pairs


# === Requirements ===

_NEEDS_LABELS = ("fcn", "miou")


def check_paired_requirements(names: Iterable[str], inputs_have_labels: bool, **options) -> None:
    """Raises a one-line `PsrError` when a paired metric lacks a weights file or its labels.

    Called before any translation. `options` are the `compute_paired_metrics`
    options (weights paths, label format, ...).
    """
    from psr.metrics.lpips import (
        ALEXNET_WEIGHTS_FILENAME,
        ALEXNET_WEIGHTS_SOURCE,
        LPIPS_WEIGHTS_FILENAME,
        LPIPS_WEIGHTS_SOURCE,
    )
    from psr.metrics.segmentation import (
        LABEL_FORMATS,
        PROTOCOLS,
        SEGMENTATION_WEIGHTS,
        WEIGHTS_SOURCE,
    )

    names = list(names)
    if "lpips" in names and options.get("lpips_model") is None:
        for key, flag, filename, source in (
            ("lpips_alexnet_weights", "--lpips-alexnet-weights", ALEXNET_WEIGHTS_FILENAME, ALEXNET_WEIGHTS_SOURCE),
            ("lpips_weights", "--lpips-weights", LPIPS_WEIGHTS_FILENAME, LPIPS_WEIGHTS_SOURCE),
        ):
            path = options.get(key)
            if path is None or not os.path.isfile(os.fspath(path)):
                found = "not given" if path is None else f"not found: {path}"
                raise ConfigError(
                    f"lpips needs {filename} ({found}): download it ({source}) and pass {flag} PATH (eval.{key})"
                )
    if options.get("lpips_against", "input") not in LPIPS_REFERENCES:
        raise ConfigError(f"lpips_against must be input or target, got {options['lpips_against']!r}")
    if any(name in names for name in _NEEDS_LABELS):
        network = options.get("segmentation_network", "drn_d_22")
        if network not in PROTOCOLS:
            raise ConfigError(f"Unknown segmentation network {network!r}: use drn_d_22 or drn_d_105")
        if options.get("label_format", "color") not in LABEL_FORMATS:
            raise ConfigError(f"label_format must be one of {', '.join(LABEL_FORMATS)}")
        if not inputs_have_labels:
            raise ConfigError(
                "fcn/miou need Cityscapes ground-truth labels, which this run does not have: pass "
                "--segmentation-labels DIR (label maps named like the source images, e.g. datasets/cityscapes/testB)"
            )
        if options.get("segmenter") is None:
            path = options.get("segmentation_weights")
            if path is None or not os.path.isfile(os.fspath(path)):
                found = "not given" if path is None else f"not found: {path}"
                raise ConfigError(
                    f"fcn/miou need {SEGMENTATION_WEIGHTS[network]} ({found}): download it ({WEIGHTS_SOURCE}) "
                    "and pass --segmentation-weights PATH (eval.segmentation_weights)"
                )


# === Built-in paired metrics ===


@register_paired_metric("lpips")
def lpips_metric(
    inputs: PairedInputs, shared: dict, lpips_alexnet_weights: str | None = None,
    lpips_weights: str | None = None, lpips_against: str = "input", lpips_model=None,
) -> dict:
    """Mean LPIPS of each translation against its input (`lpips_against="input"`) or paired target."""
    from psr.metrics.lpips import build_lpips, folder_lpips

    partner_dir = inputs.source_dir if lpips_against == "input" else inputs.target_dir
    if partner_dir is None:
        raise ConfigError(f"lpips against {lpips_against} needs that folder, which this evaluation does not have")
    model = lpips_model if lpips_model is not None else build_lpips(lpips_alexnet_weights, lpips_weights)
    pairs = pair_by_name(inputs.generated_dir, partner_dir, role=f"{lpips_against} image")
    return {"lpips": folder_lpips(model, pairs)}


def _segmentation_hist(inputs: PairedInputs, shared: dict, network, weights, label_format, segmenter):
    if "segmentation_hist" not in shared:
        from psr.metrics.segmentation import build_segmenter, segmentation_hist

        if inputs.labels_dir is None:
            raise ConfigError("fcn/miou need ground-truth labels: pass --segmentation-labels DIR")
        segmenter = segmenter if segmenter is not None else build_segmenter(network, weights)
        pairs = pair_by_name(inputs.generated_dir, inputs.labels_dir, role="label map")
        shared["segmentation_hist"] = segmentation_hist(pairs, segmenter, label_format)
    return shared["segmentation_hist"]


@register_paired_metric("fcn")
def fcn_metric(
    inputs: PairedInputs, shared: dict, segmentation_network: str = "drn_d_22",
    segmentation_weights: str | None = None, label_format: str = "color", segmenter=None,
) -> dict:
    """FCN scores (percent) of the translated photos against the GT labels: pixel acc, class acc, mIoU."""
    from psr.metrics.segmentation import segmentation_scores

    scores = segmentation_scores(_segmentation_hist(
        inputs, shared, segmentation_network, segmentation_weights, label_format, segmenter
    ))
    return {"fcn_pixel_acc": scores["pixel_acc"], "fcn_class_acc": scores["class_acc"], "fcn_miou": scores["miou"]}


@register_paired_metric("miou")
def miou_metric(
    inputs: PairedInputs, shared: dict, segmentation_network: str = "drn_d_22",
    segmentation_weights: str | None = None, label_format: str = "color", segmenter=None,
) -> dict:
    """Mean IoU (percent, nanmean over the 19 classes) of the translated photos' segmentation."""
    from psr.metrics.segmentation import segmentation_scores

    hist = _segmentation_hist(inputs, shared, segmentation_network, segmentation_weights, label_format, segmenter)
    return {"miou": segmentation_scores(hist)["miou"]}


def _option_names(function: PairedMetric) -> set[str]:
    return set(list(inspect.signature(function).parameters)[2:])


def compute_paired_metrics(names: Iterable[str], inputs: PairedInputs, **options) -> dict[str, float]:
    """Computes the named paired metrics; each gets the options its signature names.

    Raises:
        ConfigError: an unknown name or option.
    """
    names = list(names)
    unknown = [n for n in names if n not in _PAIRED_METRICS]
    if unknown:
        raise ConfigError(f"Unknown paired metric {unknown[0]!r}; valid: {', '.join(list_paired_metrics())}")
    known = set().union(*(_option_names(f) for f in _PAIRED_METRICS.values()))
    extra = sorted(set(options) - known)
    if extra:
        raise ConfigError(f"Unknown paired-metric option {extra[0]!r}; known: {', '.join(sorted(known))}")
    shared: dict = {}
    results: dict[str, float] = {}
    for name in names:
        function = _PAIRED_METRICS[name]
        accepted = _option_names(function)
        values = function(inputs, shared, **{k: v for k, v in options.items() if k in accepted})
        results.update({key: float(value) for key, value in values.items()})
    return results
