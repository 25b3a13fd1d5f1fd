import collections
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from psr.data.unaligned import UnalignedDataset, make_test_dataset
from psr.errors import DatasetError


def _write_noise_images(folder, count, size, seed):
    """Random-noise PNGs (each one unique); returns their uint8 arrays in sorted order."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    images = []
    for index in range(count):
        height, width = size
        pixels = rng.randint(0, 256, size=(height, width, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{index:02d}.png"))
        images.append(pixels)
    return images


def _write_solid_images(folder, values):
    """8×8 solid-grey PNGs, one per value, so an output pixel identifies its source."""
    os.makedirs(folder, exist_ok=True)
    for index, value in enumerate(values):
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(os.path.join(folder, f"{index:02d}.png"))


def _bicubic(pixels, width, height):
    """Oracle resize: PIL bicubic, as the reference transform does."""
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BICUBIC))


def _unit(pixels):
    return pixels.astype(np.float32) / 127.5 - 1.0


def _find_crop(output, candidates, crop):
    """Returns (image index, top, left, flipped) of the crop equal to `output`, or None."""
    for index, candidate in enumerate(candidates):
        height, width = candidate.shape[:2]
        for top in range(height - crop + 1):
            for left in range(width - crop + 1):
                window = _unit(candidate[top : top + crop, left : left + crop])
                if np.allclose(output, window, atol=1e-6):
                    return index, top, left, False
                if np.allclose(output, window[:, ::-1], atol=1e-6):
                    return index, top, left, True
    return None


def _solid_index(batch, values):
    """Index of the solid value an image batch element came from."""
    value = int(round((float(batch[0, 0, 0]) + 1.0) * 127.5))
    return values.index(value)


@pytest.fixture
def noise_root(tmp_path):
    images_a = _write_noise_images(tmp_path / "trainA", 5, (20, 24), seed=1)
    images_b = _write_noise_images(tmp_path / "trainB", 3, (28, 20), seed=2)
    return tmp_path, images_a, images_b


A_VALUES = [0, 40, 80, 120, 160, 200]
B_VALUES = [5, 45, 85, 125]


@pytest.fixture
def solid_root(tmp_path):
    _write_solid_images(tmp_path / "trainA", A_VALUES)
    _write_solid_images(tmp_path / "trainB", B_VALUES)
    return tmp_path


# === Construction ===


def test_counts_and_steps_per_epoch(noise_root):
    root, _, _ = noise_root
    data = UnalignedDataset(root, load_size=20, crop_size=16, batch_size=2)
    assert (data.num_a, data.num_b) == (5, 3)
    assert data.steps_per_epoch == 2  # max(5, 3) // 2


def test_batch_larger_than_dataset_raises_clear_error(noise_root):
    root, _, _ = noise_root
    with pytest.raises(DatasetError) as caught:
        UnalignedDataset(root, load_size=20, crop_size=16, batch_size=8)
    assert "batch_size 8 is larger than the dataset (5 images" in str(caught.value)


def test_direction_btoa_swaps_folders(noise_root):
    root, _, _ = noise_root
    data = UnalignedDataset(root, direction="BtoA", load_size=20, crop_size=16)
    assert (data.num_a, data.num_b) == (3, 5)
    assert all("trainB" in path for path in data.paths_a)


def test_max_dataset_size_keeps_first_sorted_images(noise_root):
    root, _, _ = noise_root
    data = UnalignedDataset(root, load_size=20, crop_size=16, max_dataset_size=2)
    assert [os.path.basename(path) for path in data.paths_a] == ["00.png", "01.png"]
    assert data.steps_per_epoch == 2


def test_missing_domain_folder_raises(tmp_path):
    _write_noise_images(tmp_path / "trainA", 2, (8, 8), seed=0)
    with pytest.raises(DatasetError, match="trainB"):
        UnalignedDataset(tmp_path, load_size=8, crop_size=8)


def test_unreadable_image_is_reported_at_construction(noise_root):
    root, _, _ = noise_root
    (root / "trainB" / "zz.png").write_text("not a png")
    with pytest.raises(DatasetError, match="zz.png"):
        UnalignedDataset(root, load_size=20, crop_size=16)


def test_preprocess_none_requires_batch_size_one(noise_root):
    root, _, _ = noise_root
    with pytest.raises(DatasetError, match="batch_size must be 1"):
        UnalignedDataset(root, preprocess="none", crop_size=16, load_size=16, batch_size=2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "AtoC"},
        {"phase": "val"},
        {"preprocess": "zoom"},
        {"crop_size": 18, "load_size": 20},
        {"crop_size": 16, "load_size": 12},
        {"batch_size": 0},
    ],
)
def test_bad_arguments_raise_value_error_quoting_value(noise_root, kwargs):
    root, _, _ = noise_root
    arguments = {"load_size": 20, "crop_size": 16, **kwargs}
    with pytest.raises(ValueError, match="Received"):
        UnalignedDataset(root, **arguments)


def test_crop_mode_rejects_images_smaller_than_crop(noise_root):
    root, _, _ = noise_root
    with pytest.raises(DatasetError, match="smaller than crop_size 24"):
        UnalignedDataset(root, preprocess="crop", load_size=24, crop_size=24)


# === Transforms against a PIL oracle ===


def test_resize_and_crop_outputs_crops_of_pil_bicubic_resize(noise_root):
    root, images_a, images_b = noise_root
    data = UnalignedDataset(root, load_size=20, crop_size=16, batch_size=1, seed=3)
    resized_a = [_bicubic(image, 20, 20) for image in images_a]
    resized_b = [_bicubic(image, 20, 20) for image in images_b]
    offsets, flips = set(), set()
    for real_a, real_b in data.dataset():
        assert real_a.shape == (1, 16, 16, 3) and real_a.dtype == tf.float32
        match_a = _find_crop(real_a[0].numpy(), resized_a, 16)
        match_b = _find_crop(real_b[0].numpy(), resized_b, 16)
        assert match_a is not None and match_b is not None
        offsets.update({match_a[1:3], match_b[1:3]})
        flips.update({match_a[3], match_b[3]})
        assert -1.0 <= real_a.numpy().min() and real_a.numpy().max() <= 1.0
    assert len(offsets) > 1  # the crop position varies


def test_no_flip_when_disabled(noise_root):
    root, images_a, _ = noise_root
    data = UnalignedDataset(root, load_size=20, crop_size=16, flip=False, seed=0)
    resized_a = [_bicubic(image, 20, 20) for image in images_a]
    for _ in range(3):
        for real_a, _ in data.dataset():
            assert _find_crop(real_a[0].numpy(), resized_a, 16)[3] is False


def test_flip_happens_for_some_images(noise_root):
    root, images_a, _ = noise_root
    data = UnalignedDataset(root, load_size=20, crop_size=16, seed=0)
    resized_a = [_bicubic(image, 20, 20) for image in images_a]
    flips = [
        _find_crop(real_a[0].numpy(), resized_a, 16)[3] for _ in range(4) for real_a, _ in data.dataset()
    ]
    assert True in flips and False in flips


def test_jitter_off_resizes_straight_to_crop_size(noise_root):
    root, images_a, images_b = noise_root
    data = UnalignedDataset(root, load_size=20, crop_size=16, flip=False, seed=0)
    dataset = data.dataset()
    data.jitter.assign(False)
    oracle_a = [_unit(_bicubic(image, 16, 16)) for image in images_a]
    oracle_b = [_unit(_bicubic(image, 16, 16)) for image in images_b]
    for real_a, real_b in dataset:
        assert any(np.allclose(real_a[0], image, atol=1e-6) for image in oracle_a)
        assert any(np.allclose(real_b[0], image, atol=1e-6) for image in oracle_b)
    # Switching it back restores the random crops of the 20×20 resize.
    data.jitter.assign(True)
    real_a, _ = next(iter(dataset))
    assert not any(np.allclose(real_a[0], image, atol=1e-6) for image in oracle_a)


def test_crop_mode_crops_the_original_image(noise_root):
    root, images_a, _ = noise_root
    data = UnalignedDataset(root, preprocess="crop", load_size=16, crop_size=16, seed=0)
    for real_a, _ in data.dataset():
        assert _find_crop(real_a[0].numpy(), images_a, 16) is not None


def test_scale_width_and_crop_keeps_aspect_ratio(tmp_path):
    # 40 wide × 20 high: scale width to 24 -> height max(24*20/40, 16) = 16.
    _write_noise_images(tmp_path / "trainA", 2, (20, 40), seed=5)
    images_b = _write_noise_images(tmp_path / "trainB", 2, (60, 30), seed=6)
    images_a = [np.asarray(Image.open(tmp_path / "trainA" / f"{i:02d}.png")) for i in range(2)]
    data = UnalignedDataset(tmp_path, preprocess="scale_width_and_crop", load_size=24, crop_size=16, seed=0)
    scaled_a = [_bicubic(image, 24, 16) for image in images_a]
    scaled_b = [_bicubic(image, 24, 48) for image in images_b]  # 30×60 -> 24×48
    for real_a, real_b in data.dataset():
        assert _find_crop(real_a[0].numpy(), scaled_a, 16) is not None
        assert _find_crop(real_b[0].numpy(), scaled_b, 16) is not None


def test_preprocess_none_keeps_size_rounded_to_multiple_of_4(tmp_path):
    images_a = _write_noise_images(tmp_path / "trainA", 1, (18, 23), seed=7)
    _write_noise_images(tmp_path / "trainB", 1, (17, 25), seed=8)  # rounds to the same 24×16
    data = UnalignedDataset(tmp_path, preprocess="none", load_size=16, crop_size=16, flip=False)
    real_a, real_b = next(iter(data.dataset()))
    # round(23/4)*4 = 24 wide, round(18/4)*4 = 16 high (upstream __make_power_2).
    assert real_a.shape == (1, 16, 24, 3)
    np.testing.assert_allclose(real_a[0], _unit(_bicubic(images_a[0], 24, 16)), atol=1e-6)
    assert real_b.shape == (1, 16, 24, 3)


def test_preprocess_none_refuses_images_of_different_sizes_at_load(tmp_path):
    # The trainer runs source and target through G in one batch and the sample grid tiles them,
    # so whole-image training needs one size; found when the dataset is built, not mid-training.
    _write_noise_images(tmp_path / "trainA", 2, (16, 16), seed=7)
    _write_noise_images(tmp_path / "trainB", 1, (16, 24), seed=8)
    with pytest.raises(DatasetError) as info:
        UnalignedDataset(tmp_path, preprocess="none", load_size=16, crop_size=16)
    assert str(info.value) == (
        f"preprocess 'none' needs images of one size, but {tmp_path / 'trainA' / '00.png'} is 16x16 and "
        f"{tmp_path / 'trainB' / '00.png'} is 24x16; resize the images to one size or use preprocess "
        "'resize_and_crop'"
    )


# === Sampling ===


def test_each_epoch_is_a_new_permutation_of_a(solid_root):
    data = UnalignedDataset(solid_root, load_size=8, crop_size=8, flip=False, seed=11)
    dataset = data.dataset()
    orders = []
    for _ in range(4):
        order = [_solid_index(real_a[0], A_VALUES) for real_a, _ in dataset]
        assert sorted(order) == list(range(6))  # every source image once per epoch
        orders.append(tuple(order))
    assert len(set(orders)) > 1


def test_b_is_drawn_uniformly_with_replacement(solid_root):
    data = UnalignedDataset(solid_root, load_size=8, crop_size=8, flip=False, batch_size=2, seed=5)
    dataset = data.dataset()
    counts = collections.Counter()
    repeated_within_epoch = False
    for _ in range(20):
        drawn = [_solid_index(image, B_VALUES) for _, real_b in dataset for image in real_b]
        assert len(drawn) == 6  # max(6, 4) samples, 3 batches of 2
        repeated_within_epoch |= len(set(drawn)) < len(drawn)
        counts.update(drawn)
    # 120 draws of 4 images: expected 30 each, sd ~4.7; a fixed pairing or a
    # skewed draw falls outside.
    assert set(counts) == {0, 1, 2, 3}
    assert all(16 <= count <= 44 for count in counts.values()), counts
    assert repeated_within_epoch


def test_a_smaller_than_b_cycles_through_a(tmp_path):
    _write_solid_images(tmp_path / "trainA", [0, 40])
    _write_solid_images(tmp_path / "trainB", [5, 45, 85, 125, 165])
    data = UnalignedDataset(tmp_path, load_size=8, crop_size=8, flip=False, seed=2)
    order = [_solid_index(real_a[0], [0, 40]) for real_a, _ in data.dataset()]
    # Reference: shuffled range(5), A[index % 2] -> image 0 three times, image 1 twice.
    assert sorted(order) == [0, 0, 0, 1, 1]


def test_same_seed_gives_same_epochs(noise_root):
    root, _, _ = noise_root

    def two_epochs():
        data = UnalignedDataset(root, load_size=20, crop_size=16, seed=42)
        dataset = data.dataset()
        return [np.concatenate([np.stack([a[0], b[0]]) for a, b in dataset]) for _ in range(2)]

    first, second = two_epochs(), two_epochs()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])


class _BatchRecorder(keras.Model):
    """Records the batches `fit` feeds it (eager), without training anything."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def train_step(self, data):
        self.batches.append([np.asarray(tensor) for tensor in data])
        return {"batches": float(len(self.batches))}


