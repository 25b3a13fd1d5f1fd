"""Data: image files, the unpaired training pipeline and the quickstart dataset."""

from psr.data.images import (
    IMAGE_EXTENSIONS,
    list_images,
    read_image,
    save_image,
    to_uint8,
    verify_images,
)
from psr.data.synthetic import make_shapes_dataset
from psr.data.unaligned import PREPROCESS_MODES, UnalignedDataset, make_test_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREPROCESS_MODES",
    "UnalignedDataset",
    "list_images",
    "make_shapes_dataset",
    "make_test_dataset",
    "read_image",
    "save_image",
    "to_uint8",
    "verify_images",
]

# SinCUT: random zoomed crops of one image per domain (spec §4.7).
from psr.data.single_image import SingleImageDataset, make_sample_pair  # noqa: E402

__all__ += ["SingleImageDataset", "make_sample_pair"]

# StarGAN v2-style multi-domain data: root/{train,val}/<domain>/ (multimodal spec §5).
from psr.data.multidomain import (  # noqa: E402
    Domain,
    MultiDomainTrainingData,
    discover_domains,
    training_dataset,
    val_images,
)

__all__ += ["Domain", "MultiDomainTrainingData", "discover_domains", "training_dataset", "val_images"]

# The embedded three-domain quickstart dataset (one scene, three styles, ground truth for every s→t).
from psr.data.synthetic_multidomain import make_multidomain_dataset  # noqa: E402

__all__ += ["make_multidomain_dataset"]
