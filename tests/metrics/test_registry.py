"""Metric registry and folder evaluation end to end with an injected tiny extractor."""

import os

import numpy as np
import pytest

from psr.errors import DatasetError
from psr.metrics import registry
from psr.metrics.distances import FeatureStatistics
from psr.metrics.registry import compute_metrics, evaluate_folders, list_metrics, register_metric


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the registry, so metrics registered by a test disappear after it."""
    monkeypatch.setattr(registry, "_METRICS", dict(registry._METRICS))


def _statistics(seed, count=30, dim=4, shift=0.0):
    features = np.random.default_rng(seed).normal(size=(count, dim)) + shift
    return FeatureStatistics.from_features(features)


# === Registry ===


class TestRegistry:
    def test_builtin_metrics_are_listed(self):
        assert {"fid", "kid"} <= set(list_metrics())
        assert list_metrics() == sorted(list_metrics())

    def test_unknown_name_lists_valid_ones_and_closest(self):
        with pytest.raises(ValueError, match="Unknown metric 'fdi'.*fid, kid.*Did you mean 'fid'"):
            compute_metrics(["fdi"], _statistics(0), _statistics(1))

    def test_fid_matches_oracle(self, helpers):
        generated, reference = _statistics(0), _statistics(1, shift=0.5)
        results = compute_metrics("fid", generated, reference)
        expected = helpers.frechet_oracle(generated.mu, generated.sigma, reference.mu, reference.sigma)
        assert set(results) == {"fid"}
        assert results["fid"] == pytest.approx(expected, rel=1e-8)

    def test_kid_reports_mean_and_std_with_options(self, helpers):
        generated, reference = _statistics(2, count=6), _statistics(3, count=6, shift=0.3)
        results = compute_metrics(["fid", "kid"], generated, reference, kid_subset_size=6, kid_num_subsets=1)
        assert set(results) == {"fid", "kid", "kid_std"}
        expected = helpers.mmd_loop_oracle(generated.features, reference.features)
        assert results["kid"] == pytest.approx(expected, rel=1e-6)
        assert results["kid_std"] == 0.0

    def test_kid_without_features_raises(self):
        reference = _statistics(1)
        reference.features = None
        with pytest.raises(ValueError, match="needs per-image features"):
            compute_metrics(["kid"], _statistics(0), reference, kid_subset_size=10)

    def test_unknown_option_raises(self):
        with pytest.raises(ValueError, match="Unknown metric option\\(s\\) kid_subset"):
            compute_metrics(["fid"], _statistics(0), _statistics(1), kid_subset=10)

    def test_custom_metric_gets_only_its_options(self, isolated_registry):
        received = {}

        @register_metric("mean_gap")
        def mean_gap(generated, reference, mean_gap_order=2):
            received["order"] = mean_gap_order
            return float(np.linalg.norm(generated.mu - reference.mu, ord=mean_gap_order))

        generated = FeatureStatistics(mu=np.array([0.0, 0.0]), sigma=np.eye(2))
        reference = FeatureStatistics(mu=np.array([3.0, 4.0]), sigma=np.eye(2))
        results = compute_metrics(["mean_gap", "fid"], generated, reference, mean_gap_order=2, fid_eps=1e-5)
        assert received == {"order": 2}
        assert results["mean_gap"] == pytest.approx(5.0)
        assert results["fid"] == pytest.approx(25.0)  # equal covariances: ‖μ1 − μ2‖²
        assert "mean_gap" in list_metrics()

    def test_duplicate_name_raises(self, isolated_registry):
        with pytest.raises(ValueError, match="already registered"):

            @register_metric("fid")
            def another_fid(generated, reference):
                return 0.0


# === evaluate_folders ===


class TestEvaluateFolders:
    def test_fid_and_kid_match_oracle_end_to_end(self, tmp_path, tiny_extractor, helpers):
        generated_paths = helpers.write_pngs(tmp_path / "fake_B", 6, seed=1, offset=30.0)
        reference_paths = helpers.write_pngs(tmp_path / "testB", 6, seed=2)
        results = evaluate_folders(
            tmp_path / "fake_B",
            tmp_path / "testB",
            metrics=("fid", "kid"),
            extractor=tiny_extractor,
            kid_subset_size=6,
            progress=False,
        )
        generated = np.stack([tiny_extractor.features_of_one(helpers.read_png(p)) for p in generated_paths])
        reference = np.stack([tiny_extractor.features_of_one(helpers.read_png(p)) for p in reference_paths])
        expected_fid = helpers.frechet_oracle(
            *helpers.mean_and_covariance(generated), *helpers.mean_and_covariance(reference)
        )
        assert results["fid"] == pytest.approx(expected_fid, rel=1e-3)
        assert set(results) == {"fid", "kid", "kid_std"}
        # Subsets of 6 out of 6 are permutations of the full sets: every round gives the
        # full-set estimate, so the mean is the loop oracle and the std is ~0.
        assert results["kid"] == pytest.approx(helpers.mmd_loop_oracle(generated, reference), rel=1e-4)
        assert results["kid_std"] <= 1e-6 * abs(results["kid"])

    def test_identical_folders_give_zero_fid(self, tmp_path, tiny_extractor, helpers):
        helpers.write_pngs(tmp_path / "a", 8, seed=4)
        helpers.write_pngs(tmp_path / "b", 8, seed=4)
        results = evaluate_folders(tmp_path / "a", tmp_path / "b", extractor=tiny_extractor, progress=False)
        statistics = FeatureStatistics.from_features(
            np.stack([tiny_extractor.features_of_one(helpers.read_png(tmp_path / "a" / name))
                      for name in sorted(os.listdir(tmp_path / "a"))])
        )
        assert abs(results["fid"]) <= 1e-4 * np.trace(statistics.sigma)

    def test_only_reference_side_is_cached(self, tmp_path, tiny_extractor, helpers):
        helpers.write_pngs(tmp_path / "fake", 3, seed=1)
        helpers.write_pngs(tmp_path / "real", 5, seed=2)
        cache_dir = tmp_path / "cache"
        first = evaluate_folders(
            tmp_path / "fake", tmp_path / "real", extractor=tiny_extractor, cache_dir=cache_dir,
            progress=False,
        )
        assert tiny_extractor.images_seen == 8 and len(os.listdir(cache_dir)) == 1
        second = evaluate_folders(
            tmp_path / "fake", tmp_path / "real", extractor=tiny_extractor, cache_dir=cache_dir,
            progress=False,
        )
        assert tiny_extractor.images_seen == 8 + 3  # only the generated folder again
        assert second["fid"] == pytest.approx(first["fid"], rel=1e-6)

    def test_too_few_images_for_kid_fails_before_extracting(self, tmp_path, tiny_extractor, helpers):
        helpers.write_pngs(tmp_path / "fake", 6, seed=1)
        helpers.write_pngs(tmp_path / "real", 9, seed=2)
        with pytest.raises(DatasetError, match="kid_subset_size=8 .*fake has 6.*--kid-subset-size 6"):
            evaluate_folders(
                tmp_path / "fake", tmp_path / "real", metrics=["kid"], extractor=tiny_extractor,
                kid_subset_size=8, progress=False,
            )
        assert tiny_extractor.calls == 0
        # None means the smaller folder size, which always fits.
        results = evaluate_folders(
            tmp_path / "fake", tmp_path / "real", metrics=["kid"], extractor=tiny_extractor,
            kid_subset_size=None, progress=False,
        )
        assert set(results) == {"kid", "kid_std"}

    def test_unknown_metric_and_empty_folder_fail_before_extracting(self, tmp_path, tiny_extractor, helpers):
        helpers.write_pngs(tmp_path / "real", 3)
        (tmp_path / "empty").mkdir()
        with pytest.raises(ValueError, match="Did you mean 'kid'"):
            evaluate_folders(tmp_path / "empty", tmp_path / "real", metrics=["kdi"], extractor=tiny_extractor)
        with pytest.raises(DatasetError, match="empty"):
            evaluate_folders(tmp_path / "empty", tmp_path / "real", extractor=tiny_extractor, progress=False)
        assert tiny_extractor.calls == 0


def test_the_tensorflow_free_name_list_matches_the_builtin_registry():
    """psr.registry lets the config check names without TensorFlow; it must name what the registry has."""
    from psr.metrics.paired import list_paired_metrics
    from psr.registry import BUILTIN_METRICS, BUILTIN_PAIRED_METRICS, known_metric_names, unknown_metric_message

    builtin = {name for name in list_metrics() if registry._METRICS[name].__module__ == registry.__name__}
    assert set(BUILTIN_METRICS) == builtin
    assert set(BUILTIN_PAIRED_METRICS) == set(list_paired_metrics())
    assert set(known_metric_names()) == set(list_metrics()) | set(list_paired_metrics())
    assert unknown_metric_message(["fid", "kid", "lpips"]) is None
    assert unknown_metric_message([]) == "no metric given; choose from fcn, fid, kid, lpips, miou"
