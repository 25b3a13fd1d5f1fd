"""Tests of the single-image (SinCUT) crops: shapes, zoom bounds from ramp images, flips, seeds, errors.

The geometric checks use "ramp" images whose red channel is the column index and
green channel the row index. Bilinear resampling reproduces a linear ramp
exactly, so every crop tells where its window lay in the source image and how
much it was zoomed: along a row, red rises by W / W_resized per output pixel.
"""

import os

import numpy as np
import pytest
from PIL import Image

from psr.data.single_image import SingleImageDataset, make_sample_pair
from psr.errors import DatasetError

RAMP_HEIGHT, RAMP_WIDTH = 180, 240
CROP = 16


def write_ramp(path, height=RAMP_HEIGHT, width=RAMP_WIDTH):
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.stack([columns, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def write_noise(path, height, width, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def ramp_pair(tmp_path):
    path_a, path_b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    write_ramp(path_a)
    write_ramp(path_b)
    return path_a, path_b


def source_coordinates(crops, channel):
    """Source pixel coordinates encoded in a channel of crops in [-1, 1]."""
    return (np.asarray(crops, np.float64)[..., channel] + 1.0) * 127.5


def all_crops(dataset):
    real_a, real_b = zip(*[(np.asarray(a), np.asarray(b)) for a, b in dataset.dataset()])
    return np.concatenate(real_a), np.concatenate(real_b)


def window_geometry(crops):
    """Per crop: (x step, x start, y step, y start) in source pixels, from the ramps."""
    x = source_coordinates(crops, 0)
    y = source_coordinates(crops, 1)
    # A window is axis-aligned: x constant down columns, y constant along rows.
    np.testing.assert_allclose(x, np.broadcast_to(x[:, :1, :], x.shape), atol=1e-2)
    np.testing.assert_allclose(y, np.broadcast_to(y[:, :, :1], y.shape), atol=1e-2)
    x_step = (x[:, 0, -1] - x[:, 0, 0]) / (CROP - 1)
    y_step = (y[:, -1, 0] - y[:, 0, 0]) / (CROP - 1)
    return x_step, x[:, 0, 0], y_step, y[:, 0, 0]


class TestSingleImageDataset:
    def test_shapes_range_and_epoch_length(self, tmp_path):
        path_a, path_b = str(tmp_path / "a.png"), str(tmp_path / "b.jpg")
        write_noise(path_a, 70, 90, seed=1)
        write_noise(path_b, 100, 64, seed=2)
        dataset = SingleImageDataset(path_a, path_b, crop_size=CROP, batch_size=4, epoch_length=18, seed=0)
        assert dataset.steps_per_epoch == 4
        batches = list(dataset.dataset())
        assert len(batches) == 4
        for real_a, real_b in batches:
            for crops in (real_a, real_b):
                assert crops.shape == (4, CROP, CROP, 3)
                assert crops.dtype == "float32"
                assert -1.0 <= float(np.min(crops)) and float(np.max(crops)) <= 1.0
        assert SingleImageDataset(path_a, path_b).steps_per_epoch == 6250  # upstream: 100,000 / 16

    def test_zoom_bounds_and_aligned_windows(self, ramp_pair):
        dataset = SingleImageDataset(*ramp_pair, crop_size=CROP, batch_size=64, flip=False, epoch_length=256, seed=1)
        real_a, real_b = all_crops(dataset)
        for crops in (real_a, real_b):
            x_step, x_start, y_step, y_start = window_geometry(crops)
            for step, start, side in ((x_step, x_start, RAMP_WIDTH), (y_step, y_start, RAMP_HEIGHT)):
                # Zoom z in [1/3, 1]: the resized side round(side * z) lies in [side / 3, side],
                # so one output pixel spans side / resized in [1, 3] source pixels.
                resized = side / step
                np.testing.assert_allclose(resized, np.round(resized), atol=0.05)
                assert np.all(np.round(resized) >= side / 3) and np.all(np.round(resized) <= side)
                # The window is a pixel-aligned crop of the resized image, inside it.
                offset = (start + 0.5) / step - 0.5
                np.testing.assert_allclose(offset, np.round(offset), atol=0.05)
                assert np.all(np.round(offset) >= 0) and np.all(np.round(offset) <= np.round(resized) - CROP)
                # The draws cover the zoom range.
                assert step.min() < 1.3 and step.max() > 2.6
            # Zoom factors are drawn per axis.
            assert np.max(np.abs(x_step - y_step)) > 0.5

    def test_domains_are_cropped_independently(self, ramp_pair):
        dataset = SingleImageDataset(*ramp_pair, crop_size=CROP, batch_size=8, epoch_length=8, seed=2)
        real_a, real_b = all_crops(dataset)
        assert not np.allclose(real_a, real_b)

    def test_flip_reverses_about_half_of_the_crops(self, ramp_pair):
        dataset = SingleImageDataset(*ramp_pair, crop_size=CROP, batch_size=64, epoch_length=256, seed=3)
        real_a, _ = all_crops(dataset)
        x = source_coordinates(real_a, 0)
        y = source_coordinates(real_a, 1)
        flipped = x[:, 0, -1] < x[:, 0, 0]
        assert 0.35 < flipped.mean() < 0.65
        assert np.all(y[:, -1, 0] > y[:, 0, 0])  # never flipped vertically
        # A flipped crop is an increasing ramp read backwards.
        unflipped = np.where(flipped[:, None, None], x[:, :, ::-1], x)
        assert np.all(np.diff(unflipped, axis=2) > 0.5)

        no_flip = SingleImageDataset(*ramp_pair, crop_size=CROP, batch_size=64, flip=False, epoch_length=64, seed=3)
        x = source_coordinates(all_crops(no_flip)[0], 0)
        assert np.all(x[:, 0, -1] > x[:, 0, 0])

    def test_scale_max_one_means_no_zoom(self, ramp_pair):
        dataset = SingleImageDataset(*ramp_pair, crop_size=CROP, batch_size=16, random_scale_max=1.0, flip=False,
                                     epoch_length=16, seed=4)
        x_step, _, y_step, _ = window_geometry(all_crops(dataset)[0])
        np.testing.assert_allclose(x_step, 1.0, atol=1e-3)
        np.testing.assert_allclose(y_step, 1.0, atol=1e-3)

    def test_seed_makes_epochs_reproducible_and_epochs_differ(self, ramp_pair):
        def epochs(seed, count=2):
            data = SingleImageDataset(*ramp_pair, crop_size=CROP, batch_size=4, epoch_length=8, seed=seed).dataset()
            return [[np.asarray(a) for a, _ in data] for _ in range(count)]

        first, again, other = epochs(5), epochs(5), epochs(6)
        for epoch, epoch_again in zip(first, again):
            for batch, batch_again in zip(epoch, epoch_again):
                np.testing.assert_array_equal(batch, batch_again)
        assert not np.allclose(first[0][0], first[1][0])  # a new iterator draws new crops
        assert not np.allclose(first[0][0], other[0][0])

    def test_image_smaller_than_crop_is_stretched(self, tmp_path):
        path_a = str(tmp_path / "small.png")
        write_ramp(path_a, height=10, width=40)
        dataset = SingleImageDataset(path_a, path_a, crop_size=CROP, batch_size=8, flip=False, epoch_length=8, seed=7)
        real_a, _ = all_crops(dataset)
        assert real_a.shape == (8, CROP, CROP, 3)
        # 10 rows stretched to 16 whatever the zoom (max(crop, 10 z) = 16): step 10/16,
        # row j at (j + 0.5) * 10/16 - 0.5; the two edge rows are clamped.
        y = source_coordinates(real_a, 1)[:, :, 0]
        expected = (np.arange(CROP) + 0.5) * 10 / 16 - 0.5
        np.testing.assert_allclose(y[:, 1:-1], np.broadcast_to(expected[1:-1], (8, CROP - 2)), atol=1e-2)

    def test_full_image_rounds_sides_to_multiples_of_4(self, tmp_path):
        path_a, path_b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
        pixels_a = write_noise(path_a, 30, 42, seed=8)
        pixels_b = write_noise(path_b, 32, 20, seed=9)
        dataset = SingleImageDataset(path_a, path_b, crop_size=CROP, batch_size=1, epoch_length=1)
        full_a, full_b = dataset.full_image("A"), dataset.full_image("B")
        # Python rounding, half to even: 30/4 = 7.5 -> 8 -> 32 rows; 42/4 = 10.5 -> 10 -> 40 columns.
        assert full_a.shape == (32, 40, 3)
        oracle = np.asarray(Image.fromarray(pixels_a).resize((40, 32), Image.BILINEAR), np.float32) / 127.5 - 1
        np.testing.assert_allclose(full_a, oracle, atol=1e-6)
        np.testing.assert_allclose(full_b, pixels_b / 127.5 - 1.0, atol=1e-6)  # already multiples of 4
        assert dataset.image_size("A") == (30, 42)
        with pytest.raises(ValueError, match="domain='C'"):
            dataset.full_image("C")

    def test_missing_file_raises_dataset_error_with_path(self, tmp_path):
        present = str(tmp_path / "b.png")
        write_noise(present, 20, 20)
        missing = str(tmp_path / "nowhere" / "painting.jpg")
        with pytest.raises(DatasetError, match="nowhere/painting.jpg"):
            SingleImageDataset(missing, present)
        with pytest.raises(DatasetError, match="nowhere/painting.jpg"):
            SingleImageDataset(present, missing)

    def test_undecodable_file_raises_dataset_error(self, tmp_path):
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"not an image")
        good = str(tmp_path / "good.png")
        write_noise(good, 20, 20)
        with pytest.raises(DatasetError, match="broken.png"):
            SingleImageDataset(good, str(broken))

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"crop_size": 2}, "crop_size=2"),
            ({"batch_size": 0}, "batch_size=0"),
            ({"random_scale_max": 0.5}, "random_scale_max=0.5"),
            ({"epoch_length": 3, "batch_size": 4}, "epoch_length=3"),
            ({"seed": "x"}, "seed='x'"),
        ],
    )
    def test_bad_arguments_quote_the_value(self, ramp_pair, kwargs, message):
        with pytest.raises(ValueError, match=message):
            SingleImageDataset(*ramp_pair, **kwargs)


