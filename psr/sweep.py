"""Ablation sweeps: one experiment file, a grid of config values (× seeds), one run directory per combination.

`plan_sweep` types every grid value through the config parser (a bad key or value is one `ConfigError`
naming it, before anything runs) and names each run readably (`contrastive=dce,curriculum.start=10,seed=1`);
`run_sweep` stores the plan (`sweep.json`, atomic) in a psr sweep folder (`psr.rundir.SweepDir`), skips the
runs that finished, and trains the others: in this process one after another, or as up to `parallel`
separate `main.py run` processes. An unfinished run resumes through psr's normal resume.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from psr.config import ExperimentConfig, load_experiment, parse_override
from psr.errors import ConfigError, TrainingError
from psr.rundir import RunDir, SweepDir, atomic_write_json, resolve

# Keys the sweep itself sets for every run.
_RUN_DIR_KEY = "log.run_dir"
_SEED_KEY = "train.seed"
# A run's folder name stays well under the usual 255-byte limit of one path component.
_MAX_NAME = 160


# === The plan ===


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its folder name, its grid settings (key → value as typed) and its seed (or None)."""

    name: str
    settings: tuple  # ((key, value text), ...) in grid order
    seed: Optional[int]

    def overrides(self) -> list[str]:
        """`--set` texts of this run (grid values, then the seed)."""
        texts = [f"{key}={value}" for key, value in self.settings]
        if self.seed is not None:
            texts.append(f"{_SEED_KEY}={self.seed}")
        return texts


@dataclass(frozen=True)
class SweepPlan:
    """What `sweep.json` stores: the experiment file, the `--set` overrides, the grid, the seeds and the runs."""

    spec: str
    overrides: tuple
    grid: tuple  # ((key, (value text, ...)), ...)
    seeds: Optional[tuple]
    runs: tuple

    def to_json(self) -> dict:
        return {
            "psr": "sweep",
            "spec": self.spec,
            "overrides": list(self.overrides),
            "grid": [{"key": key, "values": list(values)} for key, values in self.grid],
            "seeds": None if self.seeds is None else list(self.seeds),
            "runs": [{"name": run.name, "settings": dict(run.settings), "seed": run.seed} for run in self.runs],
        }

    def same_experiment(self, stored: dict) -> bool:
        """Whether a stored plan describes this sweep (same file, overrides, grid and seeds)."""
        mine = self.to_json()
        return all(stored.get(key) == mine[key] for key in ("spec", "overrides", "grid", "seeds"))


def split_values(text: str) -> list[str]:
    """`"1,10,[0, 4],'a,b'"` → `["1", "10", "[0, 4]", "'a,b'"]`: commas inside brackets or quotes stay."""
    values, current, depth, quote = [], [], 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    values.append("".join(current).strip())
    return values


def parse_grid(texts: Sequence[str], seeds_given: bool) -> tuple:
    """`["loss.contrastive=dce,hdce", ...]` → `(("loss.contrastive", ("dce", "hdce")), ...)`.

    Raises:
        ConfigError: a text without `=`, an empty value, a key given twice, or a key the sweep sets itself.
    """
    grid = []
    for text in texts:
        if "=" not in text:
            raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. --grid loss.contrastive=dce,hdce.")
        key, raw = (part.strip() for part in text.split("=", 1))
        parse_override(f"{key}=0")  # the key's shape (a dotted path)
        if key == _RUN_DIR_KEY:
            raise ConfigError(f"--grid {key}: the sweep gives every run its own directory; choose the folder with --out.")
        if key == _SEED_KEY and seeds_given:
            raise ConfigError(f"--grid {key} and --seeds both set the seed; pass one of them.")
        if key in (k for k, _ in grid):
            raise ConfigError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2.")
        values = split_values(raw)
        if not raw or any(not value for value in values):
            raise ConfigError(f"--grid {text!r}: a value is empty; pass KEY=V1,V2,... without empty entries.")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {text!r}: a value is listed twice; list each value once.")
        grid.append((key, tuple(values)))
    return tuple(grid)


