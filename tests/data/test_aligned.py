"""Paired (aligned) data: the A|B split, shared transforms, loaders, the generated paired shapes and builders."""

import os

import numpy as np
import pytest
from PIL import Image

from psr.config import DataConfig, SyntheticDataConfig, config_from_dict
from psr.data.aligned import AlignedDataset, aligned_test_pairs, split_pair
from psr.data.builders import build_training_data, fixed_sample_batch, prepare_dataset_root
from psr.data.synthetic import STRIPE_COLOR, STRIPE_WIDTH, make_shapes_dataset
from psr.data.synthetic_paired import MARKER_NAME, make_paired_shapes_dataset, paired_shapes_dataset_ready
from psr.errors import ConfigError, DatasetError

# One grey level in [-1, 1] units, plus float32 rounding of x / 127.5 - 1 (|x| <= 1, a few ulps).
GREY_LEVEL = 1.0 / 127.5
FLOAT_SLACK = 4 * np.finfo(np.float32).eps


def _save(folder, name, pixels):
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(os.path.join(folder, name))


def _unit(pixels):
    return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _bicubic(pixels, width, height):
    """Oracle resize: PIL bicubic, as the reference transform does."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize((width, height), Image.BICUBIC))


def _write_related_pairs(folder, count, height, half_width, relation, seed):
    """Noise A halves (every pixel random) beside B = relation(A); returns the A halves in sorted order."""
    rng = np.random.RandomState(seed)
    halves = []
    for index in range(count):
        half_a = rng.randint(0, 256, size=(height, half_width, 3)).astype(np.uint8)
        _save(folder, f"{index:02d}.png", np.concatenate([half_a, relation(half_a)], axis=1))
        halves.append(half_a)
    return halves


def _reverse_channels(pixels):
    return pixels[..., ::-1]


def _negative(pixels):
    return 255 - pixels


def _find_crop(output, candidates, crop):
    """(index, top, left, flipped) of the window of a candidate image equal to `output`, or None."""
    for index, candidate in enumerate(candidates):
        height, width = candidate.shape[:2]
        for top in range(height - crop + 1):
            for left in range(width - crop + 1):
                window = _unit(candidate[top : top + crop, left : left + crop])
                if np.array_equal(output, window):
                    return index, top, left, False
                if np.array_equal(output, window[:, ::-1]):
                    return index, top, left, True
    return None


def _epoch(dataset):
    """One epoch as (sources, targets) NumPy arrays, batches concatenated."""
    pairs = [(np.asarray(source), np.asarray(target)) for source, target in dataset]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


@pytest.fixture
def related_root(tmp_path):
    """Six pairs of 20×20 halves whose B half is A with its channels reversed (kept exactly by PIL)."""
    halves = _write_related_pairs(tmp_path / "train", 6, 20, 20, _reverse_channels, seed=1)
    return tmp_path, halves


# === The split ===


def test_split_pair_cuts_at_half_width_and_drops_an_odd_last_column():
    image = np.zeros((2, 7, 3), np.uint8)
    image[..., 0] = np.arange(7) * 10  # column c holds 10·c
    half_a, half_b = split_pair(image)
    assert half_a.shape == half_b.shape == (2, 3, 3)
    np.testing.assert_array_equal(half_a[0, :, 0], [0, 10, 20])
    np.testing.assert_array_equal(half_b[0, :, 0], [30, 40, 50])


def test_halves_reach_the_batches_exactly_in_both_directions(tmp_path):
    # Hand-made 8×16 file: left half holds 10·column + row, right half 200 + row (known values).
    rows, columns = np.mgrid[0:8, 0:8]
    left = np.repeat((10 * columns + rows)[..., None], 3, axis=-1).astype(np.uint8)
    right = np.repeat((200 + rows)[..., None], 3, axis=-1).astype(np.uint8)
    _save(tmp_path / "train", "00.png", np.concatenate([left, right], axis=1))
    common = dict(load_size=8, crop_size=8, preprocess="none", flip=False)

    source, target = _epoch(AlignedDataset(tmp_path, direction="AtoB", **common).dataset())
    np.testing.assert_array_equal(source[0], _unit(left))
    np.testing.assert_array_equal(target[0], _unit(right))
    assert float(source[0, 3, 5, 0]) == pytest.approx(53 / 127.5 - 1)  # row 3, column 5

    source, target = _epoch(AlignedDataset(tmp_path, direction="BtoA", **common).dataset())
    np.testing.assert_array_equal(source[0], _unit(right))
    np.testing.assert_array_equal(target[0], _unit(left))


# === The same random transform for both halves ===


@pytest.mark.parametrize("preprocess,load_size", [("resize_and_crop", 24), ("crop", 16),
                                                  ("scale_width_and_crop", 24)])
def test_both_halves_get_the_same_crop_and_flip(related_root, preprocess, load_size):
    root, halves = related_root
    data = AlignedDataset(root, load_size=load_size, crop_size=16, preprocess=preprocess, batch_size=2, seed=3)
    dataset = data.dataset()
    resized = [half if preprocess == "crop" else _bicubic(half, load_size, load_size) for half in halves]
    flips, offsets = set(), set()
    for _ in range(3):
        sources, targets = _epoch(dataset)
        assert sources.shape == targets.shape == (6, 16, 16, 3)
        # B = reversed channels of A survives exactly only if both halves got the same crop and flip.
        np.testing.assert_array_equal(targets, sources[..., ::-1])
        for source in sources[:2]:
            match = _find_crop(source, resized, 16)
            assert match is not None  # the source is a crop of the PIL-resized A half
            offsets.add(match[1:3])
            flips.add(match[3])
    assert flips == {False, True}
    assert len(offsets) > 1


def test_a_negative_b_half_stays_negative_under_resize(tmp_path):
    # B = 255 − A: crops and flips keep it exactly; PIL's bicubic keeps it to one grey level (rounding).
    _write_related_pairs(tmp_path / "train", 4, 20, 20, _negative, seed=2)
    for preprocess, tolerance in (("crop", FLOAT_SLACK), ("resize_and_crop", GREY_LEVEL + FLOAT_SLACK)):
        data = AlignedDataset(tmp_path, load_size=24, crop_size=16, preprocess=preprocess, batch_size=2, seed=5)
        sources, targets = _epoch(data.dataset())
        np.testing.assert_allclose(targets, -sources, rtol=0, atol=tolerance)


def test_jitter_off_resizes_both_halves_straight_to_crop_size(related_root):
    root, halves = related_root
    data = AlignedDataset(root, load_size=24, crop_size=16, flip=False, seed=0)
    data.jitter.assign(False)
    sources, targets = _epoch(data.dataset())
    straight = [_unit(_bicubic(half, 16, 16)) for half in halves]
    for source, target in zip(sources, targets):
        matches = [i for i, image in enumerate(straight) if np.array_equal(source, image)]
        assert len(matches) == 1
        np.testing.assert_array_equal(target, straight[matches[0]][..., ::-1])


def test_direction_swap_exchanges_source_and_target(related_root):
    root, _ = related_root
    common = dict(load_size=24, crop_size=16, batch_size=3, seed=11)
    a_to_b = _epoch(AlignedDataset(root, direction="AtoB", **common).dataset())
    b_to_a = _epoch(AlignedDataset(root, direction="BtoA", **common).dataset())
    # Same seed: same order, crops and flips, with the roles of the halves exchanged.
    np.testing.assert_array_equal(b_to_a[0], a_to_b[1])
    np.testing.assert_array_equal(b_to_a[1], a_to_b[0])
    assert not np.array_equal(a_to_b[0], a_to_b[1])


# === Order, determinism, sizes ===


def test_same_seed_gives_same_epochs_and_epochs_differ(related_root):
    root, _ = related_root

    def two_epochs(seed):
        dataset = AlignedDataset(root, load_size=24, crop_size=16, batch_size=2, seed=seed).dataset()
        return [_epoch(dataset)[0] for _ in range(2)]

    first, second, other = two_epochs(7), two_epochs(7), two_epochs(8)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], other[0])


def test_steps_per_epoch_and_each_epoch_shows_distinct_pairs(tmp_path):
    # Solid 4×4 halves: left = 20·i, right = 20·i + 7, so a pixel names its pair.
    for index in range(5):
        left, right = np.full((4, 4, 3), 20 * index, np.uint8), np.full((4, 4, 3), 20 * index + 7, np.uint8)
        _save(tmp_path / "train", f"{index}.png", np.concatenate([left, right], axis=1))
    data = AlignedDataset(tmp_path, load_size=4, crop_size=4, batch_size=2, seed=0)
    assert (data.num_pairs, data.num_a, data.num_b, data.steps_per_epoch) == (5, 5, 5, 2)
    assert data.describe() == {"train_pairs": 5, "steps_per_epoch": 2}
    dataset, seen = data.dataset(), set()
    for _ in range(6):
        batches = [(np.asarray(s), np.asarray(t)) for s, t in dataset]
        assert len(batches) == 2 and all(s.shape == (2, 4, 4, 3) for s, _ in batches)
        levels = [round((float(s[k, 0, 0, 0]) + 1) * 127.5) for s, _ in batches for k in range(2)]
        targets = [round((float(t[k, 0, 0, 0]) + 1) * 127.5) for _, t in batches for k in range(2)]
        assert len(set(levels)) == 4 and targets == [level + 7 for level in levels]
        seen |= set(levels)
    assert seen == {0, 20, 40, 60, 80}  # the dropped remainder changes between epochs


def test_max_dataset_size_keeps_the_first_sorted_files(related_root):
    root, _ = related_root
    data = AlignedDataset(root, load_size=24, crop_size=16, max_dataset_size=4, batch_size=4)
    assert [os.path.basename(path) for path in data.paths] == ["00.png", "01.png", "02.png", "03.png"]
    assert data.steps_per_epoch == 1


def test_odd_widths_and_other_aspect_ratios_are_accepted(tmp_path):
    _save(tmp_path / "train", "odd.png", np.zeros((8, 17, 3), np.uint8))
    _save(tmp_path / "train", "wide.png", np.zeros((8, 40, 3), np.uint8))
    sources, targets = _epoch(AlignedDataset(tmp_path, load_size=8, crop_size=8, batch_size=2).dataset())
    assert sources.shape == targets.shape == (2, 8, 8, 3)


# === Errors ===


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DatasetError, match=r"not found: .*train \(role: train pairs"):
        AlignedDataset(tmp_path, load_size=8, crop_size=8)


def test_empty_folder_says_no_images(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="No images in .*train"):
        AlignedDataset(tmp_path, load_size=8, crop_size=8)


def test_unreadable_file_is_named(related_root):
    root, _ = related_root
    (root / "train" / "zz.png").write_text("not a png")
    with pytest.raises(DatasetError, match="Unreadable image .*zz.png"):
        AlignedDataset(root, load_size=24, crop_size=16)


def test_image_narrower_than_two_pixels_is_named(related_root):
    root, _ = related_root
    _save(root / "train", "thin.png", np.zeros((8, 1, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"thin.png is 1x8: .* width of at least 2") as caught:
        AlignedDataset(root, load_size=24, crop_size=16)
    assert "\n" not in str(caught.value)
    with pytest.raises(DatasetError, match="thin.png"):
        aligned_test_pairs(root, "train", image_size=16)


def test_batch_larger_than_dataset(related_root):
    root, _ = related_root
    with pytest.raises(DatasetError, match=r"batch_size 7 is larger than the dataset \(6 pairs"):
        AlignedDataset(root, load_size=24, crop_size=16, batch_size=7)


def test_crop_and_none_modes_check_the_halves(tmp_path):
    _save(tmp_path / "train", "0.png", np.zeros((16, 24, 3), np.uint8))  # halves 12×16
    with pytest.raises(DatasetError, match="halves of 12x16, smaller than crop_size 16"):
        AlignedDataset(tmp_path, load_size=16, crop_size=16, preprocess="crop")
    _save(tmp_path / "train", "1.png", np.zeros((16, 40, 3), np.uint8))  # halves 20×16
    with pytest.raises(DatasetError, match="preprocess 'none' needs pairs of one size"):
        AlignedDataset(tmp_path, load_size=16, crop_size=16, preprocess="none")
    with pytest.raises(DatasetError, match="batch_size must be 1"):
        AlignedDataset(tmp_path, load_size=16, crop_size=16, preprocess="none", batch_size=2)


@pytest.mark.parametrize("kwargs", [{"direction": "AB"}, {"phase": "trainA"}, {"crop_size": 10},
                                    {"load_size": 8}, {"preprocess": "zoom"}, {"batch_size": 0}])
def test_bad_arguments_raise_value_error_quoting_the_value(related_root, kwargs):
    root, _ = related_root
    arguments = {"load_size": 24, "crop_size": 16, **kwargs}
    with pytest.raises(ValueError, match="Received"):
        AlignedDataset(root, **arguments)


# === Test-time loader ===


def _write_test_pairs(folder, names, seed):
    rng = np.random.RandomState(seed)
    pairs = {}
    for name in names:  # written in the given (unsorted) order
        pixels = rng.randint(0, 256, size=(12, 28, 3)).astype(np.uint8)  # halves 14×12
        _save(folder, name, pixels)
        pairs[name] = pixels
    return pairs


def test_test_pairs_are_sorted_resized_halves_without_flips(tmp_path):
    pairs = _write_test_pairs(tmp_path / "test", ["c.png", "a.png", "b.png"], seed=4)
    dataset, paths = aligned_test_pairs(tmp_path, "test", "BtoA", image_size=16, batch_size=2)
    assert [os.path.basename(path) for path in paths] == ["a.png", "b.png", "c.png"]
    batches = [(np.asarray(s), np.asarray(t)) for s, t in dataset]
    assert [s.shape[0] for s, _ in batches] == [2, 1]
    sources = np.concatenate([s for s, _ in batches])
    targets = np.concatenate([t for _, t in batches])
    for index, name in enumerate(["a.png", "b.png", "c.png"]):
        left, right = pairs[name][:, :14], pairs[name][:, 14:]
        np.testing.assert_array_equal(sources[index], _unit(_bicubic(right, 16, 16)))  # BtoA: right is the source
        np.testing.assert_array_equal(targets[index], _unit(_bicubic(left, 16, 16)))
    again = np.concatenate([np.asarray(s) for s, _ in dataset])
    np.testing.assert_array_equal(again, sources)


def test_test_pairs_fall_back_to_val_and_keep_sizes_without_image_size(tmp_path):
    pairs = _write_test_pairs(tmp_path / "val", ["0.png"], seed=5)
    dataset, paths = aligned_test_pairs(tmp_path, "test", "AtoB", image_size=None)
    assert paths == [str(tmp_path / "val" / "0.png")]
    source, target = next(iter(dataset))
    # Halves 14×12 round to 16×12 (PIL bicubic), as preprocess 'none'.
    np.testing.assert_array_equal(np.asarray(source)[0], _unit(_bicubic(pairs["0.png"][:, :14], 16, 12)))
    np.testing.assert_array_equal(np.asarray(target)[0], _unit(_bicubic(pairs["0.png"][:, 14:], 16, 12)))
    _write_test_pairs(tmp_path / "test", ["9.png"], seed=6)
    assert aligned_test_pairs(tmp_path, "test", image_size=8)[1] == [str(tmp_path / "test" / "9.png")]
    with pytest.raises(DatasetError, match="batch_size must be 1"):
        aligned_test_pairs(tmp_path, "test", image_size=None, batch_size=2)


# === Generated paired shapes ===

PAIRED = {"image_size": 16, "num_train": 4, "num_test": 3, "seed": 0}


def test_paired_shapes_left_plain_right_striped_same_shapes(tmp_path):
    root = make_paired_shapes_dataset(tmp_path / "paired", **PAIRED)
    assert sorted(os.listdir(root)) == [MARKER_NAME, "test", "train"]
    assert sorted(os.listdir(root / "train")) == ["0000.png", "0001.png", "0002.png", "0003.png"]
    dark_rows = (np.arange(16) // STRIPE_WIDTH) % 2 == 1
    striped_pixels = 0
    for folder in ("train", "test"):
        for name in sorted(os.listdir(root / folder)):
            pixels = np.asarray(Image.open(root / folder / name).convert("RGB"))
            assert pixels.shape == (16, 32, 3)
            left, right = pixels[:, :16], pixels[:, 16:]
            # Shape colours have a channel <= 60, backgrounds none: that finds the shapes of the plain half.
            inside = left.min(axis=-1) <= 60
            assert inside.any() and not (left == STRIPE_COLOR).all(axis=-1).any()
            expected = np.where((inside & dark_rows[:, None])[..., None], np.array(STRIPE_COLOR, np.uint8), left)
            np.testing.assert_array_equal(right, expected)
            striped_pixels += int((inside & dark_rows[:, None]).sum())
    assert striped_pixels > 0


def test_paired_test_files_are_the_shapes_dataset_test_pairs(tmp_path):
    # The documented link to the unpaired shapes dataset: test/N = testA/N | testA_target/N.
    paired = make_paired_shapes_dataset(tmp_path / "paired", **PAIRED)
    shapes = make_shapes_dataset(tmp_path / "shapes", **PAIRED)
    for name in sorted(os.listdir(paired / "test")):
        pair = np.asarray(Image.open(paired / "test" / name))
        np.testing.assert_array_equal(pair[:, :16], np.asarray(Image.open(shapes / "testA" / name)))
        np.testing.assert_array_equal(pair[:, 16:], np.asarray(Image.open(shapes / "testA_target" / name)))


def test_paired_shapes_marker_reuse_regeneration_and_foreign_folder(tmp_path):
    root = tmp_path / "paired"
    assert not paired_shapes_dataset_ready(root, **PAIRED)
    make_paired_shapes_dataset(root, **PAIRED)
    assert paired_shapes_dataset_ready(root, **PAIRED)
    assert not paired_shapes_dataset_ready(root, **{**PAIRED, "seed": 1})
    first = (root / "train" / "0001.png").read_bytes()
    stamp = os.stat(root / "train" / "0001.png").st_mtime_ns
    make_paired_shapes_dataset(root, **PAIRED)  # complete: nothing rewritten
    assert os.stat(root / "train" / "0001.png").st_mtime_ns == stamp
    (root / "test" / "0002.png").unlink()
    assert not paired_shapes_dataset_ready(root, **PAIRED)
    make_paired_shapes_dataset(root, **PAIRED)  # incomplete generated copy: replaced
    assert paired_shapes_dataset_ready(root, **PAIRED) and (root / "train" / "0001.png").read_bytes() == first
    assert not [name for name in os.listdir(tmp_path) if name != "paired"]  # no staging left behind
    foreign = tmp_path / "mine"
    _save(foreign / "train", "photo.png", np.zeros((4, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="is not a generated paired shapes dataset"):
        make_paired_shapes_dataset(foreign, **PAIRED)
    assert (foreign / "train" / "photo.png").is_file()


# === Builders and configuration ===


def _aligned_config(root, **changes):
    synthetic = SyntheticDataConfig(kind="paired_shapes", image_size=16, num_train=4, num_test=3)
    return DataConfig(**{"kind": "aligned", "root": str(root), "load_size": 20, "crop_size": 16,
                         "synthetic": synthetic, **changes})


def test_build_training_data_generates_and_loads_paired_shapes(tmp_path):
    cfg = _aligned_config(tmp_path / "paired", direction="BtoA")
    data = build_training_data(cfg, batch_size=2, seed=0)
    assert isinstance(data, AlignedDataset) and data.direction == "BtoA"
    assert paired_shapes_dataset_ready(tmp_path / "paired", image_size=16, num_train=4, num_test=3, seed=0)
    assert data.steps_per_epoch == 2 and data.paths[0].endswith(os.path.join("train", "0000.png"))
    sources, targets = _epoch(data.dataset())
    assert sources.shape == targets.shape == (4, 16, 16, 3)
    # BtoA: the source is the striped half, so it holds the dark stripe colour and the target does not.
    stripe = _unit(np.array(STRIPE_COLOR, np.uint8))
    assert np.isclose(sources, stripe, atol=0.1).all(axis=-1).any()
    assert prepare_dataset_root(cfg, create=False) == tmp_path / "paired"  # ready: a worker does not wait


def test_fixed_sample_batch_gives_the_first_test_pairs(tmp_path):
    cfg = _aligned_config(tmp_path / "paired", direction="BtoA")
    prepare_dataset_root(cfg)
    sources, targets = fixed_sample_batch(cfg, num_samples=2)
    assert sources.shape == targets.shape == (2, 16, 16, 3)
    for index in range(2):
        pixels = np.asarray(Image.open(tmp_path / "paired" / "test" / f"{index:04d}.png"))
        np.testing.assert_array_equal(sources[index], _unit(pixels[:, 16:]))  # BtoA: the striped half
        np.testing.assert_array_equal(targets[index], _unit(pixels[:, :16]))


def test_fixed_sample_batch_uses_train_pairs_without_a_test_split(related_root):
    root, halves = related_root
    cfg = DataConfig(kind="aligned", root=str(root), load_size=24, crop_size=16)
    sources, targets = fixed_sample_batch(cfg, num_samples=3)
    assert sources.shape == (3, 16, 16, 3)
    for index in range(3):
        np.testing.assert_array_equal(sources[index], _unit(_bicubic(halves[index], 16, 16)))
        np.testing.assert_array_equal(targets[index], sources[index][..., ::-1])


def test_paired_shapes_is_aligned_data_in_the_config():
    raw = {"data": {"kind": "unaligned", "root": "x", "synthetic": {"kind": "paired_shapes"}}}
    with pytest.raises(ConfigError, match="paired_shapes is aligned data; set data.kind: aligned or "
                                          "data.synthetic.kind: shapes"):
        config_from_dict(raw)
