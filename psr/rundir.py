"""The run-directory layout, durable writes, and the rule that psr replaces only what psr created.

- `RunDir(path)` names every path psr writes in a run directory; `claim()` marks a
  folder as a psr run (`.psr_run`) and refuses one that holds somebody else's files.
- Atomic writes: `atomic_write_bytes/text/json` and `atomic_write_file` write a
  hidden temporary file next to the target, fsync it and rename it into place;
  `append_line` appends one fsynced line (JSONL histories); `replace_folder`
  builds a whole folder under a hidden temporary name and renames it into place.
  Temporary files and folders are removed when the write fails.
- Output safety: `check_output_path` refuses an output that is (or lies inside)
  an input, is a file where a folder is expected, is a run directory, or holds
  foreign files (unless `force`). psr output folders carry `.psr_output`, a JSON
  marker listing the entries psr wrote, so a later write replaces only those.
- `SweepDir(path)` names the paths of a sweep folder (`main.py sweep`): its marker `.psr_sweep`, its
  plan `sweep.json`, `runs/<name>/` and `logs/<name>.log`; `claim()` refuses foreign folders.
- `os_errors(path)` turns an operating-system fault inside it into a one-line
  `StorageError` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional, Sequence, Union

from psr.errors import OutputError, PsrError, StorageError, describe_os_error

PathLike = Union[str, os.PathLike]

RUN_MARKER = ".psr_run"
SWEEP_MARKER = ".psr_sweep"
OUTPUT_MARKER = ".psr_output"
_STAGING = ".psr-staging-"
_TRASH = ".psr-old-"
# What an export written before markers existed holds (psr's SavedModel); such a folder is psr's.
_LEGACY_EXPORT_ENTRIES = {"saved_model.pb", "variables", "assets", "fingerprint.pb"}
_LEGACY_CONFIG_SECTIONS = {"data", "model", "train"}


# === Errors ===


@contextlib.contextmanager
def os_errors(path: PathLike, rename_inner: bool = False) -> Iterator[None]:
    """Re-raises an operating-system fault (also one TensorFlow or HDF5 wrapped) as a one-line `StorageError`.

    With `rename_inner`, a `StorageError` from a write nested inside (a file in a staging folder the
    user never sees) is re-described with `path`, the folder the user asked for.
    """
    from psr.errors import os_fault_errno

    try:
        yield
    except StorageError as err:
        if rename_inner and err.errno is not None:
            raise StorageError(describe_os_error(err, path), err.errno) from None
        raise
    except PsrError:
        raise
    except OSError as err:
        raise StorageError(describe_os_error(err, path), os_fault_errno(err)) from None
    except Exception as err:
        code = os_fault_errno(err)
        if type(err).__module__.split(".")[0] in ("tensorflow", "h5py", "keras") and code is not None:
            raise StorageError(describe_os_error(err, path), code) from None
        raise


# === Durable writes ===


def fsync_dir(path: PathLike) -> None:
    """Makes a rename in `path` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        handle = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems do not fsync folders; the files themselves were synced
    finally:
        os.close(handle)


def fsync_tree(folder: PathLike) -> None:
    """fsyncs every file and folder under `folder` (after a library wrote it without syncing)."""
    for root, _, files in os.walk(os.fspath(folder)):
        for name in files:
            with open(os.path.join(root, name), "rb") as stream:
                os.fsync(stream.fileno())
        fsync_dir(root)


def _make_parent(path: Path) -> None:
    with os_errors(path.parent):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file sits where a folder of the path belongs
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(path.parent)) from None