class _JitterOffFrom(keras.callbacks.Callback):
    def __init__(self, dataset, epoch):
        super().__init__()
        self.dataset = dataset
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.jitter.assign(epoch < self.epoch)


def test_fit_reshuffles_every_epoch_and_sees_jitter_switch(tmp_path):
    images_a = _write_noise_images(tmp_path / "trainA", 6, (20, 20), seed=3)
    _write_noise_images(tmp_path / "trainB", 2, (20, 20), seed=4)
    data = UnalignedDataset(tmp_path, load_size=20, crop_size=16, flip=False, seed=9)
    model = _BatchRecorder()
    model.compile(run_eagerly=True)
    model.fit(data.dataset(), epochs=3, shuffle=False, verbose=0, callbacks=[_JitterOffFrom(data, 2)])
    assert len(model.batches) == 3 * data.steps_per_epoch

    jittered = [_bicubic(image, 20, 20) for image in images_a]
    straight = [_unit(_bicubic(image, 16, 16)) for image in images_a]
    orders = []
    for epoch in range(3):
        order = []
        for real_a, _ in model.batches[epoch * 6 : (epoch + 1) * 6]:
            if epoch < 2:
                match = _find_crop(real_a[0], jittered, 16)
                assert match is not None
                order.append(match[0])
            else:
                matches = [i for i, image in enumerate(straight) if np.allclose(real_a[0], image, atol=1e-6)]
                assert len(matches) == 1  # jitter off took effect without rebuilding
                order.append(matches[0])
        assert sorted(order) == list(range(6))
        orders.append(order)
    assert orders[0] != orders[1] or orders[1] != orders[2]


