"""GAN compression around the stage-1 trainer: the teacher, the evolution search of a run, the chosen sub-network.

- `prepare_teacher(cfg)`: before training, makes sure `model.teacher.run` holds a teacher (trains
  `model.teacher.experiment` there first when it does not: the quickstart).
- `search_run(run, cfg, supernet)`: the evolution search of spec §6 on the held-out search images,
  every candidate a slice of the trained supernet (no re-training); resumable from `<run>/search/`,
  with a progress bar, a log, `best_configs.json` and a TensorBoard curve of the best metric.
- `chosen_config(run, cfg)`: the searched configuration, else the fine-tune's fixed one, else the widest.
- `export_subnetwork(supernet, path, …)`: the fixed-width sub-network at the supernet's current config as a
  SavedModel with the single-modal signatures, checked against the supernet first (max |Δ| ≤ 1e-5).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from psr.errors import CheckpointError, ConfigError
from psr.rundir import RunDir, resolve

EXPORT_TOLERANCE = 1e-5  # spec §7: the exported sub-network equals the supernet at its config
SEARCH_LOG = "search.log"


# === Teacher ===


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def prepare_teacher(cfg) -> None:
    """Trains the teacher experiment into `model.teacher.run` when that run has no checkpoint yet."""
    from psr.trainers.checkpoints import latest_checkpoint

    teacher = cfg.model.teacher
    teacher_run, run = resolve(Path(teacher.run)), resolve(Path(cfg.log.run_dir))
    if _is_within(teacher_run, run) or _is_within(run, teacher_run):
        raise ConfigError(
            f"model.teacher.run {teacher.run} and log.run_dir {cfg.log.run_dir} overlap; the compression run must "
            "be a folder of its own, outside the teacher's run (and the teacher's outside it)."
        )
    if latest_checkpoint(teacher.run, teacher.checkpoint) is not None or teacher.experiment is None:
        return  # the builder names the fix when the teacher is missing
    from psr.config import load_experiment
    from psr.experiment import train

    teacher_cfg = load_experiment(teacher.experiment, [f"log.run_dir={teacher.run}"])
    if teacher_cfg.method != "cut":
        raise ConfigError(
            f"model.teacher.experiment {teacher.experiment} is a {teacher_cfg.method} experiment; the compression "
            "teacher must be a ResNet generator trained with method cut."
        )
    print(f"No teacher in {teacher.run} yet: training {teacher.experiment} there first.", file=sys.stderr)
    train(teacher_cfg)


# === The chosen sub-network ===


def chosen_config(run_dir: Union[str, Path], cfg) -> tuple[int, ...]:
    """The configuration a run's export / translate / eval use: the search's answer, else the fine-tune's
    `model.student.fixed_config`, else the widest configuration."""
    from psr.builders import student_candidates
    from psr.models.profile import CONFIG_LENGTH, parse_channel_config
    from psr.search.evolution import RESULT_FILE, parse_key

    result = RunDir(run_dir).search / RESULT_FILE
    if result.is_file():
        try:
            chosen = json.loads(result.read_text(encoding="utf-8")).get("chosen")
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{result} cannot be read ({err}); rerun `main.py search` to rewrite it.") from None
        if chosen:
            return parse_key(chosen)
    if cfg.model.student.fixed_config:
        return parse_channel_config(cfg.model.student.fixed_config)
    return (max(student_candidates(cfg.model.student)),) * CONFIG_LENGTH


def select_network(network, run_dir: Union[str, Path], cfg, config: Optional[Sequence[int]] = None):
    """Sets the supernet to `config` (default `chosen_config`); returns it."""
    network.set_channel_config(tuple(config) if config is not None else chosen_config(run_dir, cfg))
    return network


def current_config(supernet) -> tuple[int, ...]:
    from keras import ops

    return tuple(int(v) for v in ops.convert_to_numpy(supernet.channel_config))


def sliced_and_checked(supernet, config: Sequence[int], image_side: int = 32):
    """The fixed-width sub-network at `config`, after checking it equals the masked supernet on random inputs."""
    from keras import ops

    config = supernet.check_config(config)
    sub = supernet.sliced_subnetwork(config)
    images = np.random.default_rng(0).uniform(-1, 1, (2, image_side, image_side, supernet.input_channels))
    images = images.astype("float32")
    masked = ops.convert_to_numpy(supernet.translate_and_features(images, config=np.asarray(config, "int32"))[0])
    sliced = ops.convert_to_numpy(sub(images))
    error = float(np.max(np.abs(masked - sliced)))
    if not error <= EXPORT_TOLERANCE:
        raise CheckpointError(
            f"the sliced sub-network {'_'.join(map(str, config))} differs from the supernet by {error:.3g} "
            f"(> {EXPORT_TOLERANCE}); the checkpoint may be corrupt."
        )
    return sub


def export_subnetwork(supernet, path, pad_multiple: int = 4, inputs=(), force: bool = False,
                      fix: Optional[str] = None, config: Optional[Sequence[int]] = None, **_) -> Path:
    """Exports the fixed-width sub-network at `config` (default: the supernet's current one, see
    `select_network`) with the single-modal signatures; the config and its MACs go into the marker."""
    from psr.export import export_generator
    from psr.models.profile import format_channel_config, mobile_resnet_profile

    config = tuple(config) if config is not None else current_config(supernet)
    sub = sliced_and_checked(supernet, config)
    profile = mobile_resnet_profile(config, num_blocks=supernet.num_blocks)
    metadata = {"channel_config": format_channel_config(config), "macs_256": int(profile.macs),
                "params": int(profile.params)}
    return export_generator(sub, path, pad_multiple, inputs=inputs, force=force, fix=fix, metadata=metadata)


def after_training(cfg, run: RunDir, supernet) -> None:
    """End of `main.py run`: the search when `search.after_training`, then the chosen configuration is set."""
    if cfg.search.after_training:
        search_run(run, cfg, supernet)
    select_network(supernet, run.path, cfg)


# === Evolution search of a run ===


def search_images(folder: Union[str, Path], image_size: int, max_images: Optional[int] = None):
    """`(images [N, s, s, 3] in [-1, 1], paths)` of a folder in sorted order (the test-time loader)."""
    from psr.data.unaligned import make_test_dataset

    dataset, paths = make_test_dataset(folder, image_size=image_size, batch_size=16)
    images = np.concatenate([np.asarray(batch) for batch in dataset], axis=0)
    if max_images is not None:
        images, paths = images[:max_images], paths[:max_images]
    return images, list(paths)


def _default_folders(cfg) -> tuple[Path, Path]:
    from psr.data.layout import domain_folders

    return domain_folders(cfg.data.root, cfg.data.direction, "train")


def _translator(supernet, batch_size: int) -> Callable:
    """`f(images, config) -> uint8 outputs`; one traced function for every config (the config is a tensor)."""
    import tensorflow as tf

    from psr.data.pixels import to_uint8

    @tf.function(reduce_retracing=True)
    def run(images, config):
        return supernet.translate_and_features(images, config=config)[0]

    def translate(images: np.ndarray, config: Sequence[int]) -> np.ndarray:
        config = tf.constant(np.asarray(config, "int32"))
        outputs = [np.asarray(to_uint8(run(tf.constant(images[i:i + batch_size]), config).numpy()))
                   for i in range(0, len(images), batch_size)]
        return np.concatenate(outputs, axis=0)

    return translate


def psnr_to(reference: np.ndarray) -> Callable[[np.ndarray], float]:
    """Mean PSNR (dB, uint8 scale) of a batch of outputs against `reference` (the teacher's outputs)."""
    reference = reference.astype("float64")

    def score(outputs: np.ndarray) -> float:
        mse = np.mean((outputs.astype("float64") - reference) ** 2, axis=(1, 2, 3))
        return float(np.mean(10.0 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))

    return score


def _fid_against(cfg, run: RunDir, extractor, progress: bool) -> Callable[[np.ndarray], float]:
    from psr.metrics.distances import FeatureStatistics, frechet_distance
    from psr.metrics.features import folder_statistics

    s = cfg.search
    if s.target_statistics:
        real = FeatureStatistics.load_npz(s.target_statistics)
    else:
        folder = s.target or str(_default_folders(cfg)[1])
        real = folder_statistics(folder, extractor, cache_dir=str(run.search / "feature_cache"), progress=progress)

    def score(outputs: np.ndarray) -> float:
        features = np.concatenate([extractor(outputs[i:i + 50]) for i in range(0, len(outputs), 50)], axis=0)
        fake = FeatureStatistics.from_features(features, keep_features=False)
        return float(frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma))

    return score


