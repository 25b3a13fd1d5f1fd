"""Comparison reports of runs and sweeps (`main.py compare`): a table, training curves and an image grid.

For every run it reads the stored config (`config.yaml`), its evaluations (`eval.json`, the history
`eval.jsonl`, and `content_scores.json` on the embedded shapes data) and its TensorBoard training scalars.
Runs are labelled by the config keys that differ between them; runs that differ only in `train.seed` form
one row (mean ± sample std over the seeds). The report folder (psr's, written atomically) holds:

    table.md, table.csv        final and best value of every metric per row
    plots/metric_<name>.png    each metric over training (periodic evaluation), one line per row
    plots/train_<name>.png     each logged epoch scalar (losses, Γ, learning rate, ...), one line per row
    grid.png                   the same test images through every run (input row first)
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from psr.errors import ConfigError
from psr.rundir import RunDir, SweepDir, check_output_path, replace_folder

# Keys that differ between runs without making them different experiments.
_IGNORED_KEYS = {"log.run_dir", "name"}
_SEED_KEY = "train.seed"
# Record fields that are bookkeeping, not metric values.
_NOT_METRICS = {"epoch", "step", "num_images"}
# Content scores (embedded shapes data) are similarities: higher is better.
_HIGHER_IS_BETTER = {"psnr", "ssim", "input_psnr", "input_ssim"}


# === Reading runs ===


@dataclass
class RunSummary:
    """What a report needs of one run.

    `final` / `best`: metric → value; `metric_curves`: metric → [(epoch, value)] from the evaluation
    history; `train_curves`: TensorBoard epoch tag (without `epoch/`) → [(epoch, value)].
    """

    path: Path
    config: dict
    final: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    metric_curves: dict = field(default_factory=dict)
    train_curves: dict = field(default_factory=dict)


def higher_is_better(metric: str) -> bool:
    from psr.metrics.paired import higher_is_better as segmentation_higher

    return metric in _HIGHER_IS_BETTER or segmentation_higher(metric)


def resolve_inputs(paths: Sequence[Union[str, Path]]) -> list[Path]:
    """Run directories of the given runs and sweeps (a sweep's runs in its plan's order), without repeats.

    Raises:
        ConfigError: a path that is neither a psr run directory nor a psr sweep folder, or a sweep with no
            run trained yet.
    """
    from psr.sweep import read_plan

    runs: list[Path] = []
    for item in paths:
        item = Path(item)
        sweep = SweepDir(item)
        if sweep.is_psr_sweep():
            plan = read_plan(sweep) or {"runs": []}
            found = [sweep.run(str(entry["name"])).path for entry in plan["runs"]
                     if isinstance(entry, dict) and sweep.run(str(entry["name"])).config.is_file()]
            if not found:
                raise ConfigError(f"The sweep {item} has no run with a config.yaml yet; run the sweep first.")
            runs += found
        elif RunDir(item).is_psr_run():
            runs.append(item)
        else:
            raise ConfigError(
                f"{item} is neither a psr run directory nor a psr sweep folder; pass folders made by "
                "`main.py run` or `main.py sweep`."
            )
    unique = {}
    for run in runs:
        unique.setdefault(str(run.resolve()), run)
    return list(unique.values())


def flatten(tree: dict, prefix: str = "") -> dict:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`; lists become tuples (hashable, comparable)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def _is_metric_value(key: str, value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and key not in _NOT_METRICS
            and not key.endswith("_std") and math.isfinite(float(value)))


def read_history(path: Path) -> list[dict]:
    """The records of an `eval.jsonl` (a line cut short by a crash is left out)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_json(path: Path) -> Optional[dict]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_train_curves(folder: Path) -> dict:
    """The `epoch/...` scalars of a TensorBoard event folder: name → [(epoch, value)], the last write per epoch
    kept (a resumed run may log an epoch again)."""
    if not folder.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    curves: dict = {}
    for tag in tags.get("tensors", []):
        if tag.startswith("epoch/") and not tag.startswith("epoch/eval_"):  # eval_*: the metric curves
            points = {}
            for event in accumulator.Tensors(tag):
                points[int(event.step)] = float(np.asarray(tensor_util.make_ndarray(event.tensor_proto)).reshape(-1)[0])
            curves[tag[len("epoch/"):]] = sorted(points.items())
    for tag in tags.get("scalars", []):  # summaries of the TF1 format
        if tag.startswith("epoch/") and not tag.startswith("epoch/eval_"):
            curves.setdefault(tag[len("epoch/"):], sorted({int(e.step): float(e.value) for e in accumulator.Scalars(tag)}.items()))
    return curves


