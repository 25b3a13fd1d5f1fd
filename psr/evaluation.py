"""The paper's evaluation protocol (spec §6) for a trained model, once or periodically during training.

Generation: every test image of the source domain, resized to 256×256
(bicubic), translated, saved as PNG quantised like the official test script.
Scores: FID/KID against the target domain's test images (real zebras for
horse→zebra; real photos for Cityscapes labels→photo).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from psr.config import ExperimentConfig
from psr.errors import ConfigError
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


def test_folders(data_root: Union[str, Path], direction: str) -> tuple[Path, Path]:
    """(source, reference) test folders: testA → compared with testB for AtoB, the reverse for BtoA."""
    root = Path(data_root)
    return (root / "testA", root / "testB") if direction == "AtoB" else (root / "testB", root / "testA")


def make_extractor(inception_weights: Optional[str]):
    from psr.metrics.features import InceptionFeatures

    return InceptionFeatures(weights=inception_weights or "imagenet")


def _append_jsonl(path: Path, record: dict) -> None:
    from psr.rundir import append_line

    append_line(path, json.dumps(record))


def _write_scalars(log_dir: Path, step: int, values: dict, prefix: str = "eval/") -> None:
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(prefix + name, float(value))
    writer.flush()
    writer.close()


def evaluate_model(
    model: Union[str, Path],
    data_root: Optional[Union[str, Path]] = None,
    metrics: Sequence[str] = ("fid",),
    direction: Optional[str] = None,
    checkpoint: str = "latest",
    inception_weights: Optional[str] = None,
    kid_subset_size: Optional[int] = 1000,
    max_images: Optional[int] = None,
    image_size: Optional[int] = 256,
    cache_dir: Optional[Union[str, Path]] = None,
    extractor=None,
    progress: bool = True,
) -> dict:
    """`main.py eval`: translate the test split with a run directory or export, score it, record it.

    Results go to `<run>/eval.json` (latest) and `<run>/eval.jsonl` (history) and to TensorBoard
    (`<run>/tensorboard/eval`) when `model` is a run directory.
    """
    from psr.export import is_saved_model
    from psr.inference import load_translator
    from psr.metrics.registry import evaluate_folders

    from psr.metrics.names import unknown_metric_message

    problem = unknown_metric_message(metrics)
    if problem:  # before any image is translated
        raise ConfigError(f"--metrics: {problem}")
    model = Path(model)
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
    source, reference = test_folders(data_root, direction)
    translator = load_translator(model, checkpoint=checkpoint)
    run = RunDir(model if run_cfg else model.parent / f"{model.name}_eval")
    model_inputs = RunDir(model).inputs if run_cfg else (model,)
    generated = translate_split(translator, source, run.eval_translations(checkpoint), image_size, max_images,
                                inputs=[reference, *model_inputs])
    extractor = extractor or make_extractor(inception_weights)
    cache = Path(cache_dir) if cache_dir else Path(data_root) / ".psr_cache"
    scores = evaluate_folders(
        generated, reference, metrics, extractor=extractor, cache_dir=str(cache),
        kid_subset_size=kid_subset_size, progress=progress,
    )
    record = {
        "model": str(model), "checkpoint": checkpoint, "source": str(source), "reference": str(reference),
        "num_images": sum(1 for p in Path(generated).iterdir() if p.suffix == ".png"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **scores,
    }
    if run_cfg is not None:
        from psr.trainers.checkpoints import STATE_FILE, latest_checkpoint

        path = latest_checkpoint(model, checkpoint)
        record["epoch"] = json.loads((path / STATE_FILE).read_text())["epoch"] if path else 0
        atomic_write_json(run.eval_json, record)
        _append_jsonl(run.eval_jsonl, record)
        with os_errors(run.tensorboard_eval):
            _write_scalars(run.tensorboard_eval, record["epoch"], scores)
    return record


class PeriodicEvaluation(keras.callbacks.Callback):
    """Every `eval.every_epochs`: translate the test split, compute the metrics, keep the best.

    The best generator (by `eval.best_metric`, lower is better) is saved to
    `checkpoints/best/` and exported to `export_best/`. Metric values are added
    to the epoch logs as `eval_<name>` (so the TensorBoard logger writes them).
    """

    def __init__(self, cfg: ExperimentConfig, run_dir: Union[str, Path], extractor=None):
        super().__init__()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run = RunDir(run_dir)
        self.extractor = extractor
        self.best_file = self.run.best_json
        self.best = json.loads(self.best_file.read_text())["value"] if self.best_file.is_file() else None

    def evaluate(self, epoch: int) -> dict:
        from psr.export import translate_any_size
        from psr.metrics.registry import evaluate_folders

        generator = self.model.generator
        multiple = self.cfg.export.pad_multiple

        @tf.function(reduce_retracing=True)
        def run(images):
            return translate_any_size(lambda x: generator(x, training=False), images, multiple)

        source, reference = test_folders(self.cfg.data.root, self.cfg.data.direction)
        generated = translate_split(
            lambda x: run(tf.constant(x)).numpy(), source, self.run.eval_during_training,
            image_size=self.cfg.data.crop_size, max_images=self.cfg.eval.max_images, inputs=[reference],
        )
        if self.extractor is None:
            self.extractor = make_extractor(self.cfg.eval.inception_weights)
        scores = evaluate_folders(
            generated, reference, self.cfg.eval.metrics, extractor=self.extractor,
            cache_dir=str(Path(self.cfg.data.root) / ".psr_cache"),
            kid_subset_size=self.cfg.eval.kid_subset_size, progress=False,
        )
        _append_jsonl(self.run.eval_jsonl, {"epoch": epoch, **scores})
        return scores

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.cfg.eval.every_epochs:
            return
        scores = self.evaluate(epoch + 1)
        value = float(scores[self.cfg.eval.best_metric])
        if logs is not None:
            logs.update({f"eval_{k}": float(v) for k, v in scores.items()})
        if self.best is None or value < self.best:
            from psr.export import export_generator

            self.best = value
            from psr.trainers.checkpoints import write_checkpoint

            write_checkpoint(self.run.checkpoints_best, epoch + 1, 0, self.model.generator, keep=1)
            export_generator(self.model.generator, self.run.export_best, self.cfg.export.pad_multiple,
                             inputs=self.run.inputs)
            atomic_write_json(self.best_file, {"metric": self.cfg.eval.best_metric, "value": value, "epoch": epoch + 1})