class TestSamplePair:
    def test_writes_a_painting_and_a_photo_once(self, tmp_path):
        from skimage import data

        path_a, path_b = make_sample_pair(tmp_path / "pair")
        assert os.path.isfile(path_a) and os.path.isfile(path_b)
        assert path_a.endswith(os.path.join("trainA", "rocket_painting.png"))
        assert path_b.endswith(os.path.join("trainB", "rocket_photo.png"))
        painting = np.asarray(Image.open(path_a))
        photo = np.asarray(Image.open(path_b))
        assert painting.shape == photo.shape == (427, 384, 3)
        # The photo is the untouched right part of skimage's rocket.
        np.testing.assert_array_equal(photo, data.rocket()[:, -384:])
        # The painting is posterised: 10 levels per channel, far fewer colours than the photo.
        levels = np.round(np.arange(10) / 9 * 255)
        assert set(np.unique(painting)) <= set(levels.astype(np.uint8))
        assert len(np.unique(painting.reshape(-1, 3), axis=0)) < len(np.unique(photo.reshape(-1, 3), axis=0)) / 10

        stamps = (os.stat(path_a).st_mtime_ns, os.stat(path_b).st_mtime_ns)
        assert make_sample_pair(tmp_path / "pair") == (path_a, path_b)
        assert (os.stat(path_a).st_mtime_ns, os.stat(path_b).st_mtime_ns) == stamps
        assert not [name for name in os.listdir(os.path.dirname(path_a)) if name.startswith(".tmp-")]

        dataset = SingleImageDataset(path_a, path_b, batch_size=2, epoch_length=2, seed=0)
        real_a, real_b = next(iter(dataset.dataset()))
        assert real_a.shape == real_b.shape == (2, 64, 64, 3)
