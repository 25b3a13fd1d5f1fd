"""psr: patch-wise semantic relation losses (hDCE + SRC) for image-to-image translation.

Keras 3 / TensorFlow implementation of Jung, Kwon & Ye, "Exploring Patch-wise
Semantic Relation for Contrastive Learning in Image-to-Image Translation Tasks"
(CVPR 2022).
"""

import os

# psr is written for the TensorFlow backend of Keras 3; set it before keras is imported.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