def _miou_of(cfg, run: RunDir, paths: Sequence[str], segmenter=None) -> Callable[[np.ndarray], float]:
    import shutil

    from psr.data.images import save_image
    from psr.metrics.paired import PairedInputs, compute_paired_metrics

    s, e = cfg.search, cfg.eval
    scratch = run.search / ".miou_translations"

    def score(outputs: np.ndarray) -> float:
        shutil.rmtree(scratch, ignore_errors=True)  # psr's own scratch folder inside the run
        scratch.mkdir(parents=True)
        for image, path in zip(outputs, paths):
            save_image(image, scratch / (Path(path).stem + ".png"))
        options = {"segmentation_network": "drn_d_105", "segmentation_weights": e.segmentation_weights,
                   "label_format": e.label_format}
        if segmenter is not None:
            options["segmenter"] = segmenter
        inputs = PairedInputs(generated_dir=str(scratch), source_dir=s.source, labels_dir=s.labels)
        value = compute_paired_metrics(["miou"], inputs, **options)["miou"]
        shutil.rmtree(scratch, ignore_errors=True)
        return float(value)

    return score


def search_settings(cfg, **overrides):
    from psr.search.evolution import EvolutionSettings

    s = cfg.search
    values = dict(population_size=s.population_size, generations=s.generations, mutation_ratio=s.mutation_ratio,
                  parent_ratio=s.parent_ratio, mutate_prob=s.mutate_prob, weighted_sample=s.weighted_sample,
                  seed=s.seed)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return EvolutionSettings(**values)


