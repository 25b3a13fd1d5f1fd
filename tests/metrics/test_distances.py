"""Fréchet distance, KID and FeatureStatistics against independent NumPy oracles."""

import numpy as np
import pytest

from psr.errors import DatasetError
from psr.metrics.distances import FeatureStatistics, frechet_distance, kernel_inception_distance


def _random_statistics(rng, count, dim, shift=0.0):
    features = rng.normal(size=(count, dim)) @ rng.normal(size=(dim, dim)) + shift
    mean = features.mean(axis=0)
    centred = features - mean
    return mean, centred.T @ centred / (count - 1)


# === Fréchet distance ===


class TestFrechetDistance:
    def test_one_dimensional_hand_computed(self):
        # 1-D Gaussians: d² = (μ1 − μ2)² + (σ1 − σ2)² = 3² + (2 − 1)² = 10.
        value = frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]]))
        assert value == pytest.approx(10.0, rel=1e-12)

    def test_matches_eigen_decomposition_oracle(self, helpers):
        rng = np.random.default_rng(0)
        mu1, sigma1 = _random_statistics(rng, 60, 6)
        mu2, sigma2 = _random_statistics(rng, 40, 6, shift=0.7)
        expected = helpers.frechet_oracle(mu1, sigma1, mu2, sigma2)
        assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-8)
        # The distance is symmetric.
        assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(expected, rel=1e-8)

    def test_identical_sets_give_zero(self):
        rng = np.random.default_rng(1)
        mu, sigma = _random_statistics(rng, 50, 8)
        value = frechet_distance(mu, sigma, mu, sigma)
        assert abs(value) <= 1e-6 * np.trace(sigma)

    @pytest.mark.parametrize("count", [50, 4], ids=["full_rank", "rank_deficient"])
    def test_equal_covariances_shifted_give_squared_shift(self, count):
        rng = np.random.default_rng(2)
        mu, sigma = _random_statistics(rng, count, 8)
        shift = rng.normal(size=8)
        value = frechet_distance(mu, sigma, mu + shift, sigma)
        assert value == pytest.approx(shift @ shift, rel=1e-5, abs=1e-5 * np.trace(sigma))

    def test_singular_product_matches_oracle(self, helpers):
        # 5 samples in 10 dimensions: both covariances have rank 4.
        rng = np.random.default_rng(3)
        features1 = rng.normal(size=(5, 10))
        features2 = rng.normal(size=(5, 10)) + 0.5
        mu1, sigma1 = helpers.mean_and_covariance(features1)
        mu2, sigma2 = helpers.mean_and_covariance(features2)
        value = frechet_distance(mu1, sigma1, mu2, sigma2)
        assert np.isfinite(value)
        assert value == pytest.approx(helpers.frechet_oracle(mu1, sigma1, mu2, sigma2), rel=1e-4)

    def test_non_finite_square_root_falls_back_to_offset_product(self, helpers, monkeypatch):
        # SciPy's sqrtm copes with most singular products, so simulate the failure
        # it can have on them (NaN) and check the eps·I retry.
        import scipy.linalg

        real_sqrtm = scipy.linalg.sqrtm
        arguments = []

        def failing_once_sqrtm(matrix):
            arguments.append(matrix)
            return np.full_like(matrix, np.nan) if len(arguments) == 1 else real_sqrtm(matrix)

        monkeypatch.setattr(scipy.linalg, "sqrtm", failing_once_sqrtm)
        rng = np.random.default_rng(11)
        mu1, sigma1 = _random_statistics(rng, 30, 4)
        mu2, sigma2 = _random_statistics(rng, 30, 4)
        eps = 1e-3
        value = frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)
        assert len(arguments) == 2
        offset = eps * np.eye(4)
        np.testing.assert_allclose(arguments[1], (sigma1 + offset) @ (sigma2 + offset), rtol=1e-12)
        # FD with the offset covariances only in the cross term, written via the oracle:
        # tr S1 + tr S2 − 2 tr((S1+εI)(S2+εI))^½ = oracle(S1+εI, S2+εI) − 2·d·ε.
        expected = helpers.frechet_oracle(mu1, sigma1 + offset, mu2, sigma2 + offset) - 2 * 4 * eps
        assert value == pytest.approx(expected, rel=1e-8)

    def test_non_psd_covariance_raises(self):
        # sqrt(diag(1, −4)) = diag(1, 2i): a 2.0 imaginary part, far beyond round-off.
        with pytest.raises(ValueError, match="not positive semi-definite"):
            frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -4.0]))

    def test_mismatched_shapes_raise(self):
        with pytest.raises(ValueError, match="Received: mu1.shape=\\(3,\\), mu2.shape=\\(4,\\)"):
            frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
        with pytest.raises(ValueError, match="sigma2.shape=\\(2, 2\\)"):
            frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
        with pytest.raises(ValueError, match="Received: eps=0"):
            frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), eps=0)