def short_keys(keys: Sequence[str]) -> dict:
    """Readable names of dotted keys: without their section (`loss.curriculum.start` → `curriculum.start`)
    where that stays unambiguous, else the whole key."""
    shortened = {key: key.split(".", 1)[1] if "." in key else key for key in keys}
    counts: dict = {}
    for short in shortened.values():
        counts[short] = counts.get(short, 0) + 1
    return {key: short if counts[short] == 1 else key for key, short in shortened.items()}


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def run_name(parts: Sequence[tuple]) -> str:
    """A folder name from `(name, value text)` pairs: `a=1,b.c=x`. In names and values, runs of characters
    outside `[A-Za-z0-9._+-]` become `_` (so `,` and `=` only separate); a long name is cut and ended with a
    hash of the full text."""
    def clean(text) -> str:
        return _UNSAFE.sub("_", str(text)).strip("_") or "_"

    full = ",".join(f"{name}={value}" for name, value in parts)
    safe = ",".join(f"{clean(name)}={clean(value)}" for name, value in parts) or "run"
    if safe.startswith((".", "-")):
        safe = "_" + safe
    if len(safe) > _MAX_NAME:
        digest = hashlib.sha1(full.encode("utf-8")).hexdigest()[:10]
        safe = f"{safe[:_MAX_NAME - 11]}-{digest}"
    return safe


def plan_sweep(
    spec: Union[str, Path], grid_texts: Sequence[str], seeds: Optional[int] = None,
    overrides: Sequence[str] = (),
) -> SweepPlan:
    """The runs of a sweep, each checked through the config parser before anything runs.

    Args:
        spec: the experiment YAML every run starts from.
        grid_texts: `--grid KEY=V1,V2,...` texts; runs are their Cartesian product, first key outermost.
        seeds: run every combination with `train.seed` = 0, 1, ..., seeds - 1 (None: the file's seed).
        overrides: `--set KEY=VALUE` texts applied to every run before the grid values.

    Raises:
        ConfigError: no grid and no seeds, a malformed grid, a key or value the parser refuses (named as
            `--grid KEY=VALUE`), or a combination of values it refuses (named by the run).
    """
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds}: pass a number of seeds of 1 or more.")
    grid = parse_grid(grid_texts, seeds_given=seeds is not None)
    if not grid and seeds is None:
        raise ConfigError("A sweep needs at least one --grid KEY=V1,V2,... or --seeds N.")
    overrides = tuple(overrides)
    load_experiment(spec, list(overrides))  # the file itself and the --set values, before the grid
    for key, values in grid:  # each value alone, so that an error names the key and value
        for value in values:
            try:
                load_experiment(spec, [*overrides, f"{key}={value}"])
            except ConfigError as err:
                raise ConfigError(f"--grid {key}={value}: {err}") from None
    names = short_keys([key for key, _ in grid])
    seed_list = None if seeds is None else tuple(range(seeds))
    runs, taken = [], set()
    for combination in itertools.product(*(values for _, values in grid)):
        settings = tuple(zip((key for key, _ in grid), combination))
        for seed in seed_list if seed_list is not None else (None,):
            parts = [(names[key], value) for key, value in settings]
            if seed is not None:
                parts.append(("seed", seed))
            name = run_name(parts)
            unique, index = name, 2
            while unique in taken:  # two value texts that differ only in replaced characters
                unique, index = f"{name}-{index}", index + 1
            taken.add(unique)
            run = SweepRun(unique, settings, seed)
            try:
                load_experiment(spec, [*overrides, *run.overrides()])
            except ConfigError as err:
                raise ConfigError(f"sweep run {unique}: {err}") from None
            runs.append(run)
    return SweepPlan(str(resolve(spec)), overrides, grid, seed_list, tuple(runs))


