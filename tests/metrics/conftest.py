"""Shared helpers of the metrics tests: a tiny injected extractor, PNG writers, oracles."""

import os

import numpy as np
import pytest


class TinyConvFeatures:
    """A random-weight conv extractor (no download) that counts how it is called."""

    def __init__(self, channels=4, cache_key="tiny-conv-test-v1"):
        import keras

        self.model = keras.Sequential(
            [
                keras.Input((None, None, 3)),
                keras.layers.Conv2D(channels, 3, strides=2, activation="tanh"),
                keras.layers.GlobalAveragePooling2D(),
            ]
        )
        self.cache_key = cache_key
        self.calls = 0
        self.images_seen = 0
        self.batch_shapes = []

    def features_of_one(self, image):
        """Oracle path: one image at a time, straight through the model."""
        import keras

        pixels = image[None].astype("float32") / 127.5 - 1.0
        return keras.ops.convert_to_numpy(self.model(pixels))[0]

    def __call__(self, images):
        import keras

        self.calls += 1
        self.images_seen += len(images)
        self.batch_shapes.append(images.shape)
        pixels = images.astype("float32") / 127.5 - 1.0
        return keras.ops.convert_to_numpy(self.model(pixels))


@pytest.fixture
def tiny_extractor():
    return TinyConvFeatures()


def write_pngs(folder, count, size=(32, 32), seed=0, offset=0.0, names=None):
    """Writes `count` random RGB PNGs (size = (height, width)) and returns their paths."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        name = names[index] if names else f"img_{index:03d}.png"
        pixels = np.clip(rng.normal(127.5 + offset, 50.0, size=(*size, 3)), 0, 255).astype(np.uint8)
        path = os.path.join(folder, name)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def read_png(path):
    """Independent reader for oracles (PIL directly, not psr.data.images)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def frechet_oracle(mu1, sigma1, mu2, sigma2):
    """FD by eigen-decomposition: tr (S1 S2)^½ = Σ √λ(S1^½ S2 S1^½)."""
    eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
    sigma1_half = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    middle = sigma1_half @ sigma2 @ sigma1_half
    middle_eigenvalues = np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)
    difference = np.asarray(mu1) - np.asarray(mu2)
    return float(
        difference @ difference
        + np.trace(sigma1)
        + np.trace(sigma2)
        - 2 * np.sum(np.sqrt(middle_eigenvalues))
    )


def mean_and_covariance(features):
    """Oracle statistics: mean and the (n − 1)-normalised covariance, written out."""
    features = np.asarray(features, dtype=np.float64)
    mean = features.sum(axis=0) / len(features)
    centred = features - mean
    return mean, centred.T @ centred / (len(features) - 1)


def mmd_loop_oracle(features_x, features_y):
    """Unbiased MMD² of equal-size sets with k(x, y) = (xᵀy/d + 1)³, by explicit loops."""
    size, dim = len(features_x), len(features_x[0])

    def kernel(a, b):
        return (sum(float(a[i]) * float(b[i]) for i in range(dim)) / dim + 1.0) ** 3

    within = 0.0
    for i in range(size):
        for j in range(size):
            if i != j:
                within += kernel(features_x[i], features_x[j]) + kernel(features_y[i], features_y[j])
    across = sum(kernel(features_x[i], features_y[j]) for i in range(size) for j in range(size))
    return within / (size * (size - 1)) - 2.0 * across / size**2


@pytest.fixture
def helpers():
    """The helpers above, for tests (importing conftest directly is fragile)."""
    import types

    return types.SimpleNamespace(
        TinyConvFeatures=TinyConvFeatures,
        write_pngs=write_pngs,
        read_png=read_png,
        frechet_oracle=frechet_oracle,
        mean_and_covariance=mean_and_covariance,
        mmd_loop_oracle=mmd_loop_oracle,
    )
