"""Folder streaming, statistics caching and the Inception-v3 extractor."""

import os

import numpy as np
import pytest

from psr.errors import CheckpointError, DatasetError
from psr.metrics.features import (
    FeatureExtractor,
    InceptionFeatures,
    folder_features,
    folder_statistics,
)

# === folder_features ===


class TestFolderFeatures:
    def test_matches_per_image_oracle_in_path_order(self, tmp_path, tiny_extractor, helpers):
        paths = helpers.write_pngs(tmp_path / "images", 5)
        features = folder_features(tmp_path / "images", tiny_extractor, batch_size=2, progress=False)
        expected = np.stack([tiny_extractor.features_of_one(helpers.read_png(p)) for p in sorted(paths)])
        assert features.shape == (5, 4) and features.dtype == np.float32
        np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
        # Batches of 2, 2 and 1 images.
        assert [shape[0] for shape in tiny_extractor.batch_shapes] == [2, 2, 1]

    def test_mixed_sizes_are_batched_by_size(self, tmp_path, tiny_extractor, helpers):
        folder = tmp_path / "mixed"
        helpers.write_pngs(folder, 2, size=(32, 32), seed=1, names=["a.png", "b.png"])
        helpers.write_pngs(folder, 1, size=(20, 36), seed=2, names=["c.png"])
        helpers.write_pngs(folder, 2, size=(32, 32), seed=3, names=["d.png", "e.png"])
        features = folder_features(folder, tiny_extractor, batch_size=50, progress=False)
        expected = np.stack(
            [tiny_extractor.features_of_one(helpers.read_png(folder / f"{name}.png")) for name in "abcde"]
        )
        np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
        assert [shape[1:3] for shape in tiny_extractor.batch_shapes] == [(32, 32), (20, 36), (32, 32)]

    def test_progress_bar_goes_to_stderr_only(self, tmp_path, tiny_extractor, helpers, capsys):
        helpers.write_pngs(tmp_path / "images", 3)
        folder_features(tmp_path / "images", tiny_extractor, progress=True)
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "3/3" in captured.err
        folder_features(tmp_path / "images", tiny_extractor, progress=False)
        assert capsys.readouterr() == ("", "")

    def test_empty_and_missing_folders_raise_dataset_error(self, tmp_path, tiny_extractor):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("no images here")
        with pytest.raises(DatasetError, match="empty"):
            folder_features(tmp_path / "empty", tiny_extractor, progress=False)
        with pytest.raises(DatasetError, match="not found: .*nowhere"):
            folder_features(tmp_path / "nowhere", tiny_extractor, progress=False)
        assert tiny_extractor.calls == 0

    def test_tiny_extractor_satisfies_protocol(self, tiny_extractor):
        assert isinstance(tiny_extractor, FeatureExtractor)


# === folder_statistics and its cache ===