def default_sweep_folder(spec: Union[str, Path], overrides: Sequence[str] = ()) -> Path:
    """`<parent of the file's log.run_dir>/<file stem>_sweep`, e.g. runs/quickstart_sweep."""
    cfg = load_experiment(spec, list(overrides))
    return Path(cfg.log.run_dir).parent / f"{Path(spec).stem}_sweep"


def read_plan(sweep: SweepDir) -> Optional[dict]:
    """The stored plan of a sweep folder, or None."""
    try:
        value = json.loads(sweep.plan.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("runs"), list) else None


def store_plan(sweep: SweepDir, plan: SweepPlan) -> None:
    """Writes `sweep.json`; a folder holding another sweep's plan is refused (one line)."""
    stored = read_plan(sweep)
    if stored is not None and not plan.same_experiment(stored):
        raise ConfigError(
            f"{sweep.path} holds a sweep of another plan ({_describe(stored)}); rerun it with the same "
            "experiment, --grid, --seeds and --set values, or pass another --out."
        )
    atomic_write_json(sweep.plan, plan.to_json())


def _describe(stored: dict) -> str:
    grid = " ".join(f"--grid {g.get('key')}={','.join(map(str, g.get('values', [])))}" for g in stored.get("grid", []))
    seeds = stored.get("seeds")
    return f"{Path(str(stored.get('spec'))).name} {grid}" + (f" --seeds {len(seeds)}" if seeds else "")


# === Running ===


def run_config(plan: SweepPlan, run: SweepRun, sweep: SweepDir) -> ExperimentConfig:
    return load_experiment(plan.spec, [*plan.overrides, *run.overrides(), f"{_RUN_DIR_KEY}={sweep.run(run.name).path}"])


