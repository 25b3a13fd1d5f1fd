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
"""

from psr.metrics.content import content_scores
from psr.metrics.distances import FeatureStatistics, frechet_distance, kernel_inception_distance
from psr.metrics.extractors import (
    PytorchFidFeatures,
    TorchvisionInceptionFeatures,
    make_feature_extractor,
)
from psr.metrics.features import (
    FeatureExtractor,
    InceptionFeatures,
    folder_features,
    folder_statistics,
)
from psr.metrics.paired import (
    PairedInputs,
    compute_paired_metrics,
    list_paired_metrics,
    register_paired_metric,
    split_metric_names,
)
from psr.metrics.registry import compute_metrics, evaluate_folders, list_metrics, register_metric

__all__ = [
    "FeatureExtractor",
    "FeatureStatistics",
    "InceptionFeatures",
    "PairedInputs",
    "PytorchFidFeatures",
    "TorchvisionInceptionFeatures",
    "compute_metrics",
    "compute_paired_metrics",
    "content_scores",
    "evaluate_folders",
    "folder_features",
    "folder_statistics",
    "frechet_distance",
    "kernel_inception_distance",
    "list_metrics",
    "list_paired_metrics",
    "make_feature_extractor",
    "register_metric",
    "register_paired_metric",
    "split_metric_names",
]