def search_run(run: RunDir, cfg, supernet, budget: Optional[float] = None, settings=None, feature_extractor=None,
               segmenter=None, progress: bool = True):
    """Runs (or resumes) the evolution search of a trained compression run; returns the `SearchResult`.

    `budget`: MACs at 256² (default `search.budget`). `feature_extractor` / `segmenter` replace the FID
    Inception / the DRN network (tests use small random networks).
    """
    from psr.builders import load_teacher, student_candidates
    from psr.metrics.records import write_scalars
    from psr.models.profile import CONFIG_LENGTH, mobile_resnet_profile
    from psr.rundir import append_line
    from psr.search.evolution import run_search

    s = cfg.search
    budget = budget if budget is not None else s.budget
    if budget is None:
        raise ConfigError("the search needs a MACs budget: pass --budget (e.g. 3e9) or set search.budget.")
    settings = settings or search_settings(cfg)
    size = s.image_size or cfg.data.crop_size
    source = s.source or str(_default_folders(cfg)[0])
    images, paths = search_images(source, size, s.max_images)
    translate = _translator(supernet, s.batch_size)
    higher_is_better = s.criterion in ("miou", "teacher_psnr")
    if s.criterion == "teacher_psnr":
        from psr.data.pixels import to_uint8

        teacher = load_teacher(cfg.model.teacher)
        reference = np.concatenate([np.asarray(to_uint8(teacher(images[i:i + s.batch_size], training=False)))
                                    for i in range(0, len(images), s.batch_size)])
        score = psnr_to(reference)
    elif s.criterion == "fid":
        extractor = feature_extractor
        if extractor is None:
            from psr.metrics.extractors import make_feature_extractor

            extractor = make_feature_extractor(cfg.eval.features, cfg.eval.feature_weights, "compression",
                                               cfg.eval.inception_weights)
        score = _fid_against(cfg, run, extractor, progress)
    else:
        score = _miou_of(cfg, run, paths, segmenter)

    num_blocks = cfg.model.student.num_blocks

    def macs(config) -> int:
        return int(mobile_resnet_profile(config, num_blocks=num_blocks, image_size=256).macs)

    def evaluate(config) -> float:
        return score(translate(images, config))

    log_path = run.search / SEARCH_LOG
    bar = None
    started = time.monotonic()
    if progress:
        import keras

        bar = keras.utils.Progbar(settings.generations, unit_name="generation")

    def after_step(search) -> None:
        best = search.best[-1] if search.best else None
        if best is None and search.population:  # before the first generation: the initial population's best
            best = sorted(search.population, key=lambda ind: -ind.metric if higher_is_better else ind.metric)[0]
        line = {"generation": search.generation, "evaluations": len(search.result_cache),
                "best_config": best.config if best else None, "best_metric": best.metric if best else None,
                "elapsed_s": round(time.monotonic() - started, 1)}
        append_line(log_path, json.dumps(line))
        if best is not None:
            write_scalars(run.search_tensorboard, search.generation, {f"best_{s.criterion}": best.metric}, prefix="search/")
        if bar is not None:
            bar.update(search.generation, [(s.criterion, best.metric if best else float("nan"))], finalize=False)

    candidates = [list(student_candidates(cfg.model.student))] * CONFIG_LENGTH
    result = run_search(run.search, candidates, evaluate, macs, budget, settings, higher_is_better, after_step)
    if bar is not None:
        bar.update(settings.generations, finalize=True)
    if result.best:
        best = result.best[-1]
        print(f"Search: best {best.config} ({best.macs / 1e9:.3f} GMACs at 256², {s.criterion} {best.metric:.4g}) "
              f"under {budget:.4g} MACs; written to {run.search}.", file=sys.stderr)
    return result


__all__ = ["after_training", "chosen_config", "export_subnetwork", "prepare_teacher", "search_run", "select_network"]
