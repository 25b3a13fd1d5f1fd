"""Operating-system faults end in one line naming the path and the fix, exit status 2, nothing half-written.

Every errno is covered by fault injection (runs anywhere); a real tmpfs mount (full, then read-only)
adds the same checks against the kernel where mounting is permitted (CI runs as root, where
chmod does not make folders read-only).
"""

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psr import rundir
from psr.cli import main
from psr.errors import StorageError, describe_os_error
from psr.rundir import atomic_write_text

from e2e_helpers import make_tiny_run, tiny_raw, write_yaml

EXPECTED = {
    errno.EROFS: "is on a read-only file system; choose a writable location or remount it read-write.",
    errno.EACCES: "is not writable (permission denied); fix its permissions or choose another location.",
    errno.ENOSPC: "cannot be written: no space left on the device; free some space or choose another disk.",
    errno.EDQUOT: "cannot be written: the disk quota is exceeded; free some space or choose another disk.",
    errno.ENOTDIR: "cannot be used: a part of the path is a file, not a folder; remove or rename that file, "
                   "or choose another path.",
    errno.EISDIR: "is a folder where a file is expected; pass a file path or choose another name.",
    errno.EEXIST: "already exists; remove it or choose another path.",
}


def tree_hash(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def temporaries(folder: Path) -> list:
    return [str(p) for p in folder.rglob("*") if ".tmp-" in p.name or "psr-staging" in p.name or "psr-old" in p.name]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0][len("error: "):]


class FaultAt:
    """Makes the n-th call of a function raise `OSError(code)` (the disk filled up, the folder went read-only)."""

    def __init__(self, monkeypatch, module, name: str, n: int, code: int):
        self.calls = 0
        self.original = getattr(module, name)
        self.n, self.code = n, code
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise OSError(self.code, os.strerror(self.code))
        return self.original(*args, **kwargs)


# === The message ===


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_each_errno_is_one_line_naming_the_path_and_the_fix(code):
    assert describe_os_error(OSError(code, os.strerror(code), "/data/x")) == f"/data/x {EXPECTED[code]}"
    # TensorFlow and HDF5 carry the fault in their text only.
    wrapped = RuntimeError(f"Failed to open /data/y for writing: {os.strerror(code)}")
    assert describe_os_error(wrapped) == f"/data/y {EXPECTED[code]}"
    assert describe_os_error(RuntimeError(f"unable to create file (errno = {code})"), "/z") == f"/z {EXPECTED[code]}"


# === Fault injection in every durable write ===


