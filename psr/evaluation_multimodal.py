"""Evaluation of multi-modal translation (method stargan2): the StarGAN v2 protocol and the quickstart scores.

Protocol (spec multimodal §6.1): for every task s→t (every source domain s and
target domain t ≠ s), every validation image of s is translated K = 10 times
into t, in latent mode (a new code per output, style M(z, t)) and in reference
mode (style E(x_ref, t) of validation images of t, taken in order and cycled).

- FID of a task: the K·|val(s)| outputs against **all training images** of t;
  reported FID = mean over tasks, per mode.
- LPIPS diversity of a task: for each source batch, the mean LPIPS over the
  K(K−1)/2 pairs of its outputs, averaged over batches; reported = mean over
  tasks. Needs the LPIPS weights (`eval.lpips_*`); without them the same pairs
  give the mean absolute pixel difference as `diversity_l1`.

On the embedded `scenes` data every validation scene also exists, rendered, in
every domain, so translations are scored against that ground truth
(`content_scores.json`): PSNR/SSIM of latent and reference translations, and
of the unchanged input, plus the diversity of the latent outputs.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from psr.data.pixels import to_uint8


def _numpy(x) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(x), np.float32)


def translate_task(translator, sources: np.ndarray, target: int, mode: str, num_outputs: int,
                   references: Optional[np.ndarray] = None, rng: Optional[np.random.RandomState] = None,
                   reference_offset: int = 0) -> list[np.ndarray]:
    """`num_outputs` arrays `[N, H, W, 3]`: the translations of `sources` into domain `target`.

    latent mode: output k uses fresh codes from `rng`, one per image; reference mode: output k of image i
    uses `references[(reference_offset + k·N + i) mod len(references)]` (validation images of the target,
    taken in order and cycled, as the official loader does with full batches).
    """
    n = len(sources)
    domains = np.full((n,), target, np.int32)
    outputs = []
    for k in range(num_outputs):
        if mode == "latent":
            codes = rng.standard_normal((n, translator.latent_dim)).astype(np.float32)
            out = translator.translate_latent(sources, domains, codes)
        else:
            index = (reference_offset + k * n + np.arange(n)) % len(references)
            out = translator.translate_reference(sources, references[index], domains)
        outputs.append(np.clip(_numpy(out), -1.0, 1.0))
    return outputs


def l1_diversity(outputs: Sequence[np.ndarray]) -> float:
    """Mean absolute difference (in [-1, 1] units) over all unordered pairs of outputs."""
    return float(np.mean([np.mean(np.abs(outputs[i] - outputs[j]))
                          for i, j in itertools.combinations(range(len(outputs)), 2)]))


def multimodal_scores(translator, val: dict, train_statistics: Optional[Callable[[int], object]], extractor=None,
                      lpips=None, num_outputs: int = 10, batch_size: int = 32, seed: int = 0,
                      domain_names: Sequence[str] = (), progress: bool = False) -> dict:
    """The §6 protocol on in-memory validation images.

    Args:
        translator: a `MultimodalTranslator` (the EMA networks).
        val: `{domain index: float32 [N, H, W, 3] in [-1, 1]}` validation images.
        train_statistics: `t -> FeatureStatistics` of domain t's training images (None: no FID).
        extractor: FID features of uint8 images (needed with `train_statistics`).
        lpips: an LPIPS model (`psr.metrics.lpips`) or None (then only `diversity_l1`).
        num_outputs: K outputs per image.
        batch_size: source images per batch (32 in the official evaluation).
        seed: seed of the latent codes.
    Returns:
        `{"latent": {...}, "reference": {...}}`, each with `fid`, `lpips` and/or `diversity_l1` (means over
        tasks) and `tasks: {"s2t": {...}}`.
    """
    from psr.metrics.distances import FeatureStatistics, frechet_distance

    names = list(domain_names) or [str(i) for i in sorted(val)]
    rng = np.random.RandomState(seed)
    results = {}
    for mode in ("latent", "reference"):
        tasks = {}
        for target, source in itertools.permutations(sorted(val), 2):
            task = f"{names[source]}2{names[target]}"
            fakes, lpips_values, l1_values = [], [], []
            for start in range(0, len(val[source]), batch_size):
                batch = val[source][start:start + batch_size]
                outputs = translate_task(translator, batch, target, mode, num_outputs, references=val[target],
                                         rng=rng, reference_offset=start * num_outputs)
                l1_values.append(l1_diversity(outputs))
                if lpips is not None:
                    from psr.metrics.lpips import lpips_diversity

                    lpips_values.append(lpips_diversity(lpips, outputs))
                if train_statistics is not None:
                    fakes.append(np.concatenate([to_uint8_numpy(o) for o in outputs]))
            record = {"diversity_l1": float(np.mean(l1_values))}
            if lpips_values:
                record["lpips"] = float(np.mean(lpips_values))
            if train_statistics is not None:
                fake = FeatureStatistics.from_features(extractor(np.concatenate(fakes)))
                real = train_statistics(target)
                record["fid"] = frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
            tasks[task] = record
            if progress:
                print(f"  {mode} {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()), file=sys.stderr)
        summary = {key: float(np.mean([r[key] for r in tasks.values()])) for key in next(iter(tasks.values()))}
        summary["tasks"] = tasks
        results[mode] = summary
    return results


def to_uint8_numpy(images: np.ndarray) -> np.ndarray:
    return np.asarray(to_uint8(images))


# === A run's evaluation (`main.py eval`, periodic evaluation) ===


def load_val_arrays(root, image_size: int, max_images: Optional[int] = None) -> tuple[dict, list]:
    """`({domain index: float32 [N, s, s, 3]}, names)`: the validation images of every domain (sorted files)."""
    from psr.data.multidomain import discover_domains, val_images

    domains = discover_domains(root, "val")
    arrays = {}
    for index, domain in enumerate(domains):
        dataset, _ = val_images(domain, image_size, batch_size=32)
        images = np.concatenate([np.asarray(b) for b in dataset])
        arrays[index] = images[:max_images] if max_images else images
    return arrays, [d.name for d in domains]


def flatten_scores(results: dict) -> dict:
    """`{"fid_latent": …, "lpips_reference": …, "fid": mean over modes, …}` for logs, eval.json and best-model
    selection (`eval.best_metric: fid` = the mean of latent and reference FID)."""
    flat = {}
    for mode, key in (("latent", "latent"), ("reference", "reference")):
        for name, value in results[mode].items():
            if name != "tasks":
                flat[f"{name}_{key}"] = value
    for name in ("fid", "lpips", "diversity_l1"):
        if f"{name}_latent" in flat:
            flat[name] = 0.5 * (flat[f"{name}_latent"] + flat[f"{name}_reference"])
    return flat


def evaluate_translator(translator, root, image_size: int, metrics: Sequence[str], extractor=None, lpips=None,
                        cache_dir: Optional[str] = None, num_outputs: int = 10, max_images: Optional[int] = None,
                        seed: int = 0, progress: bool = False) -> dict:
    """The §6 protocol of `translator` on `root/val` (FID against `root/train/<target>`); returns the full results."""
    from psr.data.multidomain import discover_domains
    from psr.metrics.features import folder_statistics

    val, names = load_val_arrays(root, image_size, max_images)
    train_domains = discover_domains(root, "train")
    statistics = None
    if "fid" in metrics:
        cache = {}

        def statistics(target: int):
            if target not in cache:
                folder = str(Path(root) / "train" / train_domains[target].name)
                cache[target] = folder_statistics(folder, extractor, cache_dir=cache_dir, progress=progress)
            return cache[target]

    return multimodal_scores(translator, val, statistics, extractor=extractor,
                             lpips=lpips if "lpips" in metrics else None, num_outputs=num_outputs, seed=seed,
                             domain_names=names, progress=progress)


def evaluate_multimodal_run(model, data_root=None, metrics: Sequence[str] = ("fid",), checkpoint: str = "latest",
                            extractor=None, lpips_options: Optional[dict] = None, max_images: Optional[int] = None,
                            cache_dir=None, num_outputs: int = 10, progress: bool = True) -> dict:
    """`main.py eval` on a `stargan2` run directory: the §6 protocol with its EMA networks, recorded as for
    other methods (`eval.json`, `eval.jsonl`, TensorBoard `eval/`)."""
    import json
    import time

    from psr.errors import ConfigError
    from psr.export import is_saved_model
    from psr.inference import load_run_generator
    from psr.metrics.records import append_record, extractor_record, write_scalars
    from psr.rundir import RunDir, atomic_write_json, os_errors
    from psr.trainers.checkpoints import STATE_FILE, latest_checkpoint

    unsupported = sorted(set(metrics) - {"fid", "lpips"})
    if unsupported:
        raise ConfigError(f"--metrics {','.join(unsupported)}: a multi-domain model is scored with fid and lpips.")
    if is_saved_model(model):
        raise ConfigError(f"{model} is an export; evaluate the run directory it came from (its EMA checkpoint).")
    lpips = None
    if "lpips" in metrics:
        from psr.metrics.lpips import build_lpips

        options = lpips_options or {}
        lpips = build_lpips(options.get("lpips_alexnet_weights"), options.get("lpips_weights"))
    translator, cfg, _ = load_run_generator(model, checkpoint)
    root = data_root or cfg.data.root
    results = evaluate_translator(translator, root, cfg.data.crop_size, metrics, extractor=extractor, lpips=lpips,
                                  cache_dir=str(cache_dir or Path(root) / ".psr_cache"), num_outputs=num_outputs,
                                  max_images=max_images, progress=progress)
    scores = flatten_scores(results)
    run = RunDir(model)
    path = latest_checkpoint(model, checkpoint)
    record = {"model": str(model), "checkpoint": checkpoint, "data": str(root), "outputs_per_image": num_outputs,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extractor_record(extractor), **scores,
              "tasks": {mode: results[mode]["tasks"] for mode in ("latent", "reference")},
              "epoch": json.loads((path / STATE_FILE).read_text())["epoch"] if path else 0}
    atomic_write_json(run.eval_json, record)
    append_record(run.eval_jsonl, record)
    with os_errors(run.tensorboard_eval):
        write_scalars(run.tensorboard_eval, record["epoch"], scores)
    return record


# === The embedded scenes data: scores against ground truth ===


def load_ground_truth(root) -> dict:
    """`{(source, target): (val images of source, their renderings in target)}` of the embedded scenes data,
    float32 in [-1, 1] (`val/<source>/NNNN.png` ↔ `val_target/<target>/NNNN.png`, see
    `psr.data.synthetic_multidomain`)."""
    from psr.data.images import list_images, read_image
    from psr.data.pixels import to_unit_range
    from psr.data.synthetic_multidomain import VAL_TARGET

    root = Path(root)
    names = sorted(p.name for p in (root / "val").iterdir() if p.is_dir())

    def load(paths):
        return np.stack([np.asarray(to_unit_range(read_image(p))) for p in paths])

    truth = {}
    for s_index, source in enumerate(names):
        files = sorted(list_images(str(root / "val" / source)))
        inputs = load(files)
        for t_index, target in enumerate(names):
            truth[(s_index, t_index)] = (inputs, load([root / VAL_TARGET / target / Path(f).name for f in files]))
    return truth


def report_multimodal_scores(data, pad_multiple: int, run, translator, seed: int = 0) -> Optional[dict]:
    """`content_scores.json` of a run on the embedded `scenes` data (printed too); None for other data."""
    from psr.metrics.content import image_content_scores
    from psr.rundir import atomic_write_json

    if data.synthetic is None or data.synthetic.kind != "scenes":
        return None
    truth = load_ground_truth(data.root)
    rng = np.random.RandomState(seed)
    rows = {"latent": [], "reference": [], "input_unchanged": []}
    outputs_per_image = []
    for (source, target), (inputs, targets) in sorted(truth.items()):
        if source == target:
            continue
        references = truth[(target, target)][0]
        latent = translate_task(translator, inputs, target, "latent", 4, rng=rng)
        reference = translate_task(translator, inputs, target, "reference", 1, references=references)
        rows["latent"].append(image_content_scores(latent[0], targets))
        rows["reference"].append(image_content_scores(reference[0], targets))
        rows["input_unchanged"].append(image_content_scores(inputs, targets))
        outputs_per_image.append(l1_diversity(latent))
    scores = {mode: {k: float(np.mean([r[k] for r in values])) for k in values[0]} for mode, values in rows.items()}
    scores["diversity_l1"] = float(np.mean(outputs_per_image))
    atomic_write_json(run.content_scores, scores)
    t, r, i = scores["latent"], scores["reference"], scores["input_unchanged"]
    print(
        f"Content vs ground truth on {data.root}/val: latent PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f}; "
        f"reference PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f} (input unchanged: PSNR {i['psnr']:.2f} dB, "
        f"SSIM {i['ssim']:.3f}); diversity (mean |Δ| between latent outputs) {scores['diversity_l1']:.3f}.",
        file=sys.stderr,
    )
    return scores


# === Scoring translated folders of the scenes data ===


def _split_task(task: str, domains: list[str]) -> tuple[str, str] | None:
    for source in domains:
        for target in domains:
            if source != target and task == f"{source}2{target}":
                return source, target
    return None


def content_scores_by_task(translations_root: str | os.PathLike, dataset_root: str | os.PathLike) -> dict:
    """PSNR/SSIM of translated val scenes against their ground-truth renderings.

    `translations_root/<source>2<target>/NNNN.png` holds translations into `target` of the val scenes
    of `source` (the spec §6.1 task names), each under its val file name (any image extension; several
    outputs per scene can live in sub-folders `<task>/<k>/NNNN.png`). Each is compared with
    `dataset_root/val_target/<target>/NNNN.png` by `psr.metrics.content.content_scores`.

    Returns:
        `{"tasks": {task: {"psnr", "ssim"}}, "psnr": mean over tasks, "ssim": mean over tasks}`.

    Raises:
        DatasetError: no task folder, a folder whose name is not `<source>2<target>` of the dataset's
            domains, or a translation without a ground-truth image.
    """
    from psr.data.synthetic_multidomain import VAL_TARGET
    from psr.errors import DatasetError
    from psr.metrics.content import content_scores

    translations_root, dataset_root = Path(translations_root), Path(dataset_root)
    target_root = dataset_root / VAL_TARGET
    if not target_root.is_dir():
        raise DatasetError(
            f"{dataset_root} has no {VAL_TARGET}/ folder of ground-truth renderings; "
            "score against a dataset written by make_multidomain_dataset"
        )
    domains = sorted(entry.name for entry in target_root.iterdir() if entry.is_dir())
    if not translations_root.is_dir():
        raise DatasetError(
            f"Translations folder not found: {translations_root}; write <source>2<target>/ folders there"
        )
    tasks = {}
    for entry in sorted(translations_root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        pair = _split_task(entry.name, domains)
        if pair is None:
            raise DatasetError(
                f"{entry} is not named <source>2<target> with domains {', '.join(domains)}; rename or remove it"
            )
        by_output = [folder for folder in sorted(entry.iterdir()) if folder.is_dir()]
        folders = by_output or [entry]
        scores = [content_scores(str(folder), str(target_root / pair[1])) for folder in folders]
        tasks[entry.name] = {key: float(np.mean([score[key] for score in scores])) for key in ("psnr", "ssim")}
    if not tasks:
        raise DatasetError(f"No <source>2<target> folders in {translations_root}; write the translations there first")
    return {
        "tasks": tasks,
        "psnr": float(np.mean([score["psnr"] for score in tasks.values()])),
        "ssim": float(np.mean([score["ssim"] for score in tasks.values()])),
    }


__all__ = ["content_scores_by_task", "l1_diversity", "multimodal_scores", "report_multimodal_scores", "translate_task"]
