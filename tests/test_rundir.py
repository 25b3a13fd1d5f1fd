"""psr.rundir: the run-directory layout, claiming a run directory, atomic writes, staged folders."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from psr import rundir
from psr.errors import OutputError
from psr.rundir import (
    OUTPUT_MARKER,
    RUN_MARKER,
    RunDir,
    append_line,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    replace_folder,
    staged_folder,
)


def tree_hash(folder: Path) -> dict:
    """{relative path: sha256} of every file under `folder` (hidden ones included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def leftovers(folder: Path) -> list:
    """Temporary files or folders psr leaves only when a write is cut short."""
    return [p.name for p in folder.rglob("*") if ".tmp-" in p.name or "psr-staging" in p.name or "psr-old" in p.name]


# === Layout ===


def test_layout_names_every_path_psr_writes(tmp_path):
    run = RunDir(tmp_path / "r")
    root = tmp_path / "r"
    assert run.config == root / "config.yaml" and run.marker == root / RUN_MARKER
    assert run.checkpoints_latest == root / "checkpoints" / "latest"
    assert run.checkpoints_epochs == root / "checkpoints" / "epochs"
    assert run.checkpoints_best == root / "checkpoints" / "best"
    assert run.tensorboard_train == root / "tensorboard" / "train"
    assert run.tensorboard_images == root / "tensorboard" / "images"
    assert run.tensorboard_eval == root / "tensorboard" / "eval"
    assert run.sample_grid(3) == root / "samples" / "epoch_0003.png"
    assert run.export_for("latest") == root / "export" and run.export_for("best") == root / "export_best"
    assert run.export_best == root / "export_best"
    assert run.test_translations == root / "test_translations" and run.content_scores == root / "content_scores.json"
    assert run.eval_json == root / "eval.json" and run.eval_jsonl == root / "eval.jsonl"
    assert run.eval_translations("latest") == root / "eval" / "latest" / "translations"
    assert run.eval_during_training == root / "eval" / "during_training"
    assert run.best_json == root / "best.json" and run.imported_from == root / "imported_from.json"
    with pytest.raises(ValueError, match="which=.nope."):
        run.checkpoint_folder("nope")


# === Claiming a run directory ===


def test_claim_creates_and_marks_a_new_folder(tmp_path):
    run = RunDir(tmp_path / "a" / "b").claim()
    assert run.is_marked() and run.is_psr_run()
    assert json.loads(run.marker.read_text()) == {"psr": "run"}
    RunDir(tmp_path / "a" / "b").claim()  # a second claim is accepted


def test_claim_accepts_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert RunDir(tmp_path / "empty").claim().is_marked()


def test_claim_refuses_a_foreign_folder_and_changes_nothing(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / "export").mkdir()
    (folder / "export" / "mine.txt").write_text("keep me")
    before = tree_hash(folder)
    with pytest.raises(OutputError) as info:
        RunDir(folder).claim()
    assert str(info.value) == (
        f"{folder} is not empty and is not a psr run directory (it holds export, holiday.jpg); "
        "pass another --run-dir (or --set log.run_dir=...)."
    )
    assert tree_hash(folder) == before and not (folder / RUN_MARKER).exists()


def test_claim_adopts_a_legacy_run(tmp_path):
    folder = tmp_path / "old_run"
    (folder / "checkpoints" / "latest").mkdir(parents=True)
    (folder / "config.yaml").write_text("name: x\ndata: {}\nmodel: {}\ntrain: {}\n")
    assert RunDir(folder).is_legacy() and not RunDir(folder).is_marked()
    RunDir(folder).claim()
    assert RunDir(folder).is_marked()


def test_a_foreign_config_yaml_is_not_a_legacy_run(tmp_path):
    folder = tmp_path / "project"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("server: {port: 80}\n")
    assert not RunDir(folder).is_legacy()
    with pytest.raises(OutputError, match="is not a psr run directory"):
        RunDir(folder).claim()


def test_claim_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"is a file, not a folder; pass another --run-dir"):
        RunDir(tmp_path / "f").claim()
    with pytest.raises(OutputError, match=r"runs through the file .*f, not a folder"):
        RunDir(tmp_path / "f" / "run").claim()