# === KID ===


class TestKernelInceptionDistance:
    def test_full_set_matches_loop_oracle(self, helpers):
        rng = np.random.default_rng(4)
        features_x = rng.normal(size=(7, 5))
        features_y = rng.normal(size=(7, 5)) + 0.3
        mean, std = kernel_inception_distance(features_x, features_y, num_subsets=1, subset_size=7)
        # A subset of all rows is a permutation, and the estimator ignores order.
        assert mean == pytest.approx(helpers.mmd_loop_oracle(features_x, features_y), rel=1e-10)
        assert std == 0.0

    def test_subset_size_none_uses_smaller_set(self, helpers):
        rng = np.random.default_rng(5)
        features_x = rng.normal(size=(6, 4))
        features_y = rng.normal(size=(9, 4))
        mean, _ = kernel_inception_distance(features_x, features_y[:6], num_subsets=1, subset_size=None)
        assert mean == pytest.approx(helpers.mmd_loop_oracle(features_x, features_y[:6]), rel=1e-10)
        # With unequal sets None means 6, so 6 is accepted and 7 is not.
        kernel_inception_distance(features_x, features_y, num_subsets=2, subset_size=None)
        with pytest.raises(ValueError):
            kernel_inception_distance(features_x, features_y, num_subsets=2, subset_size=7)

    def test_subset_mean_is_unbiased_for_full_set_expectation(self):
        # Subsets drawn without replacement: the expected subset estimate equals
        # mean_{i≠j} kxx + mean_{i≠j} kyy − 2 mean_{i,j} kxy over the full sets.
        # Drawing with replacement would add self-pairs k(x, x) and bias this.
        rng = np.random.default_rng(6)
        features_x = rng.normal(size=(8, 3))
        features_y = rng.normal(size=(10, 3)) * 1.3

        def kernel(a, b):
            return (a @ b.T / 3 + 1.0) ** 3

        def off_diagonal_mean(matrix):
            size = len(matrix)
            return (matrix.sum() - np.trace(matrix)) / (size * (size - 1))

        expected = (
            off_diagonal_mean(kernel(features_x, features_x))
            + off_diagonal_mean(kernel(features_y, features_y))
            - 2 * kernel(features_x, features_y).mean()
        )
        num_subsets = 4000
        mean, std = kernel_inception_distance(
            features_x, features_y, num_subsets=num_subsets, subset_size=4, seed=3
        )
        assert abs(mean - expected) < 5 * std / np.sqrt(num_subsets)

    def test_same_distribution_is_near_zero_and_shift_is_not(self):
        rng = np.random.default_rng(7)
        features_x = rng.normal(size=(200, 8))
        features_y = rng.normal(size=(200, 8))
        same, same_std = kernel_inception_distance(features_x, features_y, num_subsets=30, subset_size=50)
        shifted, _ = kernel_inception_distance(features_x, features_y + 1.0, num_subsets=30, subset_size=50)
        assert abs(same) < 3 * same_std
        assert abs(same) < 0.05 * shifted

    def test_seed_makes_results_reproducible(self):
        rng = np.random.default_rng(8)
        features_x, features_y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
        first = kernel_inception_distance(features_x, features_y, num_subsets=5, subset_size=5, seed=1)
        again = kernel_inception_distance(features_x, features_y, num_subsets=5, subset_size=5, seed=1)
        other = kernel_inception_distance(features_x, features_y, num_subsets=5, subset_size=5, seed=2)
        assert first == again
        assert first != other

    def test_fewer_samples_than_subset_size_raises(self):
        features = np.zeros((12, 4))
        with pytest.raises(ValueError, match="subset_size=1000.*12 and 40.*subset_size <= 12"):
            kernel_inception_distance(features, np.zeros((40, 4)))

    def test_bad_arguments_raise(self):
        features = np.zeros((5, 4))
        with pytest.raises(ValueError, match="Received: subset_size=1"):
            kernel_inception_distance(features, features, subset_size=1)
        with pytest.raises(ValueError, match="Received: num_subsets=0"):
            kernel_inception_distance(features, features, num_subsets=0, subset_size=2)
        with pytest.raises(ValueError, match="same d"):
            kernel_inception_distance(features, np.zeros((5, 3)), subset_size=2)


