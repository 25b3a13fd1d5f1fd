"""Evaluation metrics: FID and KID on Inception-v3 features, and paired content scores.

- `distances`: `frechet_distance`, `kernel_inception_distance`, `FeatureStatistics`.
- `features`: `InceptionFeatures` and folder streaming/caching (`folder_statistics`).
- `extractors`: the papers' extractors by name (`make_feature_extractor`: pytorch-fid,
  torchvision, keras-imagenet) on `fid_inception`'s Keras Inception-v3 variants.
- `registry`: metrics by name (`register_metric`, `compute_metrics`, `evaluate_folders`).
- `content`: `content_scores` (PSNR/SSIM between same-named images).
- `paired`: paired metrics by name (`lpips`, `fcn`, `miou`), `split_metric_names`, `compute_paired_metrics`.
- `lpips`: the LPIPS v0.1 AlexNet Keras model, `lpips_diversity` (StarGAN v2's diversity score).
- `segmentation`: Cityscapes labels, `fast_hist`, `segmentation_scores`, the DRN segmenter protocols.
The metric names themselves live in `psr.registry` (configuration checks need no TensorFlow); the
names below are imported on first use.
"""

import importlib

_EXPORTS = {
    "content_scores": "psr.metrics.content",
    "FeatureStatistics": "psr.metrics.distances",
    "frechet_distance": "psr.metrics.distances",
    "kernel_inception_distance": "psr.metrics.distances",
    "PytorchFidFeatures": "psr.metrics.extractors",
    "TorchvisionInceptionFeatures": "psr.metrics.extractors",
    "make_feature_extractor": "psr.metrics.extractors",
    "FeatureExtractor": "psr.metrics.features",
    "InceptionFeatures": "psr.metrics.features",
    "folder_features": "psr.metrics.features",
    "folder_statistics": "psr.metrics.features",
    "PairedInputs": "psr.metrics.paired",
    "compute_paired_metrics": "psr.metrics.paired",
    "list_paired_metrics": "psr.metrics.paired",
    "register_paired_metric": "psr.metrics.paired",
    "split_metric_names": "psr.metrics.paired",
    "compute_metrics": "psr.metrics.registry",
    "evaluate_folders": "psr.metrics.registry",
    "list_metrics": "psr.metrics.registry",
    "register_metric": "psr.metrics.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'psr.metrics' has no attribute {name!r}")