class TestFolderStatistics:
    def test_statistics_match_oracle(self, tmp_path, tiny_extractor, helpers):
        paths = helpers.write_pngs(tmp_path / "images", 6)
        statistics = folder_statistics(tmp_path / "images", tiny_extractor, progress=False)
        features = np.stack([tiny_extractor.features_of_one(helpers.read_png(p)) for p in paths])
        mean, covariance = helpers.mean_and_covariance(features)
        np.testing.assert_allclose(statistics.mu, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(statistics.sigma, covariance, rtol=1e-4, atol=1e-7)
        assert statistics.num_images == 6 and statistics.features.shape == (6, 4)

    def test_cache_hit_and_invalidation(self, tmp_path, tiny_extractor, helpers):
        folder, cache_dir = tmp_path / "images", tmp_path / "cache"
        paths = helpers.write_pngs(folder, 4)

        first = folder_statistics(folder, tiny_extractor, cache_dir=cache_dir, progress=False)
        assert tiny_extractor.images_seen == 4
        cache_files = sorted(os.listdir(cache_dir))
        assert len(cache_files) == 1 and cache_files[0].endswith(".npz")  # no temp file left

        # Unchanged folder: loaded from the cache, the extractor is not called.
        second = folder_statistics(folder, tiny_extractor, cache_dir=cache_dir, progress=False)
        assert tiny_extractor.images_seen == 4
        np.testing.assert_array_equal(second.sigma, first.sigma)
        np.testing.assert_array_equal(second.features, first.features)

        # Touching a file (new mtime) invalidates the entry.
        status = os.stat(paths[0])
        os.utime(paths[0], ns=(status.st_atime_ns, status.st_mtime_ns + 5_000_000_000))
        folder_statistics(folder, tiny_extractor, cache_dir=cache_dir, progress=False)
        assert tiny_extractor.images_seen == 8

        # Adding a file invalidates it too.
        helpers.write_pngs(folder, 1, seed=9, names=["new.png"])
        grown = folder_statistics(folder, tiny_extractor, cache_dir=cache_dir, progress=False)
        assert tiny_extractor.images_seen == 13 and grown.num_images == 5
        assert len(os.listdir(cache_dir)) == 3

    def test_cache_key_of_extractor_is_part_of_the_hash(self, tmp_path, helpers):
        folder, cache_dir = tmp_path / "images", tmp_path / "cache"
        helpers.write_pngs(folder, 3)
        first = helpers.TinyConvFeatures(cache_key="weights-a")
        second = helpers.TinyConvFeatures(cache_key="weights-b")
        folder_statistics(folder, first, cache_dir=cache_dir, progress=False)
        folder_statistics(folder, second, cache_dir=cache_dir, progress=False)
        assert second.images_seen == 3
        assert len(os.listdir(cache_dir)) == 2

    def test_damaged_cache_entry_is_recomputed(self, tmp_path, tiny_extractor, helpers):
        folder, cache_dir = tmp_path / "images", tmp_path / "cache"
        helpers.write_pngs(folder, 3)
        folder_statistics(folder, tiny_extractor, cache_dir=cache_dir, progress=False)
        (cache_file,) = cache_dir.iterdir()
        cache_file.write_bytes(b"truncated")
        statistics = folder_statistics(folder, tiny_extractor, cache_dir=cache_dir, progress=False)
        assert tiny_extractor.images_seen == 6 and statistics.num_images == 3
        assert cache_file.stat().st_size > len(b"truncated")

    def test_without_cache_dir_nothing_is_written(self, tmp_path, tiny_extractor, helpers):
        helpers.write_pngs(tmp_path / "images", 3)
        folder_statistics(tmp_path / "images", tiny_extractor, cache_dir=None, progress=False)
        assert sorted(os.listdir(tmp_path)) == ["images"]

    def test_single_image_raises(self, tmp_path, tiny_extractor, helpers):
        helpers.write_pngs(tmp_path / "one", 1)
        with pytest.raises(DatasetError, match="at least 2 images.*one has 1"):
            folder_statistics(tmp_path / "one", tiny_extractor, progress=False)


# === InceptionFeatures ===


@pytest.fixture(scope="module")
def random_inception():
    """One random-weight Inception-v3 at the smallest input size (75 px), built once:
    building and tracing it dominates the cost of these tests."""
    return InceptionFeatures(weights=None, batch_size=2, image_size=75)


class TestInceptionFeatures:
    def test_missing_weights_file_names_the_path(self, tmp_path):
        missing = tmp_path / "inception.h5"
        with pytest.raises(CheckpointError, match=f"not found: {missing}.*--inception-weights"):
            InceptionFeatures(weights=str(missing))

    def test_offline_imagenet_download_gives_clear_error(self, monkeypatch):
        from keras.src.utils import file_utils

        def offline_get_file(*args, **kwargs):
            raise Exception("URL fetch failure on https://example: None -- [Errno -3] no network")

        monkeypatch.setattr(file_utils, "get_file", offline_get_file)
        extractor = InceptionFeatures(weights="imagenet", image_size=75)
        with pytest.raises(CheckpointError) as caught:
            extractor(np.zeros((1, 75, 75, 3), np.uint8))
        message = str(caught.value)
        assert "\n" not in message
        assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
        assert "--inception-weights PATH" in message and "~/.keras/models/" in message
        assert "no network" in message

    def test_model_is_built_lazily(self):
        extractor = InceptionFeatures(weights=None)
        assert extractor._model is None

    def test_pool_features_are_2048_d_for_any_input_size(self, random_inception):
        images = np.random.default_rng(0).integers(0, 256, size=(2, 40, 52, 3), dtype=np.uint8)
        features = random_inception(images)
        assert features.shape == (2, 2048) and features.dtype == np.float32
        assert np.isfinite(features).all()

    def test_resize_is_bilinear_with_half_pixel_centres_and_no_antialias(self, random_inception):
        # Downscaling a 2× pixel-replicated image by 2 samples at 2i + 0.5, halfway
        # between two copies of pixel i, so it gives the original image back exactly.
        # Antialiased or corner-aligned resizing would mix in neighbouring pixels.
        image = np.random.default_rng(1).integers(0, 256, size=(1, 75, 75, 3), dtype=np.uint8)
        doubled = image.repeat(2, axis=1).repeat(2, axis=2)
        np.testing.assert_allclose(
            random_inception(doubled), random_inception(image), rtol=1e-5, atol=1e-6
        )
        # A genuinely different image does change the features (the check above can fail).
        assert not np.allclose(random_inception(doubled), random_inception(255 - image), atol=1e-6)

    def test_cache_key_depends_on_weights_file_and_size(self, tmp_path):
        weights_a, weights_b = tmp_path / "a.h5", tmp_path / "b.h5"
        weights_a.write_bytes(b"weights a")
        weights_b.write_bytes(b"weights b")
        key_a = InceptionFeatures(weights=str(weights_a)).cache_key
        assert key_a == InceptionFeatures(weights=str(weights_a)).cache_key
        assert key_a != InceptionFeatures(weights=str(weights_b)).cache_key
        assert key_a != InceptionFeatures(weights=str(weights_a), image_size=128).cache_key
        assert InceptionFeatures(weights=None).cache_key != InceptionFeatures(weights=None).cache_key

    def test_bad_arguments_raise(self):
        with pytest.raises(ValueError, match="Received: batch_size=0"):
            InceptionFeatures(weights=None, batch_size=0)
        with pytest.raises(ValueError, match="Received: image_size=32"):
            InceptionFeatures(weights=None, image_size=32)
        with pytest.raises(ValueError, match="dtype=float32"):
            InceptionFeatures(weights=None)(np.zeros((1, 8, 8, 3), np.float32))