# === Test-time loader ===


def test_make_test_dataset_is_sorted_resized_and_complete(tmp_path):
    images = _write_noise_images(tmp_path / "testA", 5, (20, 24), seed=12)
    dataset, paths = make_test_dataset(tmp_path / "testA", image_size=16, batch_size=2)
    assert [os.path.basename(path) for path in paths] == [f"{i:02d}.png" for i in range(5)]
    batches = list(dataset)
    assert [batch.shape[0] for batch in batches] == [2, 2, 1]  # nothing dropped
    outputs = np.concatenate([batch.numpy() for batch in batches])
    oracle = np.stack([_unit(_bicubic(image, 16, 16)) for image in images])
    np.testing.assert_allclose(outputs, oracle, atol=1e-6)
    # Deterministic: a second pass gives the same tensors.
    np.testing.assert_array_equal(np.concatenate([batch.numpy() for batch in dataset]), outputs)


def test_make_test_dataset_keeps_size_when_image_size_is_none(tmp_path):
    images = _write_noise_images(tmp_path / "testA", 2, (16, 20), seed=13)
    dataset, paths = make_test_dataset(tmp_path / "testA", image_size=None)
    for batch, image in zip(dataset, images):
        np.testing.assert_allclose(batch[0], _unit(image), atol=1e-6)
    with pytest.raises(DatasetError, match="batch_size must be 1"):
        make_test_dataset(tmp_path / "testA", image_size=None, batch_size=4)
