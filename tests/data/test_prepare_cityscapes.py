"""tools/prepare_cityscapes.py on a fake, tiny Cityscapes tree."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psr.errors import DatasetError

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "prepare_cityscapes.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("prepare_cityscapes_tool", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

FRAMES = {
    "train": [("aachen", "000000_000019"), ("bochum", "000001_000019")],
    "val": [("lindau", "000002_000019")],
}


def _fake_cityscapes(base):
    """gtFine/<phase>/<city>/*_gtFine_color.png (RGBA, as released) and leftImg8bit photos."""
    rng = np.random.RandomState(0)
    written = {}
    for phase, frames in FRAMES.items():
        for city, frame in frames:
            stem = f"{city}_{frame}"
            label = rng.randint(0, 256, size=(32, 64, 4)).astype(np.uint8)
            photo = rng.randint(0, 256, size=(32, 64, 3)).astype(np.uint8)
            labels, photos = base / "gtFine" / phase / city, base / "leftImg8bit" / phase / city
            labels.mkdir(parents=True, exist_ok=True)
            photos.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label, mode="RGBA").save(labels / f"{stem}_gtFine_color.png")
            Image.fromarray(photo).save(photos / f"{stem}_leftImg8bit.png")
            # Other gtFine files must be ignored.
            Image.fromarray(label[..., 0]).save(labels / f"{stem}_gtFine_labelIds.png")
            written.setdefault(phase, []).append((photo, label))
    return written


def _oracle_jpeg(pixels, size, tmp_path):
    """What the reference writes: convert RGB, resize, JPEG quality 100 without subsampling."""
    path = tmp_path / "oracle.jpg"
    Image.fromarray(pixels).convert("RGB").resize((size, size), Image.BICUBIC).save(
        path, format="JPEG", quality=100, subsampling=0
    )
    return np.asarray(Image.open(path))


def test_builds_unpaired_layout(tmp_path):
    written = _fake_cityscapes(tmp_path / "raw")
    output = tool.prepare_cityscapes(
        tmp_path / "raw" / "gtFine", tmp_path / "raw" / "leftImg8bit", tmp_path / "out", size=16
    )
    assert sorted(p.name for p in (output / "trainA").iterdir()) == ["0_A.jpg", "1_A.jpg"]
    assert sorted(p.name for p in (output / "trainB").iterdir()) == ["0_B.jpg", "1_B.jpg"]
    assert [p.name for p in (output / "testA").iterdir()] == ["0_A.jpg"]
    assert [p.name for p in (output / "testB").iterdir()] == ["0_B.jpg"]
    for phase, folder in (("train", "train"), ("val", "test")):
        for index, (photo, label) in enumerate(written[phase]):
            stored_photo = Image.open(output / f"{folder}A" / f"{index}_A.jpg")
            assert stored_photo.format == "JPEG" and stored_photo.size == (16, 16)
            np.testing.assert_array_equal(np.asarray(stored_photo), _oracle_jpeg(photo, 16, tmp_path))
            stored_label = np.asarray(Image.open(output / f"{folder}B" / f"{index}_B.jpg"))
            np.testing.assert_array_equal(stored_label, _oracle_jpeg(label, 16, tmp_path))


def test_accepts_archive_folders_above_gtfine(tmp_path):
    _fake_cityscapes(tmp_path / "raw")
    code = tool.main(
        ["--gtfine-dir", str(tmp_path / "raw"), "--leftimg8bit-dir", str(tmp_path / "raw"),
         "--output-dir", str(tmp_path / "out"), "--size", "8"]
    )
    assert code == 0
    assert Image.open(tmp_path / "out" / "trainA" / "1_A.jpg").size == (8, 8)


def test_mismatched_pairs_are_refused(tmp_path):
    _fake_cityscapes(tmp_path / "raw")
    photo = tmp_path / "raw" / "leftImg8bit" / "val" / "lindau" / "lindau_000002_000019_leftImg8bit.png"
    photo.rename(photo.with_name("lindau_000009_000019_leftImg8bit.png"))
    with pytest.raises(DatasetError, match="does not match"):
        tool.prepare_cityscapes(
            tmp_path / "raw" / "gtFine", tmp_path / "raw" / "leftImg8bit", tmp_path / "out"
        )
    assert not (tmp_path / "out").exists()


def test_missing_folder_exits_2_with_one_line(tmp_path, capsys):
    code = tool.main(["--gtfine-dir", str(tmp_path / "nope"), "--leftimg8bit-dir", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2
    assert "nope" in error and "--gtfine-dir" in error and error.count("\n") == 1