# === FeatureStatistics ===


class TestFeatureStatistics:
    def test_from_features_matches_hand_formula(self, helpers):
        features = np.random.default_rng(9).normal(size=(10, 3)).astype(np.float32)
        statistics = FeatureStatistics.from_features(features)
        mean, covariance = helpers.mean_and_covariance(features)
        np.testing.assert_allclose(statistics.mu, mean, rtol=1e-6)
        np.testing.assert_allclose(statistics.sigma, covariance, rtol=1e-6)
        assert statistics.mu.dtype == np.float64 and statistics.sigma.dtype == np.float64
        np.testing.assert_array_equal(statistics.features, features)
        assert statistics.num_images == 10
        assert FeatureStatistics.from_features(features, keep_features=False).features is None

    def test_needs_two_rows(self):
        with pytest.raises(ValueError, match="Received: features.shape=\\(1, 3\\)"):
            FeatureStatistics.from_features(np.zeros((1, 3)))

    @pytest.mark.parametrize("file_name", ["stats.npz", "stats.bin"])
    def test_save_load_roundtrip_at_exact_path(self, tmp_path, file_name):
        features = np.random.default_rng(10).normal(size=(6, 3)).astype(np.float32)
        statistics = FeatureStatistics.from_features(features)
        path = tmp_path / "sub" / file_name
        statistics.save_npz(path)
        assert sorted(p.name for p in path.parent.iterdir()) == [file_name]  # no temp file left
        loaded = FeatureStatistics.load_npz(path)
        np.testing.assert_array_equal(loaded.mu, statistics.mu)
        np.testing.assert_array_equal(loaded.sigma, statistics.sigma)
        np.testing.assert_array_equal(loaded.features, features)
        assert loaded.num_images == 6

    def test_roundtrip_without_features(self, tmp_path):
        statistics = FeatureStatistics(mu=np.zeros(2), sigma=np.eye(2), features=None, num_images=3)
        statistics.save_npz(tmp_path / "s.npz")
        loaded = FeatureStatistics.load_npz(tmp_path / "s.npz")
        assert loaded.features is None and loaded.num_images == 3

    def test_load_errors_name_the_file(self, tmp_path):
        missing = tmp_path / "missing.npz"
        with pytest.raises(DatasetError, match="not found: .*missing.npz"):
            FeatureStatistics.load_npz(missing)
        corrupt = tmp_path / "corrupt.npz"
        corrupt.write_bytes(b"not a zip file")
        with pytest.raises(DatasetError, match="Cannot read .*corrupt.npz.*recompute"):
            FeatureStatistics.load_npz(corrupt)
        other = tmp_path / "other.npz"
        np.savez(other, something=np.zeros(2))
        with pytest.raises(DatasetError, match="no 'mu'/'sigma'.*found: something"):
            FeatureStatistics.load_npz(other)


def test_save_npz_fault_keeps_the_cache_entry_and_no_temporary(tmp_path, monkeypatch):
    import errno
    import os

    from psr.errors import StorageError

    stats = FeatureStatistics.from_features(np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32))
    path = tmp_path / "cache.npz"
    stats.save_npz(str(path))
    before = path.read_bytes()

    def read_only(*args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(StorageError, match=r"cache.npz is on a read-only file system"):
        stats.save_npz(str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["cache.npz"]
