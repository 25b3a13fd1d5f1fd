"""Distances between sets of image features: Fréchet distance (FID) and KID.

Both work on plain NumPy arrays in float64, so they can be checked against a
NumPy/SciPy re-statement and used with any feature extractor. `FeatureStatistics`
holds what the distances need from one set of images (mean, covariance and the
per-image features that KID samples from) and stores it as `.npz`.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np
import scipy.linalg

from psr.errors import DatasetError

# === Fréchet distance ===

# Imaginary parts of sqrtm up to this size are round-off from a nearly singular
# product; anything larger means a covariance was not positive semi-definite.
_MAX_IMAGINARY_PART = 1e-3


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between two Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    This is FID when the Gaussians are fitted to Inception pool features.

    Formula:
    ```
    d² = ‖mu1 − mu2‖² + tr(sigma1) + tr(sigma2) − 2·tr((sigma1 · sigma2)^½)
    ```

    The matrix square root is `scipy.linalg.sqrtm` in float64. When the product
    is singular (fewer images than feature dimensions) sqrtm can return
    non-finite values; then it is recomputed as `((sigma1 + eps·I)(sigma2 + eps·I))^½`,
    the fallback of pytorch-fid. Imaginary parts left by round-off are dropped.

    Args:
        mu1: mean of the first set, shape `[d]`.
        sigma1: covariance of the first set, shape `[d, d]`.
        mu2: mean of the second set, shape `[d]`.
        sigma2: covariance of the second set, shape `[d, d]`.
        eps: diagonal offset of the fallback for singular products, `> 0`.

    Returns:
        The squared Fréchet distance as a Python float.

    Raises:
        ValueError: for mismatched shapes, `eps <= 0`, or when the square root
            has a large imaginary part (a covariance that is not positive
            semi-definite).
    """
    if not eps > 0:
        raise ValueError(f"Argument `eps` must be > 0. Received: eps={eps}")
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(
            "Means must be vectors of the same length. "
            f"Received: mu1.shape={mu1.shape}, mu2.shape={mu2.shape}"
        )
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"Covariances must have shape ({dim}, {dim}) to match the means. "
            f"Received: sigma1.shape={sigma1.shape}, sigma2.shape={sigma2.shape}"
        )

    mean_difference = mu1 - mu2
    covariance_sqrt = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covariance_sqrt).all():
        offset = eps * np.eye(dim)
        covariance_sqrt = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covariance_sqrt):
        largest_imaginary = float(np.max(np.abs(np.diagonal(covariance_sqrt).imag)))
        if largest_imaginary > _MAX_IMAGINARY_PART:
            raise ValueError(
                "The square root of sigma1·sigma2 has a large imaginary part, so a "
                "covariance is not positive semi-definite. "
                f"Received: largest imaginary diagonal entry {largest_imaginary:.3g}"
            )
        covariance_sqrt = covariance_sqrt.real

    distance = (
        mean_difference @ mean_difference
        + np.trace(sigma1)
        + np.trace(sigma2)
        - 2.0 * np.trace(covariance_sqrt)
    )
    return float(distance)


# === Kernel inception distance ===


