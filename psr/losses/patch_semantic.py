"""The patch-wise semantic relation objective shared by every psr method.

One object assembles the pieces of the paper's loss for any pair of feature
stacks: a *key* side (detached: the real input for CUT/SinCUT, the translated
image for StarGAN v2, the teacher for compression) and a *query* side (with
gradient). For each compared layer it

1. samples patch locations once per step (shared by keys and queries),
2. projects the patches with the head (unit vectors `[B, N, C]`),
3. applies the contrastive loss (hDCE / DCE / PatchNCE) and SRC,
4. weights each term by its λ and reduces over layers (mean: official; sum: supplement).

With `negatives_from_minibatch` (SinCUT) the patches of the whole minibatch are
one set `[1, B·N, C]`; under `tf.distribute` the trainer passes `gather`, which
concatenates the replicas' patches so that the set is the *global* minibatch,
as on one device. The contrastive and SRC losses are `keras.losses.Loss`
objects, which scale by 1/replicas, so the gathered term contributes its exact
share of the gradient.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras
from keras import ops

from psr.registry import REDUCTIONS


def combine_layers(values: Sequence, reduction: str):
    """Official code averages the per-layer terms (×1/L); the supplement sums them."""
    total = ops.sum(ops.stack(values))
    return total / len(values) if reduction == "mean" else total


class PatchSemanticObjective:
    """Sampler + projection head + contrastive loss + SRC, with their weights and reductions.

    Args:
        head: `head(features, patch_ids) -> list of [B, N, C]` unit vectors (its variables are trained by the
            caller, which also tracks it for checkpoints).
        sampler: `sampler(features) -> list of patch ids` (one set per layer and call).
        contrastive_loss: `loss(keys, queries)` (`HardDCELoss`, `DCELoss`, `PatchNCELoss`).
        src_loss: `SemanticRelationLoss` or None (no SRC term).
        lambda_contrastive, lambda_src: weights of the two terms (applied per layer, before the reduction).
        layer_reduction: "mean" over layers (official) or "sum" (supplement).
        negatives_from_minibatch: compare every patch of the minibatch with every other ([1, B·N, C]).
        gather: `x [b, ...] -> [B, ...]`, concatenating all replicas' rows (distributed minibatch negatives);
            None on one device.
    """

    def __init__(
        self,
        head: keras.layers.Layer,
        sampler: keras.layers.Layer,
        contrastive_loss: keras.losses.Loss,
        src_loss: Optional[keras.losses.Loss] = None,
        *,
        lambda_contrastive: float = 0.1,
        lambda_src: float = 0.05,
        layer_reduction: str = "mean",
        negatives_from_minibatch: bool = False,
        gather: Optional[Callable] = None,
    ):
        if layer_reduction not in REDUCTIONS:
            raise ValueError(f"`layer_reduction` must be one of {REDUCTIONS}. Received: layer_reduction={layer_reduction!r}")
        self.head = head
        self.sampler = sampler
        self.contrastive_loss = contrastive_loss
        self.src_loss = src_loss
        self.lambda_contrastive = float(lambda_contrastive)
        self.lambda_src = float(lambda_src)
        self.layer_reduction = layer_reduction
        self.negatives_from_minibatch = bool(negatives_from_minibatch)
        self.gather = gather

    @property
    def has_src(self) -> bool:
        return self.src_loss is not None

    # === Embeddings ===

    def keys(self, key_features: Sequence) -> tuple[list, list]:
        """`(keys, patch_ids)`: new patch locations and the detached key embeddings at them."""
        key_features = [ops.stop_gradient(f) for f in key_features]
        patch_ids = self.sampler(key_features)
        keys = [ops.stop_gradient(k) for k in self.head(key_features, patch_ids)]
        return keys, patch_ids

    def queries(self, query_features: Sequence, patch_ids: Sequence) -> list:
        """Query embeddings at the keys' patch locations (with gradient)."""
        return self.head(query_features, patch_ids)

    # === Terms ===

    def _patch_sets(self, embeddings):
        """[B, N, C] per-image sets, or one [1, B·N, C] set of the (global) minibatch."""
        if not self.negatives_from_minibatch:
            return embeddings
        if self.gather is not None:
            embeddings = self.gather(embeddings)
        return ops.reshape(embeddings, (1, -1, ops.shape(embeddings)[-1]))

    def _layer_terms(self, loss, weight: float, keys: Sequence, queries: Sequence):
        terms = [weight * loss(self._patch_sets(k), self._patch_sets(q)) for k, q in zip(keys, queries)]
        return combine_layers(terms, self.layer_reduction)

    def contrastive(self, keys: Sequence, queries: Sequence):
        """λ_contrastive · (layer-reduced) contrastive loss of one branch."""
        return self._layer_terms(self.contrastive_loss, self.lambda_contrastive, keys, queries)

    def relation(self, keys: Sequence, queries: Sequence):
        """λ_SRC · (layer-reduced) SRC of one branch; zero without an SRC loss."""
        if self.src_loss is None:
            return ops.zeros(())
        return self._layer_terms(self.src_loss, self.lambda_src, keys, queries)

    def __call__(self, key_features: Sequence, query_features: Sequence) -> dict:
        """Both terms for one (key, query) pair of feature stacks: `{"contrastive": ..., "src": ...}`."""
        keys, patch_ids = self.keys(key_features)
        queries = self.queries(query_features, patch_ids)
        return {"contrastive": self.contrastive(keys, queries), "src": self.relation(keys, queries)}

    def get_config(self) -> dict:
        return {
            "lambda_contrastive": self.lambda_contrastive,
            "lambda_src": self.lambda_src,
            "layer_reduction": self.layer_reduction,
            "negatives_from_minibatch": self.negatives_from_minibatch,
        }


__all__ = ["PatchSemanticObjective", "combine_layers"]