def summarize_run(path: Union[str, Path]) -> RunSummary:
    """Reads one run's config, evaluations and training curves."""
    from psr.config import config_to_dict, load_run_config

    run = RunDir(path)
    summary = RunSummary(run.path, flatten(config_to_dict(load_run_config(run.path))))
    history = read_history(run.eval_jsonl)
    latest = _read_json(run.eval_json)
    values: dict = {}
    for record in history:
        for key, value in record.items():
            if _is_metric_value(key, value):
                values.setdefault(key, []).append(float(value))
                summary.final[key] = float(value)  # the last record holding it, unless eval.json says otherwise
                if "epoch" in record:
                    curve = dict(summary.metric_curves.get(key, []))
                    curve[int(record["epoch"])] = float(value)
                    summary.metric_curves[key] = sorted(curve.items())
    if latest is not None and latest.get("checkpoint", "latest") == "latest":
        for key, value in latest.items():
            if _is_metric_value(key, value):
                summary.final[key] = float(value)
                values.setdefault(key, []).append(float(value))
    content = _read_json(run.content_scores) or {}
    for part, prefix in (("translation", ""), ("input_unchanged", "input_")):
        for key, value in (content.get(part) or {}).items():
            if _is_metric_value(key, value):
                summary.final[prefix + key] = float(value)
                values.setdefault(prefix + key, []).append(float(value))
    for key, found in values.items():
        summary.best[key] = max(found) if higher_is_better(key) else min(found)
    summary.train_curves = read_train_curves(run.tensorboard_train)
    return summary


# === Rows: runs grouped by the keys that differ ===


def show_value(value) -> str:
    """A config value as the user would type it (`true`, `0.5`, `[0, 4]`, `hdce`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return json.dumps(value)


def differing_keys(runs: Sequence[RunSummary]) -> list[str]:
    """Config keys (dotted) whose values are not the same in every run, in config order; the seed and the run
    directory left out."""
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run.config if key not in keys]
    return [key for key in keys if key not in _IGNORED_KEYS | {_SEED_KEY}
            and len({show_value(run.config.get(key)) for run in runs}) > 1]


@dataclass
class Row:
    """One table row: the differing keys' values and the runs (seeds) that share them."""

    settings: tuple  # ((key, value text), ...)
    runs: list

    def label(self, names: dict) -> str:
        return ", ".join(f"{names[key]}={value}" for key, value in self.settings) or "all runs"


def group_rows(runs: Sequence[RunSummary]) -> tuple[list[str], list[Row]]:
    """(differing keys, rows in order of first appearance)."""
    keys = differing_keys(runs)
    rows: dict = {}
    for run in runs:
        settings = tuple((key, show_value(run.config.get(key))) for key in keys)
        rows.setdefault(settings, Row(settings, [])).runs.append(run)
    return keys, list(rows.values())


def mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (ddof 1; None for a single value); (None, None) for none."""
    if not values:
        return None, None
    array = np.asarray(values, np.float64)
    return float(array.mean()), (float(array.std(ddof=1)) if len(values) > 1 else None)


def metric_names(runs: Sequence[RunSummary]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [name for name in run.final if name not in names]
    return names


def table_cells(rows: Sequence[Row], metrics: Sequence[str]) -> list[dict]:
    """Per row: `{(metric, "final"|"best"): (mean, std, count)}`."""
    table = []
    for row in rows:
        cells = {}
        for metric in metrics:
            for kind in ("final", "best"):
                found = [getattr(run, kind)[metric] for run in row.runs if metric in getattr(run, kind)]
                mean, std = mean_std(found)
                cells[(metric, kind)] = (mean, std, len(found))
        table.append(cells)
    return table


def _format(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"


def _seeds(row: Row) -> str:
    return ",".join(show_value(run.config.get(_SEED_KEY)) for run in row.runs)


def markdown_table(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str]) -> str:
    names = _short(keys)
    header = [names[key] for key in keys] or ["runs"]
    header += ["seeds"] + [f"{metric} ({kind})" for metric in metrics for kind in ("final", "best")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, cells in zip(rows, table_cells(rows, metrics)):
        values = [value for _, value in row.settings] or ["all runs"]
        values.append(_seeds(row))
        values += [_format(*cells[(metric, kind)][:2]) for metric in metrics for kind in ("final", "best")]
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    notes = ("Rows: the config keys that differ between the runs; runs that differ only in train.seed share a row "
             "(mean ± sample std over the seeds). final: the latest evaluation (eval.json, else the last record "
             "of eval.jsonl); best: the best value recorded during training.")
    return "\n".join(lines) + "\n\n" + notes + "\n"


def csv_table(keys: Sequence[str], rows: Sequence[Row], metrics: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = list(keys) + ["seeds", "runs"]
    for metric in metrics:
        for kind in ("final", "best"):
            header += [f"{metric}_{kind}_mean", f"{metric}_{kind}_std", f"{metric}_{kind}_n"]
    writer.writerow(header)
    for row, cells in zip(rows, table_cells(rows, metrics)):
        values = [value for _, value in row.settings] + [_seeds(row), " ".join(r.path.name for r in row.runs)]
        for metric in metrics:
            for kind in ("final", "best"):
                mean, std, count = cells[(metric, kind)]
                values += ["" if mean is None else repr(mean), "" if std is None else repr(std), count]
        writer.writerow(values)
    return buffer.getvalue()


def _short(keys: Sequence[str]) -> dict:
    from psr.sweep import short_keys

    return short_keys(list(keys))


# === Curves and the image grid ===


def mean_curve(curves: Sequence[Sequence[tuple]]) -> tuple[list, list]:
    """The mean over runs at every x any of them has (each x averaged over the runs that have it)."""
    points: dict = {}
    for curve in curves:
        for x, y in curve:
            points.setdefault(x, []).append(y)
    xs = sorted(points)
    return xs, [float(np.mean(points[x])) for x in xs]


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "value"


def curve_plots(rows: Sequence[Row], names: dict) -> dict:
    """`{file name: PIL image}` of every metric and training scalar, one line per row (mean over its seeds)."""
    from psr.plotting import line_plot

    plots = {}
    for attribute, prefix, what in (("metric_curves", "metric", "evaluation"), ("train_curves", "train", "training")):
        tags: list[str] = []
        for row in rows:
            for run in row.runs:
                tags += [tag for tag in getattr(run, attribute) if tag not in tags]
        for tag in tags:
            series = {}
            for row in rows:
                curves = [getattr(run, attribute)[tag] for run in row.runs if tag in getattr(run, attribute)]
                series[row.label(names)] = mean_curve(curves)
            seeds = " (mean over seeds)" if any(len(row.runs) > 1 for row in rows) else ""
            plots[f"{prefix}_{_file_part(tag)}.png"] = line_plot(series, f"{tag} during {what}{seeds}")
    return plots


def first_test_images(run: RunSummary, count: int) -> list[Path]:
    """The first `count` test images of a run's source domain (sorted by name)."""
    from psr.data.images import list_images
    from psr.data.layout import domain_folders

    source, _ = domain_folders(run.config["data.root"], run.config["data.direction"], "test")
    if not source.is_dir():
        return []
    return [Path(p) for p in list_images(source, role="test images")][:count]