def _polynomial_kernel(features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel matrix k(x, y) = (xᵀy / d + 1)³."""
    dim = features_a.shape[1]
    return (features_a @ features_b.T / dim + 1.0) ** 3


def _unbiased_mmd2(features_x: np.ndarray, features_y: np.ndarray) -> float:
    """Unbiased MMD² of two equally sized samples (see `kernel_inception_distance`)."""
    size = features_x.shape[0]
    kernel_xx = _polynomial_kernel(features_x, features_x)
    kernel_yy = _polynomial_kernel(features_y, features_y)
    kernel_xy = _polynomial_kernel(features_x, features_y)
    # k(x_i, x_i) pairs a sample with itself: left out to make the estimate unbiased.
    within_sum = (kernel_xx.sum() - np.trace(kernel_xx)) + (
        kernel_yy.sum() - np.trace(kernel_yy)
    )
    return float(within_sum / (size * (size - 1)) - 2.0 * kernel_xy.sum() / size**2)


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int | None = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel inception distance (Bińkowski et al. 2018) between two feature sets.

    For each of `num_subsets` rounds, `subset_size` rows are drawn without
    replacement from each set (independently per set and per round, from
    `np.random.default_rng(seed)`), and the unbiased MMD² with the cubic
    polynomial kernel is computed. The result is the mean and the standard
    deviation (ddof 0) over rounds, as in torch-fidelity. The values are raw
    MMD²; papers often print KID × 100 or × 1000.

    Formula:
    ```
    k(x, y) = (xᵀy / d + 1)³
    MMD²_u = Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m − 1))
             − 2 Σ_{i,j} k(x_i, y_j) / m²
    ```

    Args:
        features1: first feature set, shape `[n1, d]`.
        features2: second feature set, shape `[n2, d]`.
        num_subsets: number of random subsets, `>= 1`.
        subset_size: rows per subset `m`, `>= 2`; `None` means `min(n1, n2)`.
        seed: seed of the subset sampling.

    Returns:
        `(mean, std)` of MMD² over the subsets, as Python floats.

    Raises:
        ValueError: for bad arguments, mismatched feature widths, or when a set
            has fewer than `subset_size` rows (use a smaller `subset_size`).
    """
    features1 = np.asarray(features1, dtype=np.float64)
    features2 = np.asarray(features2, dtype=np.float64)
    if features1.ndim != 2 or features2.ndim != 2 or features1.shape[1] != features2.shape[1]:
        raise ValueError(
            "Feature sets must be 2-D arrays [n, d] with the same d. "
            f"Received: features1.shape={features1.shape}, features2.shape={features2.shape}"
        )
    if num_subsets < 1:
        raise ValueError(f"Argument `num_subsets` must be >= 1. Received: num_subsets={num_subsets}")
    count1, count2 = features1.shape[0], features2.shape[0]
    if subset_size is None:
        subset_size = min(count1, count2)
    if subset_size < 2:
        raise ValueError(
            "Argument `subset_size` must be >= 2 (the unbiased estimate needs two "
            f"samples per set). Received: subset_size={subset_size}"
        )
    if subset_size > min(count1, count2):
        raise ValueError(
            f"KID needs at least subset_size={subset_size} samples in each set, but "
            f"the sets have {count1} and {count2}; use subset_size <= {min(count1, count2)}. "
            f"Received: subset_size={subset_size}"
        )

    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets, dtype=np.float64)
    for round_index in range(num_subsets):
        rows1 = rng.choice(count1, subset_size, replace=False)
        rows2 = rng.choice(count2, subset_size, replace=False)
        estimates[round_index] = _unbiased_mmd2(features1[rows1], features2[rows2])
    return float(estimates.mean()), float(estimates.std())


# === Feature statistics ===


# eq=False: the generated __eq__ would compare arrays element-wise and fail.
@dataclasses.dataclass(eq=False)
class FeatureStatistics:
    """What FID and KID need from one set of images.

    Attributes:
        mu: mean feature, float64 `[d]`.
        sigma: covariance of the features (ddof 1, as pytorch-fid), float64 `[d, d]`.
        features: the per-image features, float32 `[n, d]`, needed by KID; `None`
            when only the Gaussian is known (e.g. statistics from elsewhere).
        num_images: number of images the statistics were computed from.
    """

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None
    num_images: int = 0

    @classmethod
    def from_features(cls, features: np.ndarray, keep_features: bool = True) -> "FeatureStatistics":
        """Fits mean and covariance to `features` `[n, d]` (n >= 2).

        Args:
            features: per-image features, shape `[n, d]`.
            keep_features: keep the features themselves (as float32) for KID.
        """
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(
                "Statistics need a 2-D feature array with at least 2 rows. "
                f"Received: features.shape={features.shape}"
            )
        features64 = features.astype(np.float64)
        return cls(
            mu=features64.mean(axis=0),
            sigma=np.cov(features64, rowvar=False, ddof=1),
            features=features.astype(np.float32) if keep_features else None,
            num_images=int(features.shape[0]),
        )

    def save_npz(self, path: str) -> None:
        """Writes the statistics to `path` (.npz) atomically (temp file + rename)."""
        from psr.rundir import atomic_write_file

        arrays = {"mu": self.mu, "sigma": self.sigma, "num_images": np.int64(self.num_images)}
        if self.features is not None:
            arrays["features"] = self.features
        # A stream, not a name: np.savez would append ".npz" to a name.
        atomic_write_file(path, lambda stream: np.savez(stream, **arrays))

    @classmethod
    def load_npz(cls, path: str) -> "FeatureStatistics":
        """Reads statistics written by `save_npz` (or any .npz with `mu` and `sigma`).

        Raises:
            DatasetError: when the file is missing, unreadable or lacks `mu`/`sigma`.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DatasetError(
                f"Feature statistics file not found: {path}. Check the path, or compute "
                "the statistics from the image folder instead."
            )
        try:
            with np.load(path, allow_pickle=False) as archive:
                if "mu" not in archive or "sigma" not in archive:
                    raise DatasetError(
                        f"Feature statistics file {path} has no 'mu'/'sigma' arrays "
                        f"(found: {', '.join(archive.files) or 'nothing'}). Recompute it."
                    )
                features = archive["features"] if "features" in archive else None
                num_images = (
                    int(archive["num_images"])
                    if "num_images" in archive
                    else (0 if features is None else features.shape[0])
                )
                return cls(
                    mu=archive["mu"].astype(np.float64),
                    sigma=archive["sigma"].astype(np.float64),
                    features=features,
                    num_images=num_images,
                )
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
            raise DatasetError(
                f"Cannot read feature statistics file {path} ({error}). Delete it and recompute."
            ) from error
