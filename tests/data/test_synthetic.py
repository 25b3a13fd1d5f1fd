import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from psr.data.synthetic import MARKER_NAME, SPLITS, STRIPE_COLOR, encode_png, make_shapes_dataset
from psr.errors import DatasetError

SMALL = {"image_size": 32, "num_train": 12, "num_test": 5, "seed": 0}


def _digest(root):
    """Hash of every file's relative path and bytes."""
    hasher = hashlib.sha256()
    for directory, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            path = os.path.join(directory, name)
            hasher.update(os.path.relpath(path, root).encode())
            hasher.update(open(path, "rb").read())
    return hasher.hexdigest()


def _load(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_two_generations_are_byte_identical(tmp_path):
    first = make_shapes_dataset(tmp_path / "one", **SMALL)
    second = make_shapes_dataset(tmp_path / "two", **SMALL)
    assert _digest(first) == _digest(second)


def test_other_seed_gives_other_images(tmp_path):
    first = make_shapes_dataset(tmp_path / "one", **SMALL)
    second = make_shapes_dataset(tmp_path / "two", **{**SMALL, "seed": 1})
    assert (first / "trainA" / "0000.png").read_bytes() != (second / "trainA" / "0000.png").read_bytes()


def test_layout_counts_and_sizes(tmp_path):
    root = make_shapes_dataset(tmp_path / "shapes", **SMALL)
    counts = {split: len(os.listdir(root / split)) for split in SPLITS}
    assert counts == {"trainA": 12, "trainB": 12, "testA": 5, "testB": 5, "testA_target": 5}
    assert sorted(os.listdir(root / "testA")) == sorted(os.listdir(root / "testA_target"))
    image = Image.open(root / "trainB" / "0003.png")
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (32, 32)


def test_default_generation_fills_every_split(tmp_path):
    # Generation speed is a benchmark matter, not a timed test (machines and load differ).
    root = make_shapes_dataset(tmp_path / "shapes")
    assert len(os.listdir(root / "trainA")) >= 100


def test_target_differs_from_input_only_inside_shapes(tmp_path):
    root = make_shapes_dataset(tmp_path / "shapes", **SMALL)
    for name in sorted(os.listdir(root / "testA")):
        source = _load(root / "testA" / name)
        target = _load(root / "testA_target" / name)
        # The plain background is the most frequent colour; shapes are everything else.
        colours, counts = np.unique(source.reshape(-1, 3), axis=0, return_counts=True)
        background = colours[np.argmax(counts)]
        shape_mask = np.any(source != background, axis=-1)
        changed = np.any(source != target, axis=-1)
        assert changed.any(), name  # there are stripes
        assert not (changed & ~shape_mask).any(), name  # nothing outside the shapes changed
        # Inside the shapes, changed pixels are exactly the dark stripe colour.
        np.testing.assert_array_equal(target[changed], np.tile(STRIPE_COLOR, (changed.sum(), 1)))


def test_domain_b_has_stripes_and_domain_a_has_none(tmp_path):
    root = make_shapes_dataset(tmp_path / "shapes", **SMALL)
    dark = np.array(STRIPE_COLOR)

    def count_striped(split):
        return sum(np.all(_load(path) == dark, axis=-1).any() for path in sorted((root / split).iterdir()))

    with_stripes_b, with_stripes_a = count_striped("trainB"), count_striped("trainA")
    assert with_stripes_b == 12 and with_stripes_a == 0


def test_png_encoder_round_trips_through_pil():
    pixels = np.random.RandomState(0).randint(0, 256, size=(150, 160, 3)).astype(np.uint8)  # > 64 KiB raw
    decoded = Image.open(io.BytesIO(encode_png(pixels)))
    np.testing.assert_array_equal(np.asarray(decoded), pixels)


def test_complete_dataset_is_not_rewritten(tmp_path):
    root = make_shapes_dataset(tmp_path / "shapes", **SMALL)
    marker_time = os.stat(root / MARKER_NAME).st_mtime_ns
    file_time = os.stat(root / "trainA" / "0000.png").st_mtime_ns
    make_shapes_dataset(tmp_path / "shapes", **SMALL)
    assert os.stat(root / MARKER_NAME).st_mtime_ns == marker_time
    assert os.stat(root / "trainA" / "0000.png").st_mtime_ns == file_time


def test_marker_records_version_and_arguments(tmp_path):
    root = make_shapes_dataset(tmp_path / "shapes", **SMALL)
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["version"] >= 1
    assert {key: marker[key] for key in SMALL} == SMALL


def test_partial_dataset_is_regenerated(tmp_path):
    reference = _digest(make_shapes_dataset(tmp_path / "reference", **SMALL))
    root = make_shapes_dataset(tmp_path / "shapes", **SMALL)
    os.remove(root / "testB" / "0002.png")
    make_shapes_dataset(root, **SMALL)
    assert _digest(root) == reference
    # Same when the marker itself is missing (generation interrupted before it).
    os.remove(root / MARKER_NAME)
    os.remove(root / "trainA" / "0001.png")
    make_shapes_dataset(root, **SMALL)
    assert _digest(root) == reference


def test_other_arguments_regenerate(tmp_path):
    root = make_shapes_dataset(tmp_path / "shapes", **SMALL)
    make_shapes_dataset(root, **{**SMALL, "num_train": 3})
    assert len(os.listdir(root / "trainA")) == 3
    assert json.loads((root / MARKER_NAME).read_text())["num_train"] == 3
    assert [entry for entry in os.listdir(tmp_path) if entry != "shapes"] == []  # no leftovers


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "mine" / "trainA").mkdir(parents=True)
    (tmp_path / "mine" / "trainA" / "horse.jpg").write_bytes(b"precious")
    with pytest.raises(DatasetError, match="not a generated shapes dataset"):
        make_shapes_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "trainA" / "horse.jpg").read_bytes() == b"precious"


@pytest.mark.parametrize("kwargs", [{"image_size": 30}, {"num_train": 0}, {"num_test": -1}, {"seed": -1}])
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    with pytest.raises(ValueError, match="Received"):
        make_shapes_dataset(tmp_path / "shapes", **{**SMALL, **kwargs})


def test_a_failed_generation_leaves_neither_the_dataset_nor_a_staging_folder(tmp_path, monkeypatch):
    import errno

    from psr.errors import StorageError

    calls = {"n": 0}
    real_fsync = os.fsync

    def fills_up(fd):
        calls["n"] += 1
        if calls["n"] == 5:  # while the staged images are synced
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    with pytest.raises(StorageError, match="no space left on the device"):
        make_shapes_dataset(tmp_path / "shapes", image_size=16, num_train=2, num_test=1)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    make_shapes_dataset(tmp_path / "shapes", image_size=16, num_train=2, num_test=1)
    assert sorted(os.listdir(tmp_path)) == ["shapes"]