def translation_grid(rows: Sequence[Row], names: dict, count: int = 4):
    """The same test images (of the first run's data) through every run: input row, then one row per run.

    A run is used through its export when it has one, else through its latest checkpoint. Returns None
    when the first run's test folder is gone.
    """
    from psr.data.images import read_image
    from psr.data.pixels import to_uint8, to_unit_range
    from psr.export import is_saved_model
    from psr.inference import load_translator
    from psr.plotting import image_grid

    files = first_test_images(rows[0].runs[0], count)
    if not files:
        return None
    inputs = [read_image(path) for path in files]
    grid_rows = [("input", inputs)]
    for row in rows:
        for run in row.runs:
            model = RunDir(run.path).export if is_saved_model(RunDir(run.path).export) else run.path
            translate = load_translator(model)
            outputs = [to_uint8(translate(to_unit_range(image)[None])[0]) for image in inputs]
            label = row.label(names)
            if len(row.runs) > 1:
                label += f", seed={show_value(run.config.get(_SEED_KEY))}"
            grid_rows.append((label, outputs))
    return image_grid(grid_rows)


# === The report ===


def default_output(inputs: Sequence[Union[str, Path]]) -> Path:
    """`<first input>-compare`, beside the first run or sweep (never inside an input)."""
    first = Path(inputs[0]).resolve()
    return first.parent / f"{first.name}-compare"


def compare(
    inputs: Sequence[Union[str, Path]],
    output: Optional[Union[str, Path]] = None,
    grid_images: int = 4,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Writes the comparison report of the given runs and sweeps into `output`; returns it.

    Raises:
        OutputError: `output` is (or lies inside) an input, is a run or sweep folder, or holds foreign files.
        ConfigError: an input that is not a psr run or sweep.
    """
    if not inputs:
        raise ConfigError("compare needs at least one run directory or sweep folder.")
    output = Path(output) if output is not None else default_output(inputs)
    runs_paths = resolve_inputs(inputs)
    # Before anything is read: the report never goes into (or replaces) what it reads.
    check_output_path(output, inputs=[*inputs, *runs_paths], what="report folder",
                      fix="choose a new folder (psr replaces only report folders it wrote)")
    runs = [summarize_run(path) for path in runs_paths]
    keys, rows = group_rows(runs)
    names = _short(keys)
    metrics = metric_names(runs)
    plots = curve_plots(rows, names)
    grid = translation_grid(rows, names, grid_images) if grid_images else None
    if grid is None and grid_images:
        report("grid.png left out: the first run's test images are not found.")

    def build(staging: Path) -> None:
        from psr.rundir import atomic_write_file, atomic_write_text

        atomic_write_text(staging / "table.md", markdown_table(keys, rows, metrics))
        atomic_write_text(staging / "table.csv", csv_table(keys, rows, metrics))
        for name, image in plots.items():
            atomic_write_file(staging / "plots" / name, lambda stream, image=image: image.save(stream, format="PNG"))
        if grid is not None:
            atomic_write_file(staging / "grid.png", lambda stream: grid.save(stream, format="PNG"))

    replace_folder(output, build, kind="comparison", inputs=[*inputs, *runs_paths],
                   metadata={"runs": [str(path) for path in runs_paths]},
                   fix="choose a new folder (psr replaces only report folders it wrote)")
    report(f"Compared {len(runs)} runs in {len(rows)} rows ({len(metrics)} metrics, {len(plots)} plots) → {output}")
    return output


__all__ = ["compare", "summarize_run", "group_rows", "resolve_inputs", "RunSummary", "Row"]
