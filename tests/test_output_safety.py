"""psr writes only where it may: export / translate / eval / run / import-torch outputs (issue #11 item 1)."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psr.cli import main
from psr.rundir import OUTPUT_MARKER, RUN_MARKER

from e2e_helpers import make_tiny_run, tiny_raw, write_yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tree_hash(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


# TensorFlow's C++ logging (absl) writes its own lines to stderr before psr runs (e.g. the oneDNN notice).
_TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not _TF_LOG_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0][len("error: "):]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run directory with its export, shared by the tests of this file."""
    return make_tiny_run(tmp_path_factory.mktemp("safety"))


def photos(folder: Path, count: int = 2, size=(12, 10)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{index}.png")
    return folder


# === export ===


def test_export_into_the_run_directory_itself_is_refused(run_dir, capsys):
    before = tree_hash(run_dir)
    code, err = cli(["export", str(run_dir), "-o", str(run_dir)], capsys)
    assert code == 2
    assert one_line(err) == (
        f"The output folder {run_dir} is a psr run directory; choose a folder outside it (e.g. {run_dir}/export)."
    )
    code, err = cli(["export", str(run_dir), "-o", str(run_dir / "checkpoints" / "x")], capsys)
    assert code == 2 and "lies inside the input" in one_line(err)
    assert tree_hash(run_dir) == before


def test_export_refuses_a_foreign_folder_then_force_adds_without_deleting(run_dir, tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep")
    code, err = cli(["export", str(run_dir), "-o", str(target)], capsys)
    assert code == 2 and one_line(err) == (
        f"The output folder {target} holds files psr did not write (notes.txt); pass --force to write into it "
        "(nothing in it is deleted or overwritten) or choose a new folder."
    )
    assert os.listdir(target) == ["notes.txt"]
    assert main(["export", str(run_dir), "-o", str(target), "--force"]) == 0
    assert (target / "notes.txt").read_text() == "keep" and (target / "saved_model.pb").is_file()
    # (A second forced write replacing only psr's entries: tests/test_rundir.py.)
    marker = json.loads((target / OUTPUT_MARKER).read_text())
    assert "notes.txt" not in marker["entries"] and "saved_model.pb" in marker["entries"]
    assert marker["min_input_side"] == 5  # ResNet with blocks: see test_translate_refuses_too_small_images


def test_export_replaces_an_earlier_psr_export(run_dir):
    target = run_dir / "export"
    assert (target / "saved_model.pb").is_file()  # the fixture's export
    (target / "variables" / "stale").write_text("psr wrote this folder")
    assert main(["export", str(run_dir)]) == 0
    assert not (target / "variables" / "stale").exists() and (target / "saved_model.pb").is_file()
    assert not [p for p in run_dir.iterdir() if "psr-" in p.name]  # no staging or trash left


def test_subprocess_export_into_the_run_is_one_line_without_traceback(run_dir):
    before = tree_hash(run_dir)
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "export", str(run_dir), "-o", str(run_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is a psr run directory" in one_line(done.stderr)
    assert tree_hash(run_dir) == before


# === translate ===


def test_translate_into_its_input_is_refused(run_dir, tmp_path, capsys):
    source = photos(tmp_path / "in")
    before = tree_hash(source)
    code, err = cli(["translate", str(run_dir), str(source), "-o", str(source), "--quiet"], capsys)
    assert code == 2 and one_line(err) == (
        f"The output folder {source} is the input {source}; choose a folder outside the inputs."
    )
    code, err = cli(["translate", str(run_dir), str(source), "-o", str(source / "out"), "--quiet", "--force"], capsys)
    assert code == 2 and "lies inside the input" in one_line(err)
    # `.` spelled through a symlink is the same folder.
    (tmp_path / "alias").symlink_to(source)
    code, err = cli(["translate", str(run_dir), str(source), "-o", str(tmp_path / "alias" / "."), "--quiet"], capsys)
    assert code == 2 and "is the input" in one_line(err)
    assert tree_hash(source) == before and sorted(os.listdir(source)) == ["p0.png", "p1.png"]


def test_translate_into_a_foreign_folder_needs_force_and_never_overwrites(run_dir, tmp_path, capsys):
    source = photos(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0.png").write_bytes(b"the user's own p0")
    code, err = cli(["translate", str(run_dir), str(source), "-o", str(out), "--quiet"], capsys)
    assert code == 2 and "holds files psr did not write (p0.png); pass --force" in one_line(err)
    code, err = cli(["translate", str(run_dir), str(source), "-o", str(out), "--quiet", "--force"], capsys)
    assert code == 2 and one_line(err) == (
        f"{out} already holds p0.png, which psr did not write; choose a new folder."
    )
    assert os.listdir(out) == ["p0.png"] and (out / "p0.png").read_bytes() == b"the user's own p0"
    # Another name is written beside the user's file, and a rerun may overwrite psr's own output.
    assert main(["translate", str(run_dir), str(source / "p1.png"), "-o", str(out), "--quiet", "--force"]) == 0
    assert main(["translate", str(run_dir), str(source / "p1.png"), "-o", str(out), "--quiet", "--force"]) == 0
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "p0.png", "p1.png"]
    assert (out / "p0.png").read_bytes() == b"the user's own p0"


def test_translate_outputs_are_not_translated_again(run_dir, tmp_path):
    """Outputs are a psr folder outside the inputs; translating into it twice gives the same files."""
    source = photos(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["translate", str(run_dir), str(source), "-o", str(out), "--quiet"]) == 0
    first = tree_hash(out)
    assert main(["translate", str(run_dir), str(source), "-o", str(out), "--quiet"]) == 0
    assert tree_hash(out) == first and sorted(os.listdir(out)) == [OUTPUT_MARKER, "p0.png", "p1.png"]


def test_translate_never_overwrites_an_input_named_inside_the_output(run_dir, tmp_path, capsys):
    source = photos(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["translate", str(run_dir), str(source), "-o", str(out), "--quiet"]) == 0
    before = tree_hash(out)
    code, err = cli(["translate", str(run_dir), str(out / "p0.png"), "-o", str(out), "--quiet"], capsys)
    assert code == 2 and one_line(err) == (
        f"Translating into {out} would overwrite the input {out / 'p0.png'}; choose an output folder that "
        "holds no input."
    )
    assert tree_hash(out) == before


def test_translate_dot_in_a_foreign_folder_is_refused_in_a_subprocess(run_dir, tmp_path):
    work = photos(tmp_path / "work")
    before = tree_hash(work)
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "translate", str(run_dir), "p0.png", "-o", "."],
                          cwd=work, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "holds files psr did not write (p0.png, p1.png); pass --force" in one_line(done.stderr)
    assert tree_hash(work) == before


def test_translate_refuses_too_small_images_before_writing(run_dir, tmp_path, capsys):
    """Minimum side of the ResNet generator (blocks present): pad to 4 must stay below the side, and the
    side after two halvings must take the blocks' 1-pixel reflection pad: h = 5 is the first that works."""
    import tensorflow as tf

    from psr.inference import load_translator

    translator = load_translator(run_dir)
    with pytest.raises(tf.errors.InvalidArgumentError, match="paddings must be less than the dimension size"):
        translator(np.zeros((1, 4, 9, 3), np.float32))  # the oracle: the network itself fails below 5
    assert translator(np.zeros((1, 5, 9, 3), np.float32)).shape == (1, 5, 9, 3)

    source = tmp_path / "in"
    photos(source, 1, size=(12, 12))
    Image.fromarray(np.zeros((4, 30, 3), np.uint8)).save(source / "thin.png")
    out = tmp_path / "out"
    for model in (run_dir, run_dir / "export"):
        code, err = cli(["translate", str(model), str(source), "-o", str(out), "--quiet"], capsys)
        assert code == 2 and one_line(err) == (
            f"{source / 'thin.png'} is 30x4 pixels; this generator needs at least 5 pixels per side. "
            "Upscale the image or leave it out."
        )
        assert not out.exists()


# === eval ===


def test_eval_checks_metric_names_before_translating(run_dir, capsys):
    before = tree_hash(run_dir)
    code, err = cli(["eval", str(run_dir), "--metrics", "fid,kdi"], capsys)
    assert code == 2
    assert one_line(err) == "--metrics: unknown metric 'kdi'; valid metrics: fcn, fid, kid, lpips, miou. Did you mean 'kid'?"
    assert tree_hash(run_dir) == before and not (run_dir / "eval").exists()


def test_translate_split_replaces_only_its_own_folder(run_dir, tmp_path):
    from psr.errors import OutputError
    from psr.evaluation import translate_split
    from psr.inference import load_translator

    translator = load_translator(run_dir)
    source = photos(tmp_path / "test", 3, size=(16, 16))
    out = tmp_path / "eval" / "translations"
    translate_split(translator, source, out, image_size=16)
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "p0.png", "p1.png", "p2.png"]
    translate_split(translator, source, out, image_size=16, max_images=1)
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "p0.png"]  # psr's earlier files replaced, not kept

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.png").write_bytes(b"user")
    with pytest.raises(OutputError, match=r"holds files psr did not write \(keep.png\); move those files elsewhere"):
        translate_split(translator, source, foreign, image_size=16)
    assert os.listdir(foreign) == ["keep.png"]
    with pytest.raises(OutputError, match="lies inside the input"):
        translate_split(translator, source, source / "t", image_size=16)


