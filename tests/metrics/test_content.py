"""PSNR/SSIM content scores against NumPy re-statements of the formulas."""

import numpy as np
import pytest
from PIL import Image

from psr.errors import DatasetError
from psr.metrics.content import content_scores


def _psnr_oracle(target, predicted):
    mse = np.mean((target.astype(np.float64) - predicted.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _ssim_oracle(target, predicted, window=7):
    """Mean SSIM over all 7×7 windows inside the image, per channel, then over channels.

    Window statistics use the sample (n − 1) (co)variance; C1 = (0.01·255)², C2 = (0.03·255)².
    """
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for channel in range(target.shape[-1]):
        windows = np.lib.stride_tricks.sliding_window_view
        x = windows(target[..., channel].astype(np.float64), (window, window))
        y = windows(predicted[..., channel].astype(np.float64), (window, window))
        x = x.reshape(*x.shape[:2], -1)
        y = y.reshape(*y.shape[:2], -1)
        mean_x, mean_y = x.mean(-1), y.mean(-1)
        variance_x, variance_y = x.var(-1, ddof=1), y.var(-1, ddof=1)
        covariance = ((x - mean_x[..., None]) * (y - mean_y[..., None])).sum(-1) / (x.shape[-1] - 1)
        ssim_map = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
            (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2)
        )
        scores.append(ssim_map.mean())
    return float(np.mean(scores))


def _write(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _noisy_pair(rng, size=(32, 32)):
    target = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    noise = rng.normal(0, 20, size=target.shape)
    predicted = np.clip(target + noise, 0, 255).astype(np.uint8)
    return target, predicted


class TestContentScores:
    def test_match_numpy_oracles_and_pair_by_name(self, tmp_path):
        rng = np.random.default_rng(0)
        pairs = {name: _noisy_pair(rng) for name in ("a", "b", "c")}
        for name, (target, predicted) in pairs.items():
            _write(tmp_path / "real" / f"{name}.png", target)
            # Another extension on the prediction side still pairs by name.
            _write(tmp_path / "fake" / f"{name}.{'bmp' if name == 'b' else 'png'}", predicted)
        # Extra targets without a prediction are ignored.
        _write(tmp_path / "real" / "z.png", pairs["a"][0])
        scores = content_scores(tmp_path / "fake", tmp_path / "real")
        expected_psnr = np.mean([_psnr_oracle(t, p) for t, p in pairs.values()])
        expected_ssim = np.mean([_ssim_oracle(t, p) for t, p in pairs.values()])
        assert set(scores) == {"psnr", "ssim"}
        assert scores["psnr"] == pytest.approx(expected_psnr, rel=1e-9)
        assert scores["ssim"] == pytest.approx(expected_ssim, rel=1e-6)

    def test_identical_images(self, tmp_path):
        image = np.random.default_rng(1).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        _write(tmp_path / "fake" / "x.png", image)
        _write(tmp_path / "real" / "x.png", image)
        scores = content_scores(tmp_path / "fake", tmp_path / "real")
        assert scores["psnr"] == np.inf
        assert scores["ssim"] == pytest.approx(1.0)

    def test_missing_counterpart_names_the_file(self, tmp_path):
        target, predicted = _noisy_pair(np.random.default_rng(2))
        _write(tmp_path / "fake" / "a.png", predicted)
        _write(tmp_path / "fake" / "lonely.png", predicted)
        _write(tmp_path / "real" / "a.png", target)
        with pytest.raises(DatasetError, match="No target image for .*lonely.png"):
            content_scores(tmp_path / "fake", tmp_path / "real")

    def test_size_mismatch_raises(self, tmp_path):
        rng = np.random.default_rng(3)
        _write(tmp_path / "fake" / "a.png", _noisy_pair(rng, (16, 24))[1])
        _write(tmp_path / "real" / "a.png", _noisy_pair(rng, (16, 16))[0])
        with pytest.raises(DatasetError, match="Size mismatch: .*24×16 .*16×16"):
            content_scores(tmp_path / "fake", tmp_path / "real")

    def test_empty_folder_raises(self, tmp_path):
        (tmp_path / "fake").mkdir()
        _write(tmp_path / "real" / "a.png", np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(DatasetError, match="fake"):
            content_scores(tmp_path / "fake", tmp_path / "real")