# === Atomic writes ===


def test_atomic_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(target.parent) == ["a.json"]


def test_a_failing_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def broken(stream):
        stream.write(b"half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        rundir.atomic_write_file(target, broken)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_append_line_adds_fsynced_lines_and_ends_a_cut_line(tmp_path, monkeypatch):
    path = tmp_path / "h.jsonl"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    append_line(path, json.dumps({"epoch": 1}))
    assert synced, "append_line must fsync"
    with open(path, "a") as stream:
        stream.write('{"epoch": 2')  # a crash cut this line short
    append_line(path, json.dumps({"epoch": 3}))
    lines = path.read_text().splitlines()
    assert lines == ['{"epoch": 1}', '{"epoch": 2', '{"epoch": 3}']
    assert json.loads(lines[-1]) == {"epoch": 3}
    with pytest.raises(ValueError, match="one line"):
        append_line(path, "a\nb")


# === Staged folders ===


def write_two(folder: Path) -> None:
    (folder / "a.txt").write_text("A")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_text("B")


def test_replace_folder_creates_a_marked_folder_and_replaces_its_own(tmp_path):
    target = tmp_path / "out"
    replace_folder(target, write_two, kind="test", metadata={"n": 2})
    marker = json.loads((target / OUTPUT_MARKER).read_text())
    assert marker == {"n": 2, "psr": "test", "created_by_psr": True, "entries": ["a.txt", "sub"]}
    replace_folder(target, lambda f: (f / "c.txt").write_text("C"), kind="test")
    assert sorted(os.listdir(target)) == [OUTPUT_MARKER, "c.txt"]  # psr's own old entries are gone
    assert leftovers(tmp_path) == []


def test_replace_folder_refuses_a_foreign_folder_without_force(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    before = tree_hash(target)
    with pytest.raises(OutputError) as info:
        replace_folder(target, write_two, kind="test")
    assert str(info.value) == (
        f"The output folder {target} holds files psr did not write (thesis.tex); pass --force to write into it "
        "(nothing in it is deleted or overwritten) or choose a new folder."
    )
    assert tree_hash(target) == before and leftovers(tmp_path) == []


def test_replace_folder_with_force_adds_entries_and_keeps_foreign_files(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    replace_folder(target, write_two, kind="test", force=True)
    assert (target / "thesis.tex").read_text() == "years of work" and (target / "sub" / "b.txt").read_text() == "B"
    marker = json.loads((target / OUTPUT_MARKER).read_text())
    assert marker["entries"] == ["a.txt", "sub"] and marker["created_by_psr"] is False
    # A second write replaces psr's entries only; the folder is not swapped (it is not psr's).
    replace_folder(target, lambda f: (f / "c.txt").write_text("C"), kind="test", force=True)
    assert sorted(os.listdir(target)) == [OUTPUT_MARKER, "c.txt", "thesis.tex"]
    assert leftovers(tmp_path) == []


def test_replace_folder_with_force_never_overwrites_a_foreign_file(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "a.txt").write_text("the user's a")
    before = tree_hash(target)
    with pytest.raises(OutputError, match=r"would overwrite files psr did not write \(a.txt\)"):
        replace_folder(target, write_two, kind="test", force=True)
    assert tree_hash(target) == before and leftovers(tmp_path) == []


def test_replace_folder_removes_the_staging_folder_when_building_fails(tmp_path):
    target = tmp_path / "out"
    replace_folder(target, write_two, kind="test")
    before = tree_hash(target)

    def broken(folder):
        (folder / "a.txt").write_text("new")
        raise RuntimeError("builder failed")

    with pytest.raises(RuntimeError, match="builder failed"):
        replace_folder(target, broken, kind="test")
    assert tree_hash(target) == before and leftovers(tmp_path) == []


def test_replace_folder_refuses_inputs_and_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(OutputError, match=r"The output folder .*data is the input .*data; choose"):
        replace_folder(data, write_two, kind="test", inputs=[data])
    with pytest.raises(OutputError, match=r"lies inside the input"):
        replace_folder(data / "x" / ".." / "y", write_two, kind="test", inputs=[data])
    link = tmp_path / "link"
    link.symlink_to(data)
    with pytest.raises(OutputError, match=r"link is the input"):
        replace_folder(link, write_two, kind="test", inputs=[data])
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"file is a file, not a folder"):
        replace_folder(tmp_path / "file", write_two, kind="test")


def test_a_legacy_export_is_replaced_and_a_run_directory_is_refused(tmp_path):
    legacy = tmp_path / "export"
    (legacy / "variables").mkdir(parents=True)
    (legacy / "saved_model.pb").write_bytes(b"pb")
    replace_folder(legacy, write_two, kind="export")
    assert sorted(os.listdir(legacy)) == [OUTPUT_MARKER, "a.txt", "sub"]
    run = RunDir(tmp_path / "run").claim()
    with pytest.raises(OutputError, match="is a psr run directory"):
        replace_folder(run.path, write_two, kind="export", force=True)


def test_staged_folder_swaps_in_whole(tmp_path):
    target = tmp_path / "ds"
    with staged_folder(target) as staging:
        (staging / "x").write_text("1")
        assert not target.exists()  # nothing visible before the rename
    assert os.listdir(target) == ["x"] and leftovers(tmp_path) == []


def test_adopting_a_legacy_run_marks_its_output_folders_without_touching_them(tmp_path):
    folder = tmp_path / "old_run"
    (folder / "checkpoints" / "latest").mkdir(parents=True)
    (folder / "config.yaml").write_text("name: x\ndata: {}\nmodel: {}\ntrain: {}\n")
    for sub in ("test_translations", "eval/latest/translations"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "0000.png").write_bytes(b"png")
    before = tree_hash(folder)
    RunDir(folder).claim()
    after = tree_hash(folder)
    assert {k: v for k, v in after.items() if not k.endswith((OUTPUT_MARKER, RUN_MARKER))} == before
    for sub in ("test_translations", "eval/latest/translations"):
        assert json.loads((folder / sub / OUTPUT_MARKER).read_text())["entries"] == ["0000.png"]
    # Now psr may replace them as its own.
    replace_folder(folder / "test_translations", lambda f: (f / "0001.png").write_bytes(b"new"), kind="translations")
    assert sorted(os.listdir(folder / "test_translations")) == [OUTPUT_MARKER, "0001.png"]


def test_stale_staging_of_a_dead_writer_is_removed_and_a_live_writers_is_kept(tmp_path):
    import socket
    import subprocess
    import sys

    from psr.rundir import _owner_tag, remove_stale_staging

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid now names no process (pids are not reused this quickly)
    host = socket.gethostname().replace("@", "_")
    live = tmp_path / f".export.psr-staging-{_owner_tag()}a1"
    dead = tmp_path / f".export.psr-staging-{finished.pid}@{host}@b2"
    dead_trash = tmp_path / f".export.psr-old-{finished.pid}@{host}@c3"
    other_host = tmp_path / f".export.psr-staging-{finished.pid}@another-machine@d4"
    other_target = tmp_path / f".samples.psr-staging-{finished.pid}@{host}@e5"
    for folder in (live, dead, dead_trash, other_host, other_target):
        folder.mkdir()
    remove_stale_staging(tmp_path, "export")
    assert live.is_dir() and other_host.is_dir() and other_target.is_dir()  # a live or unknown writer's
    assert not dead.exists() and not dead_trash.exists()
