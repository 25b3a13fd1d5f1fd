"""The generated three-domain quickstart dataset: byte stability, layout, ground truth, scoring."""

import hashlib
import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from psr.data.multidomain import discover_domains
from psr.data.synthetic import STRIPE_COLOR
from psr.data.synthetic_multidomain import (
    DOMAIN_NAMES,
    MARKER_NAME,
    STYLES,
    VAL_TARGET,
    draw_scene,
    make_multidomain_dataset,
    multidomain_dataset_ready,
    render_scene,
)
from psr.errors import DatasetError
from psr.evaluation_multimodal import content_scores_by_task

SMALL = {"image_size": 16, "num_train": 3, "num_val": 2, "seed": 0}


def _digest(root):
    hasher = hashlib.sha256()
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            path = os.path.join(directory, name)
            hasher.update(os.path.relpath(path, root).encode())
            hasher.update(open(path, "rb").read())
    return hasher.hexdigest()


def _load(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_byte_stable_and_seeded(tmp_path):
    first = _digest(make_multidomain_dataset(tmp_path / "one", **SMALL))
    assert first == _digest(make_multidomain_dataset(tmp_path / "two", **SMALL))
    assert first != _digest(make_multidomain_dataset(tmp_path / "three", **{**SMALL, "seed": 1}))
    scene = draw_scene(np.random.RandomState(4), 32)
    for domain in DOMAIN_NAMES:
        assert render_scene(scene, domain, 32).tobytes() == render_scene(scene, domain, 32).tobytes()
    assert draw_scene(np.random.RandomState(4), 32) == scene


def test_layout_and_marker(tmp_path):
    root = make_multidomain_dataset(tmp_path / "md", **SMALL)
    assert sorted(os.listdir(root)) == sorted([MARKER_NAME, "train", "val", VAL_TARGET])
    assert DOMAIN_NAMES == ("night", "plain", "striped")
    for split in ("train", "val", VAL_TARGET):
        assert sorted(os.listdir(root / split)) == list(DOMAIN_NAMES)
    assert sorted(os.listdir(root / "train" / "plain")) == ["0000.png", "0001.png", "0002.png"]
    assert sorted(os.listdir(root / "val" / "night")) == ["0000.png", "0001.png"]
    assert sorted(os.listdir(root / "val" / "plain")) == ["0002.png", "0003.png"]
    assert sorted(os.listdir(root / "val" / "striped")) == ["0004.png", "0005.png"]
    for domain in DOMAIN_NAMES:
        assert sorted(os.listdir(root / VAL_TARGET / domain)) == [f"{i:04d}.png" for i in range(6)]
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["version"] >= 1 and marker["domains"] == list(DOMAIN_NAMES)
    assert {key: marker[key] for key in SMALL} == SMALL
    # The multi-domain loader reads it: three domains in label order, on both splits.
    assert [d.name for d in discover_domains(root, "train", 3)] == list(DOMAIN_NAMES)
    assert [len(d.files) for d in discover_domains(root, "val", 3)] == [2, 2, 2]
    assert _load(root / "train" / "night" / "0000.png").shape == (16, 16, 3)
    assert multidomain_dataset_ready(root, **SMALL)
    assert not multidomain_dataset_ready(root, **{**SMALL, "num_val": 3})


def _colour_map(source, target):
    """{source colour: target colour} over all pixels; fails when a colour maps to two colours."""
    mapping = {}
    for a, b in zip(map(tuple, source.reshape(-1, 3)), map(tuple, target.reshape(-1, 3))):
        assert mapping.setdefault(a, b) == b
    return mapping


def test_ground_truth_renders_the_same_content_in_each_style(tmp_path):
    root = make_multidomain_dataset(tmp_path / "md", **{**SMALL, "image_size": 32, "num_val": 4})
    dark_rows = (np.arange(32) // 2) % 2 == 1
    for domain in DOMAIN_NAMES:
        for name in sorted(os.listdir(root / "val" / domain)):
            # The val image is the ground truth of its own domain.
            assert (root / "val" / domain / name).read_bytes() == (root / VAL_TARGET / domain / name).read_bytes()
            night, plain, striped = (_load(root / VAL_TARGET / d / name) for d in DOMAIN_NAMES)
            # night ↔ plain: one colour ↔ one colour both ways, so the layouts are identical.
            forward, backward = _colour_map(plain, night), _colour_map(night, plain)
            assert len(forward) == len(backward) >= 2
            assert all(backward[b] == a for a, b in forward.items())
            assert not np.array_equal(plain, night)
            # plain → striped: only dark-row pixels inside the shapes change, and to the stripe colour.
            background = STYLES["plain"].backgrounds
            inside = ~np.any([np.all(plain == colour, axis=-1) for colour in background], axis=0)
            changed = np.any(plain != striped, axis=-1)
            assert changed.any()
            assert not (changed & ~inside).any() and not (changed & ~dark_rows[:, None]).any()
            np.testing.assert_array_equal(striped[changed], np.tile(STRIPE_COLOR, (changed.sum(), 1)))
            np.testing.assert_array_equal(changed, inside & dark_rows[:, None])


def test_idempotent_regenerates_partial_and_refuses_foreign(tmp_path):
    root = make_multidomain_dataset(tmp_path / "md", **SMALL)
    reference = _digest(root)
    stamp = os.stat(root / "val" / "plain" / "0002.png").st_mtime_ns
    make_multidomain_dataset(root, **SMALL)
    assert os.stat(root / "val" / "plain" / "0002.png").st_mtime_ns == stamp
    os.remove(root / VAL_TARGET / "striped" / "0005.png")
    make_multidomain_dataset(root, **SMALL)
    assert _digest(root) == reference
    assert sorted(os.listdir(tmp_path)) == ["md"]  # no staging leftovers

    (tmp_path / "mine" / "train" / "cats").mkdir(parents=True)
    (tmp_path / "mine" / "train" / "cats" / "0001.png").write_bytes(b"precious")
    with pytest.raises(DatasetError, match="not a generated multi-domain dataset"):
        make_multidomain_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "train" / "cats" / "0001.png").read_bytes() == b"precious"
    with pytest.raises(ValueError, match="Received"):
        make_multidomain_dataset(tmp_path / "x", **{**SMALL, "image_size": 18})


def test_content_scores_by_task(tmp_path):
    root = make_multidomain_dataset(tmp_path / "md", **SMALL)
    out = tmp_path / "translations"
    # night2plain: perfect translations (the ground truth) → PSNR inf, SSIM 1.
    (out / "night2plain").mkdir(parents=True)
    for name in os.listdir(root / "val" / "night"):
        shutil.copy(root / VAL_TARGET / "plain" / name, out / "night2plain" / name)
    # plain2striped: the unchanged input (an identity "translation") → finite PSNR computed by hand.
    (out / "plain2striped" / "0").mkdir(parents=True)
    expected_psnr = []
    for name in sorted(os.listdir(root / "val" / "plain")):
        shutil.copy(root / "val" / "plain" / name, out / "plain2striped" / "0" / name)
        error = _load(root / "val" / "plain" / name).astype(np.float64) - _load(root / VAL_TARGET / "striped" / name)
        expected_psnr.append(10 * math.log10(255.0**2 / np.mean(error**2)))
    scores = content_scores_by_task(out, root)
    assert set(scores["tasks"]) == {"night2plain", "plain2striped"}
    assert scores["tasks"]["night2plain"]["psnr"] == math.inf
    assert scores["tasks"]["night2plain"]["ssim"] == pytest.approx(1.0)
    assert scores["tasks"]["plain2striped"]["psnr"] == pytest.approx(np.mean(expected_psnr), rel=1e-9)
    assert scores["tasks"]["plain2striped"]["ssim"] < 1.0
    assert scores["ssim"] == pytest.approx(np.mean([t["ssim"] for t in scores["tasks"].values()]))

    (out / "day2night").mkdir()
    with pytest.raises(DatasetError, match="not named <source>2<target>"):
        content_scores_by_task(out, root)


def test_builder_generates_on_first_use_and_reads_the_domains(tmp_path):
    from psr.config import DataConfig, SyntheticDataConfig
    from psr.data.builders import multidomain_training_data, prepare_dataset_root

    synthetic = SyntheticDataConfig(kind="scenes", image_size=16, num_train=3, num_test=2, seed=0)
    cfg = DataConfig(root=str(tmp_path / "md"), crop_size=16, synthetic=synthetic)
    data = multidomain_training_data(cfg, batch_size=2, seed=1)
    assert data.domain_names == list(DOMAIN_NAMES) and data.num_images == 9 and data.steps_per_epoch == 4
    assert _digest(tmp_path / "md") == _digest(make_multidomain_dataset(tmp_path / "direct", **SMALL))
    # A non-chief worker finds it ready and does not write.
    assert prepare_dataset_root(cfg, create=False, wait_seconds=0.0) == tmp_path / "md"
    (x, y), _ = next(iter(data.dataset()))
    assert x.shape == (2, 16, 16, 3) and y.shape == (2,)