def atomic_write_file(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Calls `write(stream)` on a hidden temporary file next to `path`, fsyncs it and renames it to `path`.

    A reader sees the old file or the complete new one; on failure the temporary file is removed and
    an operating-system fault becomes a `StorageError` naming `path`.
    """
    path = Path(path)
    _make_parent(path)
    with os_errors(path):
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise
        fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write_file(path, lambda stream: stream.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, value, indent: Optional[int] = 2) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def append_line(path: PathLike, line: str) -> Path:
    """Appends `line` and a newline to `path` (a JSONL history) and fsyncs it.

    A line cut short by an earlier crash is ended first, so every complete line stays parseable.
    """
    path = Path(path)
    if "\n" in line:
        raise ValueError(f"append_line writes one line; the text holds a newline. Received: line={line!r}")
    _make_parent(path)
    with os_errors(path):
        with open(path, "ab+") as stream:
            stream.seek(0, os.SEEK_END)
            prefix = b""
            if stream.tell():
                stream.seek(-1, os.SEEK_END)
                if stream.read(1) != b"\n":
                    prefix = b"\n"
            stream.write(prefix + line.encode("utf-8") + b"\n")
            stream.flush()
            os.fsync(stream.fileno())
    return path


def _owner_tag() -> str:
    """`<pid>@<host>@`, put into every staging/trash name, so a stale one can be told from a live writer's."""
    return f"{os.getpid()}@{socket.gethostname().replace('@', '_')}@"


def _writer_is_gone(name: str) -> bool:
    """Whether the process that made this temporary (named with `_owner_tag`) no longer runs on this host.

    Temporaries of another host (a shared file system) or without a tag are left alone.
    """
    for tag in (_STAGING, _TRASH):
        if tag in name:
            owner = name.split(tag, 1)[1].split("@")
            break
    else:
        return False
    if len(owner) < 3 or not owner[0].isdigit() or owner[1] != socket.gethostname().replace("@", "_"):
        return False
    try:
        os.kill(int(owner[0]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False


def remove_stale_staging(folder: PathLike, name_prefix: str) -> None:
    """Removes the staging and trash folders that a killed write of `folder/<name_prefix>...` left behind.

    Only psr's own hidden temporaries (`.<name_prefix>…<staging or trash tag>…`) whose writing process is
    gone are touched: a concurrent writer's (another worker of the same run) stays.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith("." + name_prefix) and (_STAGING in name or _TRASH in name) and _writer_is_gone(name):
            _remove_tree(entry)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.unlink()


# === Output folders ===


def resolve(path: PathLike) -> Path:
    """Absolute path with symlinks, `.` and `..` resolved (also for a path that does not exist yet)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _is_psr_temporary(name: str) -> bool:
    """Staging and trash folders psr leaves only when it is killed mid-write."""
    return name.startswith(_STAGING) or name.startswith(_TRASH)


def read_output_marker(folder: PathLike) -> Optional[dict]:
    """The `.psr_output` marker of a folder psr wrote, or None."""
    marker = Path(folder) / OUTPUT_MARKER
    try:
        value = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("entries"), list) else None


@dataclass
class OutputState:
    """What an output path holds: `exists`, the entries psr wrote (`owned`) and everything else (`foreign`)."""

    path: Path
    exists: bool
    created_by_psr: bool = False
    owned: set = field(default_factory=set)
    foreign: set = field(default_factory=set)
    metadata: dict = field(default_factory=dict)

    @property
    def replaceable(self) -> bool:
        """True when the whole folder is psr's and may be swapped for a new one."""
        return not self.exists or (self.created_by_psr and not self.foreign)


def inspect_output(path: PathLike) -> OutputState:
    path = Path(path)
    if not path.exists():
        return OutputState(path, exists=False)
    entries = {entry for entry in os.listdir(path) if entry != OUTPUT_MARKER and not _is_psr_temporary(entry)}
    marker = read_output_marker(path)
    if marker is not None:
        owned = entries & set(marker["entries"])
        return OutputState(path, True, bool(marker.get("created_by_psr")), owned, entries - owned, marker)
    if entries and entries <= _LEGACY_EXPORT_ENTRIES and (path / "saved_model.pb").is_file():
        return OutputState(path, True, True, entries, set())
    return OutputState(path, True, False, set(), entries)


def _names(entries: Iterable[str], limit: int = 3) -> str:
    entries = sorted(entries)
    shown = ", ".join(entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def check_output_path(
    output: PathLike,
    inputs: Sequence[PathLike] = (),
    force: bool = False,
    what: str = "output folder",
    fix: str = "pass --force to write into it (nothing in it is deleted or overwritten) or choose a new folder",
) -> OutputState:
    """Refuses an unsafe output folder with a one-line `OutputError`; returns what it holds.

    Refused: a path equal to or inside one of `inputs` (after resolving symlinks and `.`), a path
    that is (or runs through) a file, a psr run directory, and, unless `force`, a folder holding
    entries psr did not write. `fix` is the advice for the last case.
    """
    path = Path(output)
    real = resolve(path)
    for item in inputs:
        source = resolve(item)
        if _is_within(real, source):
            relation = "is" if real == source else "lies inside"
            raise OutputError(
                f"The {what} {path} {relation} the input {item}; choose a folder outside the inputs."
            )
    ancestor = real
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        where = "is a file" if ancestor == real else f"runs through the file {ancestor}"
        raise OutputError(f"The {what} {path} {where}, not a folder; pass a folder path.")
    if RunDir(real).is_psr_run():
        raise OutputError(f"The {what} {path} is a psr run directory; choose a folder outside it (e.g. {path}/export).")
    if SweepDir(real).is_psr_sweep():
        raise OutputError(f"The {what} {path} is a psr sweep folder; choose a folder outside it.")
    state = inspect_output(path)
    if state.foreign and not force:
        raise OutputError(f"The {what} {path} holds files psr did not write ({_names(state.foreign)}); {fix}.")
    return state


def _write_marker(folder: Path, kind: str, entries: Iterable[str], created_by_psr: bool, metadata: dict) -> None:
    value = {**metadata, "psr": kind, "created_by_psr": created_by_psr, "entries": sorted(set(entries))}
    atomic_write_json(folder / OUTPUT_MARKER, value)


def replace_folder(
    target: PathLike,
    build: Callable[[Path], None],
    kind: str,
    inputs: Sequence[PathLike] = (),
    force: bool = False,
    metadata: Optional[dict] = None,
    fix: str = "pass --force to write into it (nothing in it is deleted or overwritten) or choose a new folder",
) -> Path:
    """Builds a folder with `build(staging)` and puts it at `target`, replacing only what psr wrote there.

    The new content is written into a hidden staging folder, marked (`.psr_output`, listing its
    entries and `metadata`), fsynced and renamed into place: an absent or wholly psr-written
    `target` is swapped in one rename; an existing folder holding other files (allowed with
    `force`, or an empty folder, which may be a mount point) receives the entries one by one,
    and a name that would overwrite a foreign file is refused before anything moves. The
    staging folder is removed on failure, so nothing half-written is left behind.
    """
    target = Path(target)
    state = check_output_path(target, inputs, force=force, fix=fix)
    metadata = dict(metadata or {})
    real = resolve(target)  # `-o .` has no name; a symlinked folder is replaced where it really is
    if state.replaceable:
        with staged_folder(target) as staging:
            with os_errors(target, rename_inner=True):
                build(staging)
                _write_marker(staging, kind, os.listdir(staging), True, metadata)
        return target
    # Staged inside the folder itself: same file system, and writable if the folder is.
    with os_errors(target):
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{_owner_tag()}{real.name}-", dir=real))
    try:
        with os_errors(target, rename_inner=True):
            build(staging)
            entries = sorted(os.listdir(staging))
            clash = set(entries) & state.foreign
            if clash:
                raise OutputError(
                    f"Writing into {target} would overwrite files psr did not write ({_names(clash)}); "
                    "choose a new folder."
                )
            fsync_tree(staging)
            _merge_in(staging, real, entries, state)
            _write_marker(real, kind, entries, state.created_by_psr, metadata)
    finally:
        _remove_tree(staging)
    return target


@contextlib.contextmanager
def staged_folder(target: PathLike) -> Iterator[Path]:
    """Yields a hidden staging folder next to `target`; on success fsyncs it and renames it to `target`.

    An existing `target` is moved aside and removed only after the new folder is in place, so a
    reader sees the old folder or the complete new one. The caller has checked that `target` (if
    it exists) is psr's to replace. On failure the staging folder is removed.
    """
    real = resolve(target)
    _make_parent(real)
    remove_stale_staging(real.parent, real.name)  # what a killed earlier write of this target left
    with os_errors(target):
        staging = Path(tempfile.mkdtemp(prefix=f".{real.name}{_STAGING}{_owner_tag()}", dir=real.parent))
    try:
        with os_errors(target, rename_inner=True):
            yield staging
            fsync_tree(staging)
            _swap_in(staging, real)
    finally:
        _remove_tree(staging)


def _swap_in(staging: Path, target: Path) -> None:
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TRASH}{_owner_tag()}", dir=target.parent))
        os.replace(target, old / "content")
        os.replace(staging, target)
        _remove_tree(old)
    else:
        os.replace(staging, target)
    fsync_dir(target.parent)


def _merge_in(staging: Path, target: Path, entries: list, state: OutputState) -> None:
    trash = Path(tempfile.mkdtemp(prefix=f"{_TRASH}{_owner_tag()}", dir=target))
    try:
        for entry in sorted(state.owned - set(entries)):  # psr's earlier entries the new content lacks
            os.replace(target / entry, trash / entry)
        for entry in entries:
            if (target / entry).exists() or (target / entry).is_symlink():
                os.replace(target / entry, trash / entry)
            os.replace(staging / entry, target / entry)
        fsync_dir(target)
    finally:
        _remove_tree(trash)


class OutputFolder:
    """A folder that receives files one at a time (`translate`): each is atomic, each is listed in the marker.

    Open it with `open_output_folder`, which has already refused unsafe paths and name clashes.
    """

    def __init__(self, path: Path, kind: str, state: OutputState, metadata: dict):
        self.path = path
        self.kind = kind
        self._state = state
        self._metadata = metadata
        self._entries = set(state.owned)

    def write_file(self, name: str, write: Callable[[BinaryIO], None]) -> Path:
        """Writes `path/name` atomically; `name` must have been planned (it is listed in the marker)."""
        if name not in self._entries:
            raise ValueError(f"{name!r} was not planned for {self.path}. Received: name={name!r}")
        return atomic_write_file(self.path / name, write)


def open_output_folder(
    path: PathLike,
    planned: Iterable[str],
    kind: str,
    inputs: Sequence[PathLike] = (),
    force: bool = False,
    metadata: Optional[dict] = None,
) -> OutputFolder:
    """Checks `path` as an output folder, refuses planned names that are foreign files, creates and marks it.

    The marker lists the planned names before any is written, so a run that stops half-way leaves
    files a rerun may overwrite.
    """
    path = Path(path)
    planned = set(planned)
    state = check_output_path(path, inputs, force=force)
    clash = planned & state.foreign
    if clash:
        raise OutputError(f"{path} already holds {_names(clash)}, which psr did not write; choose a new folder.")
    created = not state.exists
    with os_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    created_by_psr = created or state.created_by_psr
    entries = state.owned | planned
    _write_marker(path, kind, entries, created_by_psr, dict(metadata or {}))
    state = OutputState(path, True, created_by_psr, entries, state.foreign)
    return OutputFolder(path, kind, state, dict(metadata or {}))


# === Run directory ===


class RunDir:
    """The layout of a run directory: every path psr reads or writes in it.

    Args:
        path: the run directory (`log.run_dir`).
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- files ---
    @property
    def marker(self) -> Path:
        return self.path / RUN_MARKER

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def content_scores(self) -> Path:
        return self.path / "content_scores.json"

    @property
    def eval_json(self) -> Path:
        return self.path / "eval.json"

    @property
    def eval_jsonl(self) -> Path:
        return self.path / "eval.jsonl"

    @property
    def best_json(self) -> Path:
        return self.path / "best.json"

    @property
    def imported_from(self) -> Path:
        return self.path / "imported_from.json"

    @property
    def domains(self) -> Path:
        """Domain names of a multi-domain run, in label order (written before the first step)."""
        return self.path / "domains.json"

    def domain_names(self) -> tuple[str, ...]:
        """The names stored in `domains.json` (empty for runs without domains)."""
        if not self.domains.is_file():
            return ()
        return tuple(json.loads(self.domains.read_text(encoding="utf-8")))

    # --- folders ---
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoints_latest(self) -> Path:
        return self.checkpoint_folder("latest")

    @property
    def checkpoints_epochs(self) -> Path:
        return self.checkpoint_folder("epochs")

    @property
    def checkpoints_best(self) -> Path:
        return self.checkpoint_folder("best")

    def checkpoint_folder(self, which: str) -> Path:
        """`checkpoints/<which>` for which in latest | epochs | best."""
        if which not in ("latest", "epochs", "best"):
            raise ValueError(f"`which` must be latest, epochs or best. Received: which={which!r}")
        return self.checkpoints / which

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def tensorboard_train(self) -> Path:
        return self.tensorboard / "train"

    @property
    def tensorboard_images(self) -> Path:
        return self.tensorboard / "images"

    @property
    def tensorboard_eval(self) -> Path:
        return self.tensorboard / "eval"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    def sample_grid(self, epoch: int) -> Path:
        """`samples/epoch_XXXX.png` for the 1-based epoch."""
        return self.samples / f"epoch_{epoch:04d}.png"

    @property
    def export(self) -> Path:
        return self.path / "export"

    @property
    def export_best(self) -> Path:
        return self.path / "export_best"

    def export_for(self, checkpoint: str) -> Path:
        """Default `main.py export` folder: `export/` for the latest checkpoint, `export_<which>/` otherwise."""
        return self.export if checkpoint == "latest" else self.path / f"export_{checkpoint}"

    @property
    def test_translations(self) -> Path:
        return self.path / "test_translations"

    @property
    def search(self) -> Path:
        """`search/`: the evolution search of a compression run (state, journal, best configs, log)."""
        return self.path / "search"

    @property
    def search_tensorboard(self) -> Path:
        return self.tensorboard / "search"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def eval_translations(self, checkpoint: str) -> Path:
        """`eval/<checkpoint>/translations` written by `main.py eval`."""
        return self.eval_dir / checkpoint / "translations"

    @property
    def eval_during_training(self) -> Path:
        return self.eval_dir / "during_training"

    @property
    def inputs(self) -> tuple[Path, ...]:
        """What psr reads back from a run (an output must never be one of these or inside one)."""
        return (self.config, self.checkpoints, self.domains)

    # --- ownership ---
    def is_marked(self) -> bool:
        return self.marker.is_file()

    def is_legacy(self) -> bool:
        """A run written before markers existed: psr's config.yaml (its sections) and a checkpoints folder."""
        if not (self.config.is_file() and self.checkpoints.is_dir()):
            return False
        import yaml

        try:
            raw = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            return False
        return isinstance(raw, dict) and _LEGACY_CONFIG_SECTIONS <= set(raw)

    def is_psr_run(self) -> bool:
        return self.path.is_dir() and (self.is_marked() or self.is_legacy())

    def claim(self, fix: str = "pass another --run-dir (or --set log.run_dir=...)") -> "RunDir":
        """Creates or adopts the run directory and marks it; refuses a folder that holds somebody else's files.

        Accepted: a missing or empty folder, a marked psr run, a legacy psr run (marked now).
        """
        path = self.path
        if path.exists() and not path.is_dir():
            raise OutputError(f"The run directory {path} is a file, not a folder; {fix}.")
        real = resolve(path)
        ancestor = real.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise OutputError(f"The run directory {path} runs through the file {ancestor}, not a folder; {fix}.")
        if self.is_marked():
            return self
        if self.is_legacy():
            return self.adopt_legacy()
        if path.is_dir() and any(path.iterdir()):
            foreign = [entry for entry in os.listdir(path)]
            raise OutputError(
                f"{path} is not empty and is not a psr run directory (it holds {_names(foreign)}); {fix}."
            )
        with os_errors(path):
            path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.marker, {"psr": "run"})
        return self

    def legacy_output_folders(self) -> list[Path]:
        """The output folders an older psr wrote in this run without markers."""
        folders = [self.export, self.export_best, self.test_translations, self.eval_during_training]
        if self.eval_dir.is_dir():
            folders += [entry / "translations" for entry in sorted(self.eval_dir.iterdir()) if entry.is_dir()]
        return [folder for folder in folders if folder.is_dir() and read_output_marker(folder) is None]

    def adopt_legacy(self) -> "RunDir":
        """Marks a run written before markers existed, and the output folders psr wrote in it, as psr's.

        Nothing is moved or deleted; later writes may then replace those folders as psr's own.
        """
        if not self.is_legacy() or self.is_marked():
            return self
        for folder in self.legacy_output_folders():
            _write_marker(folder, "legacy", os.listdir(folder), True, {})
        atomic_write_json(self.marker, {"psr": "run", "adopted": True})
        return self


# === Sweep folder ===


class SweepDir:
    """The layout of a sweep folder (`main.py sweep`): its marker, its plan and one run directory per run.

        .psr_sweep     marks the folder as a psr sweep (psr refuses to run a sweep in a foreign folder)
        sweep.json     the plan: experiment file, grid, seeds, overrides and every run's name and settings
        runs/<name>/   one psr run directory per grid combination (× seed)
        logs/<name>.log  the output of a run started as a separate process (`--parallel`)

    Args:
        path: the sweep folder.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"SweepDir({str(self.path)!r})"

    @property
    def marker(self) -> Path:
        return self.path / SWEEP_MARKER

    @property
    def plan(self) -> Path:
        return self.path / "sweep.json"

    @property
    def runs(self) -> Path:
        return self.path / "runs"

    def run(self, name: str) -> RunDir:
        """The run directory of the run called `name` (a file-system-safe name from the plan)."""
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ValueError(f"A sweep run name must be one path component. Received: name={name!r}")
        return RunDir(self.runs / name)

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def is_psr_sweep(self) -> bool:
        return self.path.is_dir() and self.marker.is_file()

    def claim(self, fix: str = "pass another --out") -> "SweepDir":
        """Creates or re-opens the sweep folder and marks it; refuses a file or a folder holding other files.

        Accepted: a missing or empty folder, or a marked psr sweep.
        """
        path = self.path
        if path.exists() and not path.is_dir():
            raise OutputError(f"The sweep folder {path} is a file, not a folder; {fix}.")
        ancestor = resolve(path).parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise OutputError(f"The sweep folder {path} runs through the file {ancestor}, not a folder; {fix}.")
        if self.is_psr_sweep():
            return self
        if RunDir(path).is_psr_run():
            raise OutputError(f"{path} is a psr run directory, not a sweep folder; {fix}.")
        if path.is_dir() and any(path.iterdir()):
            raise OutputError(
                f"{path} is not empty and is not a psr sweep folder (it holds {_names(os.listdir(path))}); {fix}."
            )
        with os_errors(path):
            path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.marker, {"psr": "sweep"})
        return self