def is_finished(run: RunDir, cfg: ExperimentConfig) -> bool:
    """A run is finished when its newest checkpoint is at the last epoch and its final outputs exist
    (the export when `export.after_training`, the content scores on the embedded shapes data)."""
    from psr.export import is_saved_model
    from psr.trainers.checkpoints import STATE_FILE, latest_checkpoint

    if not (run.is_marked() and run.config.is_file()):
        return False
    latest = latest_checkpoint(run.path)
    if latest is None:
        return False
    try:
        state = json.loads((latest / STATE_FILE).read_text(encoding="utf-8"))
        epoch, step = int(state["epoch"]), int(state.get("step", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if epoch < cfg.train.total_epochs or (epoch == cfg.train.total_epochs and step):
        return False
    if cfg.export.after_training and not is_saved_model(run.export):
        return False
    synthetic = cfg.data.synthetic
    if synthetic is not None and synthetic.kind == "shapes" and not run.content_scores.is_file():
        return False
    return True


def run_sweep(
    plan: SweepPlan,
    folder: Union[str, Path],
    parallel: int = 1,
    progress: bool = False,
    feature_extractor=None,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> SweepDir:
    """Runs every unfinished run of `plan` in the sweep folder `folder`; returns the folder.

    Args:
        plan: from `plan_sweep`.
        folder: the sweep folder (created and marked, or a psr sweep of the same plan).
        parallel: 1 = one run after another in this process; K > 1 = up to K `main.py run` processes at once,
            each writing its output to `logs/<name>.log`.
        progress: Keras progress output of in-process runs.
        feature_extractor: replaces the FID/KID features in periodic evaluation of in-process runs (tests).
        report: receives one line per run (skipped, started, finished, failed).

    Raises:
        TrainingError: one or more runs failed (the others ran); rerunning the same sweep retries them.
        KeyboardInterrupt: SIGTERM or Ctrl-C; every started run saved its state (rerun to resume).
    """
    if parallel < 1:
        raise ConfigError(f"--parallel {parallel}: pass 1 (one run at a time) or more.")
    sweep = SweepDir(folder).claim()
    store_plan(sweep, plan)
    pending = []
    for index, run in enumerate(plan.runs, 1):
        cfg = run_config(plan, run, sweep)
        if is_finished(sweep.run(run.name), cfg):
            report(f"[{index}/{len(plan.runs)}] {run.name}: finished before, skipped")
        else:
            pending.append((index, run, cfg))
    if parallel == 1:
        failed = _run_in_process(pending, len(plan.runs), progress, feature_extractor, report)
    else:
        failed = _run_as_processes(plan, sweep, pending, parallel, report)
    if failed:
        raise TrainingError(
            f"{len(failed)} of {len(plan.runs)} sweep runs failed ({', '.join(failed[:3])}"
            f"{' and more' if len(failed) > 3 else ''}); fix the cause and rerun the same command "
            "(finished runs are skipped)."
        )
    return sweep


def _run_in_process(pending, total: int, progress: bool, feature_extractor, report) -> list[str]:
    import keras

    from psr.errors import PsrError
    from psr.experiment import train

    failed = []
    for index, run, cfg in pending:
        report(f"[{index}/{total}] {run.name}: training")
        try:
            train(cfg, progress=progress, feature_extractor=feature_extractor)
        except PsrError as err:
            report(f"[{index}/{total}] {run.name}: failed: {str(err).splitlines()[0] if str(err) else err}")
            failed.append(run.name)
        finally:
            keras.backend.clear_session()  # free the finished run's graphs before the next one
    return failed


def _child_command(plan: SweepPlan, run: SweepRun, sweep: SweepDir) -> list[str]:
    command = [sys.executable, "-m", "psr", "run", plan.spec, "--quiet", "--run-dir", str(sweep.run(run.name).path)]
    for text in (*plan.overrides, *run.overrides()):
        command += ["--set", text]
    return command


def _run_as_processes(plan: SweepPlan, sweep: SweepDir, pending, parallel: int, report) -> list[str]:
    """Up to `parallel` child processes at once; SIGTERM/Ctrl-C is passed on to them and waited for."""
    total = len(plan.runs)
    queue = list(pending)
    running: dict = {}  # Popen → (index, run, log stream)
    failed = []
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        pass
    sweep.logs.mkdir(parents=True, exist_ok=True)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                index, run, _ = queue.pop(0)
                log = open(sweep.log(run.name), "ab")  # a log, not a result: appended as the child writes
                env = _child_environment()
                process = subprocess.Popen(_child_command(plan, run, sweep), stdout=log, stderr=subprocess.STDOUT,
                                           env=env)
                running[process] = (index, run, log)
                report(f"[{index}/{total}] {run.name}: training in process {process.pid} (log {sweep.log(run.name)})")
            time.sleep(0.2)
            for process in [p for p in running if p.poll() is not None]:
                index, run, log = running.pop(process)
                log.close()
                if process.returncode == 0:
                    report(f"[{index}/{total}] {run.name}: done")
                else:
                    report(f"[{index}/{total}] {run.name}: failed (exit {process.returncode}): "
                           f"{_last_error_line(sweep.log(run.name))}")
                    failed.append(run.name)
    except KeyboardInterrupt:
        for process in running:
            process.send_signal(signal.SIGTERM)  # each child saves its state and exits
        for process, (_, _, log) in running.items():
            process.wait()
            log.close()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failed


def _child_environment() -> dict:
    """This environment, with this psr importable (`python -m psr` from any folder, installed or not)."""
    package_root = str(Path(__file__).resolve().parents[1])
    paths = [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONUNBUFFERED": "1"}


def _raise_interrupt(signum, frame):
    error = KeyboardInterrupt()
    error.signal_name = "SIGTERM"
    raise error


def _last_error_line(log: Path) -> str:
    """The child's `error: ...` line (psr's one-line message), else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"see {log}"
    errors = [line for line in lines if line.startswith("error: ")]
    return (errors or lines or [f"see {log}"])[-1]


__all__ = ["SweepPlan", "SweepRun", "plan_sweep", "run_sweep", "is_finished", "short_keys", "default_sweep_folder"]