# === run and import-torch ===


def test_run_refuses_a_foreign_run_directory(tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "export").mkdir()
    (folder / "export" / "model.onnx").write_bytes(b"user model")
    raw = tiny_raw(tmp_path, log={"run_dir": str(folder)})
    before = tree_hash(folder)
    code, err = cli(["run", str(write_yaml(tmp_path / "e.yaml", raw)), "--quiet"], capsys)
    assert code == 2 and one_line(err) == (
        f"{folder} is not empty and is not a psr run directory (it holds export); "
        "pass another --run-dir (or --set log.run_dir=...)."
    )
    assert tree_hash(folder) == before and not (folder / RUN_MARKER).exists()


def test_import_torch_refuses_a_non_empty_or_file_output(tmp_path, capsys):
    spec = REPO / "experiments" / "horse2zebra.yaml"
    (tmp_path / "w.pth").write_bytes(b"not read: the output is checked first")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    code, err = cli(["import-torch", str(tmp_path / "w.pth"), "--spec", str(spec), "-o", str(taken)], capsys)
    assert code == 2 and one_line(err) == (
        f"Output folder {taken} is not empty; choose a new folder for the imported model."
    )
    code, err = cli(["import-torch", str(tmp_path / "w.pth"), "--spec", str(spec), "-o", str(tmp_path / "w.pth")],
                    capsys)
    assert code == 2 and "is a file, not a folder" in one_line(err)
    assert os.listdir(taken) == ["x"]
