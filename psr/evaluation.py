"""The paper's evaluation protocol (spec §6) for a trained model, once or periodically during training.

Generation: every test image of the source domain, resized to 256×256
(bicubic), translated, saved as PNG quantised like the official test script.
Scores: FID/KID against the target domain's test images (real zebras for
horse→zebra; real photos for Cityscapes labels→photo).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from psr.config import EvalConfig
from psr.data.layout import domain_folders
from psr.errors import ConfigError
from psr.metrics.records import append_record, extractor_record, write_scalars  # noqa: F401  (re-exported)
from psr.rundir import RunDir, atomic_write_json, os_errors


def translate_split(
    translator: Callable[[np.ndarray], np.ndarray],
    source_dir: Union[str, Path],
    out_dir: Union[str, Path],
    image_size: Optional[int] = 256,
    max_images: Optional[int] = None,
    inputs: Sequence[Union[str, Path]] = (),
) -> Path:
    """Translates a test folder into `out_dir`, one PNG per input, same stem.

    The folder is written under a hidden staging name and swapped in (`psr.rundir.replace_folder`),
    replacing an earlier psr translation folder only; a folder holding other files, or one inside
    `source_dir` or any of `inputs`, is refused.
    """
    from psr.data.images import save_image
    from psr.data.unaligned import make_test_dataset
    from psr.rundir import replace_folder

    dataset, paths = make_test_dataset(source_dir, image_size=image_size, batch_size=1)
    if max_images:
        paths = paths[:max_images]

    def write(staging: Path) -> None:
        for path, images in zip(paths, dataset):
            result = translator(np.asarray(images))
            save_image(np.asarray(result)[0], staging / f"{Path(path).stem}.png")

    return replace_folder(
        out_dir, write, kind="eval_translations", inputs=[source_dir, *inputs],
        fix="move those files elsewhere (psr replaces only folders it wrote)",
    )


# The paper protocol `eval.features: auto` follows for an export (a run directory's method names its own).
EVAL_PROTOCOL = "single_modal"


def make_extractor(
    features: str = "auto", feature_weights: Optional[str] = None, inception_weights: Optional[str] = None,
    protocol: str = EVAL_PROTOCOL,
):
    """The FID/KID feature extractor of `eval.features` (see `psr.metrics.extractors`)."""
    from psr.metrics.extractors import make_feature_extractor

    return make_feature_extractor(features, feature_weights, protocol=protocol, inception_weights=inception_weights)


def evaluate_model(
    model: Union[str, Path],
    data_root: Optional[Union[str, Path]] = None,
    metrics: Sequence[str] = ("fid",),
    direction: Optional[str] = None,
    checkpoint: str = "latest",
    inception_weights: Optional[str] = None,
    features: Optional[str] = None,
    feature_weights: Optional[str] = None,
    kid_subset_size: Optional[int] = 1000,
    max_images: Optional[int] = None,
    image_size: Optional[int] = 256,
    cache_dir: Optional[Union[str, Path]] = None,
    extractor=None,
    progress: bool = True,
    paired_options: Optional[dict] = None,
) -> dict:
    """`main.py eval`: translate the test split with a run directory or export, score it, record it.

    Results go to `<run>/eval.json` (latest) and `<run>/eval.jsonl` (history) and to TensorBoard
    (`<run>/tensorboard/eval`) when `model` is a run directory, tagged with the feature extractor.
    `features` / `feature_weights` / `inception_weights` default to the run's `eval` section
    (`auto` for an export); `extractor` replaces them (tests).

    `paired_options` (lpips / fcn / miou, see `psr.metrics.paired`): the `eval.*` keys
    `lpips_alexnet_weights`, `lpips_weights`, `lpips_against`, `segmentation_network`,
    `segmentation_weights`, `segmentation_labels`, `label_format`; a value given here (not
    None) replaces the run's. Metric names, the extractor's weights and paired-metric
    requirements are checked before any image is translated.
    """
    from psr.export import is_saved_model
    from psr.inference import load_translator
    from psr.methods import get_method
    from psr.metrics.paired import split_metric_names
    from psr.metrics.registry import evaluate_folders
    from psr.registry import unknown_metric_message

    problem = unknown_metric_message(metrics)
    if problem:  # before any image is translated
        raise ConfigError(f"--metrics: {problem}")
    distribution_metrics, paired_metrics = split_metric_names(metrics)
    model = Path(model)
    from psr.inference import model_method

    if model_method(model) == "stargan2":
        from psr.evaluation_multimodal import evaluate_multimodal_run

        if extractor is None and "fid" in metrics:
            run_eval = load_run_config_or_none(model)
            extractor = make_extractor(
                features or (run_eval.features if run_eval else "auto"),
                feature_weights or (run_eval.feature_weights if run_eval else None),
                inception_weights or (run_eval.inception_weights if run_eval else None), protocol="multimodal",
            )
        return evaluate_multimodal_run(model, data_root, metrics, checkpoint, extractor=extractor,
                                       lpips_options=resolve_paired_options(load_run_config_or_none(model),
                                                                            paired_options),
                                       max_images=max_images, cache_dir=cache_dir, progress=progress)
    run_cfg = None
    if not is_saved_model(model):
        from psr.config import load_run_config

        run_cfg = load_run_config(model)
        RunDir(model).adopt_legacy()  # an older psr's eval/ folders become replaceable as psr's own
    if data_root is None:
        if run_cfg is None:
            raise ConfigError("--data is required with an exported model: pass the dataset root holding testA/testB.")
        data_root = run_cfg.data.root
    direction = direction or (run_cfg.data.direction if run_cfg else "AtoB")
    source, reference = domain_folders(data_root, direction, "test")
    options = resolve_paired_options(run_cfg.eval if run_cfg is not None else None, paired_options)
    labels_dir = options.pop("segmentation_labels")
    if paired_metrics:
        from psr.metrics.paired import check_paired_requirements

        check_paired_requirements(paired_metrics, labels_dir is not None, **options)
    if distribution_metrics and extractor is None:
        # Resolved before translating, so a missing weights file fails in a second, not after the split.
        run_eval = run_cfg.eval if run_cfg is not None else None
        extractor = make_extractor(
            features or (run_eval.features if run_eval else "auto"),
            feature_weights or (run_eval.feature_weights if run_eval else None),
            inception_weights or (run_eval.inception_weights if run_eval else None),
            protocol=get_method(run_cfg.method).eval_protocol if run_cfg is not None else EVAL_PROTOCOL,
        )
    translator = load_translator(model, checkpoint=checkpoint)
    run = RunDir(model if run_cfg else model.parent / f"{model.name}_eval")
    model_inputs = RunDir(model).inputs if run_cfg else (model,)
    generated = translate_split(translator, source, run.eval_translations(checkpoint), image_size, max_images,
                                inputs=[reference, *model_inputs])
    scores = {}
    if distribution_metrics:
        cache = Path(cache_dir) if cache_dir else Path(data_root) / ".psr_cache"
        scores.update(evaluate_folders(
            generated, reference, distribution_metrics, extractor=extractor, cache_dir=str(cache),
            kid_subset_size=kid_subset_size, progress=progress,
        ))
    if paired_metrics:
        from psr.metrics.paired import PairedInputs, compute_paired_metrics

        inputs = PairedInputs(str(generated), str(source), str(reference), labels_dir and str(labels_dir))
        scores.update(compute_paired_metrics(paired_metrics, inputs, **options))
    record = {
        "model": str(model), "checkpoint": checkpoint, "source": str(source), "reference": str(reference),
        "num_images": sum(1 for p in Path(generated).iterdir() if p.suffix == ".png"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extractor_record(extractor), **scores,
    }
    if run_cfg is not None:
        from psr.trainers.checkpoints import STATE_FILE, latest_checkpoint

        path = latest_checkpoint(model, checkpoint)
        record["epoch"] = json.loads((path / STATE_FILE).read_text())["epoch"] if path else 0
        atomic_write_json(run.eval_json, record)
        append_record(run.eval_jsonl, record)
        with os_errors(run.tensorboard_eval):
            write_scalars(run.tensorboard_eval, record["epoch"], scores)
    return record


def load_run_config_or_none(model: Path) -> Optional[EvalConfig]:
    """The `eval` section of a run directory (None for an export)."""
    from psr.config import load_run_config

    return load_run_config(model).eval if (Path(model) / "config.yaml").is_file() else None


_PAIRED_KEYS = (
    "lpips_alexnet_weights", "lpips_weights", "lpips_against", "segmentation_network",
    "segmentation_weights", "segmentation_labels", "label_format",
)


def resolve_paired_options(eval_cfg: Optional[EvalConfig], given: Optional[dict]) -> dict:
    """Paired-metric options: the run's `eval.*` values (or the defaults), replaced by given non-None ones."""
    base = eval_cfg if eval_cfg is not None else EvalConfig()
    options = {key: getattr(base, key) for key in _PAIRED_KEYS}
    unknown = sorted(set(given or {}) - set(_PAIRED_KEYS))
    if unknown:
        raise ValueError(f"Unknown paired-metric option(s). Received: {unknown}")
    options.update({key: value for key, value in (given or {}).items() if value is not None})
    return options


