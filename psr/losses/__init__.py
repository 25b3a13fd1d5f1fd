"""Losses of psr: patch-contrastive (PatchNCE, DCE, hDCE) and SRC.

Every loss takes the real-input embeddings ("keys") as `y_true` and the
generated-image embeddings ("queries") as `y_pred`, both `[B, N, C]`.
"""

from psr.losses.contrastive import (
    DCELoss,
    HardDCELoss,
    PatchNCELoss,
    dce,
    hard_dce,
    hard_negative_weights,
    patch_nce,
)
from psr.losses.semantic_relation import SemanticRelationLoss, semantic_relation

__all__ = [
    "DCELoss",
    "HardDCELoss",
    "PatchNCELoss",
    "SemanticRelationLoss",
    "dce",
    "hard_dce",
    "hard_negative_weights",
    "patch_nce",
    "semantic_relation",
]