@pytest.mark.parametrize("code", sorted(EXPECTED))
@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_atomic_write_fault_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, code, where):
    target = tmp_path / "config.yaml"
    target.write_text("old content")
    FaultAt(monkeypatch, os, where, 1, code)
    with pytest.raises(StorageError) as info:
        atomic_write_text(target, "new content")
    assert str(info.value) == f"{target} {EXPECTED[code]}"
    assert target.read_text() == "old content" and os.listdir(tmp_path) == ["config.yaml"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_append_line_fault_is_one_line(tmp_path, monkeypatch, code):
    path = tmp_path / "eval.jsonl"
    FaultAt(monkeypatch, os, "fsync", 1, code)
    with pytest.raises(StorageError, match=f"^{path} "):
        rundir.append_line(path, "{}")


@pytest.mark.parametrize("n", [1, 3, 6])
def test_staged_folder_fault_at_the_nth_sync_removes_the_staging_folder(tmp_path, monkeypatch, n):
    target = tmp_path / "out"

    def build(folder):
        for index in range(5):
            (folder / f"{index}.txt").write_text(str(index))

    rundir.replace_folder(target, build, kind="test")
    before = tree_hash(tmp_path)
    FaultAt(monkeypatch, os, "fsync", n, errno.ENOSPC)
    with pytest.raises(StorageError, match=f"^{target} cannot be written: no space left"):
        rundir.replace_folder(target, lambda f: (build(f), (f / "extra").write_text("x")), kind="test")
    assert tree_hash(tmp_path) == before and temporaries(tmp_path) == []


# === Through the CLI ===


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("oserr"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_export_with_a_failing_disk_keeps_the_old_export(run_dir, monkeypatch, capsys, code):
    before = tree_hash(run_dir)
    FaultAt(monkeypatch, os, "fsync", 4, code)  # inside the sync of the staged SavedModel
    assert main(["export", str(run_dir)]) == 2
    assert one_line(capsys.readouterr().err) == f"{run_dir / 'export'} {EXPECTED[code]}"
    assert tree_hash(run_dir) == before and temporaries(run_dir) == []


def test_translate_with_a_full_disk_at_the_second_image(run_dir, tmp_path, monkeypatch, capsys):
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((8, 8, 3), 60, np.uint8)).save(source / f"{name}.png")
    before = tree_hash(source)
    out = tmp_path / "out"
    # Calls of os.replace: the marker, image a, then image b fails.
    FaultAt(monkeypatch, os, "replace", 3, errno.ENOSPC)
    assert main(["translate", str(run_dir), str(source), "-o", str(out), "--quiet"]) == 2
    assert one_line(capsys.readouterr().err) == f"{out / 'b.png'} {EXPECTED[errno.ENOSPC]}"
    assert tree_hash(source) == before
    assert sorted(os.listdir(out)) == [rundir.OUTPUT_MARKER, "a.png"] and temporaries(tmp_path) == []
    Image.open(out / "a.png").verify()  # what was written is whole


def test_errors_raised_by_tensorflow_or_the_os_outside_psr_writers_are_one_line(monkeypatch, tmp_path, capsys):
    import tensorflow as tf

    import psr.inference

    def read_only(*args, **kwargs):
        raise tf.errors.PermissionDeniedError(None, None, "/mnt/ro/run/checkpoints/x.h5; Read-only file system")

    monkeypatch.setattr(psr.inference, "load_run_generator", read_only)
    assert main(["export", str(tmp_path)]) == 2
    assert one_line(capsys.readouterr().err) == f"/mnt/ro/run/checkpoints/x.h5 {EXPECTED[errno.EROFS]}"

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/run")

    monkeypatch.setattr(psr.inference, "load_run_generator", denied)
    assert main(["export", str(tmp_path)]) == 2
    assert one_line(capsys.readouterr().err) == f"/srv/run {EXPECTED[errno.EACCES]}"

    def bug(*args, **kwargs):
        raise tf.errors.InternalError(None, None, "a bug in psr")

    monkeypatch.setattr(psr.inference, "load_run_generator", bug)
    with pytest.raises(tf.errors.InternalError):  # not an OS fault: keeps its traceback
        main(["export", str(tmp_path)])


def test_a_file_where_a_folder_is_expected(run_dir, tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file")
    assert main(["export", str(run_dir), "-o", str(tmp_path / "blocker" / "export")]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"The output folder {tmp_path / 'blocker' / 'export'} runs through the file {tmp_path / 'blocker'}, "
        "not a folder; pass a folder path."
    )
    assert (tmp_path / "blocker").read_text() == "a file"


# === A real tmpfs: full, then read-only ===


@pytest.fixture
def tiny_mount(tmp_path):
    """A 64 KiB tmpfs at tmp_path/mnt; skipped where mounting is not permitted."""
    point = tmp_path / "mnt"
    point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("mount is not available")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def test_real_full_disk_and_read_only_mount(run_dir, tmp_path, tiny_mount, capsys):
    # Full: a SavedModel does not fit in 64 KiB.
    (tiny_mount / "keep.txt").write_text("user data")
    target = tiny_mount / "export"
    assert main(["export", str(run_dir), "-o", str(target)]) == 2
    assert one_line(capsys.readouterr().err) == f"{target} {EXPECTED[errno.ENOSPC]}"
    assert os.listdir(tiny_mount) == ["keep.txt"]  # no staging folder left on the full disk

    # Read-only: translate and run refuse with one line, and nothing changes.
    source = tmp_path / "in"
    source.mkdir()
    Image.fromarray(np.full((8, 8, 3), 60, np.uint8)).save(source / "a.png")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_mount)], check=True, timeout=30)
    assert main(["translate", str(run_dir), str(source), "-o", str(tiny_mount / "out"), "--quiet"]) == 2
    assert one_line(capsys.readouterr().err) == f"{tiny_mount / 'out'} {EXPECTED[errno.EROFS]}"
    raw = tiny_raw(tmp_path, log={"run_dir": str(tiny_mount / "run")})
    assert main(["run", str(write_yaml(tmp_path / "e.yaml", raw)), "--quiet"]) == 2
    assert one_line(capsys.readouterr().err) == f"{tiny_mount / 'run'} {EXPECTED[errno.EROFS]}"
    assert os.listdir(tiny_mount) == ["keep.txt"] and (tiny_mount / "keep.txt").read_text() == "user data"
