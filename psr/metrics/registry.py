"""Metrics by name: a registry of distribution metrics and folder evaluation.

A metric is a function `(generated, reference, **its_options) -> dict[str, float]`
of two `FeatureStatistics`, registered with `@register_metric("name")`. The CLI
checks user-given names against `list_metrics()`; `compute_metrics` hands each
metric only the options its signature names.
"""

from __future__ import annotations

import difflib
import inspect
import os
from typing import Callable, Iterable

from psr.errors import DatasetError
from psr.metrics.distances import (
    FeatureStatistics,
    frechet_distance,
    kernel_inception_distance,
)
from psr.metrics.features import (
    FeatureExtractor,
    InceptionFeatures,
    _list_folder_images,
    folder_statistics,
)

MetricFunction = Callable[..., "dict[str, float] | float"]

_METRICS: dict[str, MetricFunction] = {}


def register_metric(name: str) -> Callable[[MetricFunction], MetricFunction]:
    """Decorator that registers a metric function under `name`.

    The function takes `(generated, reference, **options)` (two
    `FeatureStatistics`) and returns a dict of results (or one float, reported
    under `name`). Its keyword options become options of `compute_metrics`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A metric name must be a non-empty string. Received: name={name!r}")

    def decorator(function: MetricFunction) -> MetricFunction:
        if name in _METRICS and _METRICS[name] is not function:
            raise ValueError(f"A metric named {name!r} is already registered. Received: name={name!r}")
        _METRICS[name] = function
        return function

    return decorator


def list_metrics() -> list[str]:
    """Names of the registered metrics, sorted."""
    return sorted(_METRICS)


def _check_metric_names(names: str | Iterable[str]) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError(
            f"No metric requested; valid metrics: {', '.join(list_metrics())}. Received: names={names}"
        )
    for name in names:
        if name not in _METRICS:
            closest = difflib.get_close_matches(str(name), list_metrics(), n=1)
            hint = f" Did you mean {closest[0]!r}?" if closest else ""
            raise ValueError(
                f"Unknown metric {name!r}; valid metrics: {', '.join(list_metrics())}.{hint} "
                f"Received: name={name!r}"
            )
    return names


def _option_names(function: MetricFunction) -> set[str]:
    parameters = list(inspect.signature(function).parameters.values())[2:]
    return {
        parameter.name
        for parameter in parameters
        if parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def compute_metrics(
    names: str | Iterable[str],
    generated: FeatureStatistics,
    reference: FeatureStatistics,
    **options,
) -> dict[str, float]:
    """Computes the named metrics between generated and reference statistics.

    Args:
        names: metric names (see `list_metrics()`), or one name.
        generated: statistics of the generated images.
        reference: statistics of the real (reference) images.
        **options: metric options, e.g. `kid_subset_size=500`; each metric gets
            the options its signature names. An option that no registered metric
            knows is an error (a typo would otherwise be ignored silently).

    Returns:
        Merged results, e.g. `{"fid": 34.1, "kid": 0.0123, "kid_std": 0.0011}`.

    Raises:
        ValueError: for an unknown metric name (listing the valid ones and the
            closest match) or an unknown option.
    """
    names = _check_metric_names(names)
    known_options = set().union(*(_option_names(function) for function in _METRICS.values()))
    unknown_options = sorted(set(options) - known_options)
    if unknown_options:
        raise ValueError(
            f"Unknown metric option(s) {', '.join(unknown_options)}; known options: "
            f"{', '.join(sorted(known_options))}. Received: {unknown_options}"
        )
    results: dict[str, float] = {}
    for name in names:
        function = _METRICS[name]
        accepted = _option_names(function)
        value = function(generated, reference, **{k: v for k, v in options.items() if k in accepted})
        if isinstance(value, dict):
            results.update({key: float(item) for key, item in value.items()})
        else:
            results[name] = float(value)
    return results


# === Built-in metrics ===


@register_metric("fid")
def fid_metric(
    generated: FeatureStatistics, reference: FeatureStatistics, fid_eps: float = 1e-6
) -> dict:
    """Fréchet inception distance between the fitted Gaussians."""
    distance = frechet_distance(
        generated.mu, generated.sigma, reference.mu, reference.sigma, eps=fid_eps
    )
    return {"fid": distance}


@register_metric("kid")
def kid_metric(
    generated: FeatureStatistics,
    reference: FeatureStatistics,
    kid_subset_size: int | None = 1000,
    kid_num_subsets: int = 100,
    kid_seed: int = 0,
) -> dict:
    """Kernel inception distance: mean and std over random subsets."""
    if generated.features is None or reference.features is None:
        raise ValueError(
            "Metric 'kid' needs per-image features, but the statistics hold only mu/sigma. "
            "Received: statistics without features"
        )
    mean, std = kernel_inception_distance(
        generated.features,
        reference.features,
        num_subsets=kid_num_subsets,
        subset_size=kid_subset_size,
        seed=kid_seed,
    )
    return {"kid": mean, "kid_std": std}


# === Folders ===


def evaluate_folders(
    generated_dir: str,
    reference_dir: str,
    metrics: str | Iterable[str] = ("fid",),
    extractor: FeatureExtractor | None = None,
    cache_dir: str | None = None,
    kid_subset_size: int | None = 1000,
    progress: bool = True,
) -> dict[str, float]:
    """Compares a folder of generated images with a folder of real ones.

    Reference statistics are cached in `cache_dir` (see `folder_statistics`);
    generated images change every evaluation and are never cached.

    Args:
        generated_dir: folder of generated images (e.g. `fake_B`).
        reference_dir: folder of real images of the target domain (e.g. `testB`).
        metrics: metric names, see `list_metrics()`.
        extractor: feature extractor; `None` builds `InceptionFeatures()`
            (ImageNet weights).
        cache_dir: where to cache reference statistics; `None` disables caching.
        kid_subset_size: KID subset size; `None` means the smaller folder size.
        progress: show progress bars on stderr.

    Returns:
        Merged metric results, e.g. `{"fid": 34.1, "kid": 0.0123, "kid_std": 0.0011}`.

    Raises:
        ValueError: for an unknown metric name.
        DatasetError: for a missing/empty folder, an unreadable image, or (KID)
            a folder with fewer images than `kid_subset_size`.
    """
    names = _check_metric_names(metrics)
    generated_dir = os.fspath(generated_dir)
    reference_dir = os.fspath(reference_dir)
    # Listing is cheap and feature extraction can take minutes: check both folders first.
    counts = {folder: len(_list_folder_images(folder)) for folder in (generated_dir, reference_dir)}
    if "kid" in names and kid_subset_size is not None:
        for folder, count in counts.items():
            if count < kid_subset_size:
                raise DatasetError(
                    f"KID needs at least kid_subset_size={kid_subset_size} images per folder, but "
                    f"{folder} has {count}: pass --kid-subset-size {count} (or smaller)."
                )
    if extractor is None:
        extractor = InceptionFeatures()
    reference = folder_statistics(reference_dir, extractor, cache_dir=cache_dir, progress=progress)
    generated = folder_statistics(generated_dir, extractor, cache_dir=None, progress=progress)
    return compute_metrics(names, generated, reference, kid_subset_size=kid_subset_size)
