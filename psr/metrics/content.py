"""Paired content scores (PSNR, SSIM) between predicted and target images.

For paired test sets (e.g. Cityscapes labels→photo, where `real_B` exists) these
complement FID: each predicted image is compared with the target of the same name.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import skimage.metrics

from psr.errors import DatasetError


def _images_by_stem(folder: str, role: str) -> dict[str, str]:
    """Maps relative path without extension → path, for pairing `a.png` with `a.jpg`."""
    from psr.data.images import list_images

    by_stem: dict[str, str] = {}
    for path in list_images(folder, role=role):
        stem = os.path.splitext(os.path.relpath(path, folder))[0]
        if stem in by_stem:
            raise DatasetError(
                f"Two images in {folder} share the name {stem!r} ({os.path.basename(by_stem[stem])}, "
                f"{os.path.basename(path)}): keep one so files can be paired by name."
            )
        by_stem[stem] = path
    return by_stem


def content_scores(predicted_dir: str, target_dir: str) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of predicted images against same-named targets.

    Files are paired by relative path without extension (`fake/a.png` ↔
    `real/a.jpg`); every predicted image needs a target, extra targets are
    ignored. Scores use `skimage.metrics.peak_signal_noise_ratio` and
    `structural_similarity(channel_axis=-1, data_range=255)` (7×7 uniform
    window) on the uint8 RGB images, averaged over pairs. A pair of identical
    images has PSNR = inf, so the mean is then inf.

    Args:
        predicted_dir: folder of predicted (generated) images.
        target_dir: folder of ground-truth images.

    Returns:
        `{"psnr": mean dB, "ssim": mean}`.

    Raises:
        DatasetError: for a missing/empty folder, a predicted image without a
            target, or a pair whose sizes differ.
    """
    from psr.data.images import read_image

    predicted_dir = os.fspath(predicted_dir)
    target_dir = os.fspath(target_dir)
    predicted = _images_by_stem(predicted_dir, role="predicted images")
    targets = _images_by_stem(target_dir, role="target images")
    psnr_values, ssim_values = [], []
    for stem in sorted(predicted):
        if stem not in targets:
            raise DatasetError(
                f"No target image for {predicted[stem]} in {target_dir} (looked for {stem}.*): "
                "targets are paired with predictions by file name."
            )
        predicted_image = read_image(predicted[stem])
        target_image = read_image(targets[stem])
        if predicted_image.shape != target_image.shape:
            raise DatasetError(
                f"Size mismatch: {predicted[stem]} is {predicted_image.shape[1]}×{predicted_image.shape[0]} "
                f"but {targets[stem]} is {target_image.shape[1]}×{target_image.shape[0]}: generate "
                "at the target size or resize the targets."
            )
        psnr, ssim = pair_scores(predicted_image, target_image)
        psnr_values.append(psnr)
        ssim_values.append(ssim)
    return {"psnr": float(np.mean(psnr_values)), "ssim": float(np.mean(ssim_values))}


def pair_scores(predicted: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM) of one uint8 RGB image against its target (skimage, data range 255, 7×7 window)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        # Identical images give mse = 0 and PSNR = inf, which is the right answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        psnr = skimage.metrics.peak_signal_noise_ratio(target, predicted, data_range=255)
    ssim = skimage.metrics.structural_similarity(target, predicted, channel_axis=-1, data_range=255)
    return float(psnr), float(ssim)


def image_content_scores(predicted: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Mean PSNR/SSIM of float images `[N, H, W, 3]` in [-1, 1] against targets of the same form,
    each quantised to uint8 first (as if saved as PNG), as `content_scores` does with files."""
    from psr.data.pixels import to_uint8

    predicted, targets = np.asarray(to_uint8(predicted)), np.asarray(to_uint8(targets))
    if predicted.shape != targets.shape:
        raise ValueError(f"Expected predictions and targets of one shape. Received: {predicted.shape}, {targets.shape}")
    pairs = [pair_scores(p, t) for p, t in zip(predicted, targets)]
    return {"psnr": float(np.mean([p for p, _ in pairs])), "ssim": float(np.mean([s for _, s in pairs]))}
