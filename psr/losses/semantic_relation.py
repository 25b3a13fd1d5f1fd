"""Semantic relation consistency (SRC, spec `single_modal.md` §1.5–1.6).

SRC asks the patch-to-patch similarity structure of the generated image
(queries) to match that of the real input (keys). Both embeddings are
re-normalised, their self-similarity matrices `[B, N, N]` are turned into
distributions and compared per image. Keys are stop-gradient.
"""

from __future__ import annotations

import keras
from keras import ops

from psr.losses.contrastive import (
    _as_float32_pair,
    _diagonal_mask,
    _pairwise_similarity,
    l2_normalize,
)
from psr.registry import SRC_DIVERGENCES


def _similarities(queries, keys):
    """`(S_q, S_k)`: self-similarities of the re-normalised embeddings, `[B, N, N]`."""
    queries, keys = _as_float32_pair(queries, keys)
    queries, keys = l2_normalize(queries), l2_normalize(keys)
    return _pairwise_similarity(queries, queries), _pairwise_similarity(keys, keys)


def _log_distributions(query_similarity, key_similarity):
    """Log-softmax over axis 1 (the first patch index), as `nn.Softmax(dim=1)` in SRC.py."""
    return ops.log_softmax(query_similarity, axis=1), ops.log_softmax(key_similarity, axis=1)


def _jensen_shannon(query_similarity, key_similarity):
    log_p_query, log_p_key = _log_distributions(query_similarity, key_similarity)
    p_query, p_key = ops.exp(log_p_query), ops.exp(log_p_key)
    log_mixture = ops.log(0.5 * (p_query + p_key))
    entries = p_query * (log_p_query - log_mixture) + p_key * (log_p_key - log_mixture)
    return 0.5 * ops.sum(entries, axis=(1, 2))


def _kullback_leibler(query_similarity, key_similarity):
    # Σ_k KL(P_k ‖ Q_k): P from the input (keys), Q from the output (queries).
    log_p_query, log_p_key = _log_distributions(query_similarity, key_similarity)
    return ops.sum(ops.exp(log_p_key) * (log_p_key - log_p_query), axis=(1, 2))


def _off_diagonal(difference):
    return ops.where(_diagonal_mask(ops.shape(difference)[-1]), 0.0, difference)


def _absolute_difference(query_similarity, key_similarity):
    return ops.sum(ops.abs(_off_diagonal(key_similarity - query_similarity)), axis=(1, 2))


def _squared_difference(query_similarity, key_similarity):
    return ops.sum(ops.square(_off_diagonal(key_similarity - query_similarity)), axis=(1, 2))


_DIVERGENCES = {
    "jsd": _jensen_shannon,
    "kl": _kullback_leibler,
    "l1": _absolute_difference,
    "l2": _squared_difference,
}
DIVERGENCES = SRC_DIVERGENCES  # the config's list; tests check it names exactly these functions


def _check_divergence(divergence):
    if divergence not in _DIVERGENCES:
        raise ValueError(
            f"Argument `divergence` must be one of {DIVERGENCES}. Received: divergence={divergence!r}"
        )


def semantic_relation(queries, keys, divergence: str = "jsd"):
    """Per-image SRC value, `[B]` float32.

    Args:
        queries: `[B, N, C]` embeddings of the generated image (gradient flows).
        keys: `[B, N, C]` embeddings of the real input (stop-gradient).
        divergence: `"jsd"` (the paper's and official code's choice), `"kl"`,
            `"l1"` or `"l2"` (the supplement C.3 ablations).

    Formula:
    ```
    q̂ = q / (‖q‖ + 1e-7),  k̂ = sg(k / (‖k‖ + 1e-7))
    S_q = q̂ q̂ᵀ,  S_k = k̂ k̂ᵀ                       (diagonal kept)
    Q[:, j] = softmax_i(S_q[:, j]),  P[:, j] = softmax_i(S_k[:, j])   (axis 1)
    jsd = ½ Σ_{i,j} [Q log(Q/M) + P log(P/M)],  M = (P + Q)/2
    kl  = Σ_{i,j} P log(P/Q)
    l1  = Σ_{i≠j} |S_k − S_q|,   l2 = Σ_{i≠j} (S_k − S_q)²
    ```
    Every divergence is a sum over the image's N×N entries (N distributions
    summed, not averaged), as the official `KLDivLoss(reduction="sum")`.
    """
    _check_divergence(divergence)
    query_similarity, key_similarity = _similarities(queries, keys)
    return _DIVERGENCES[divergence](query_similarity, key_similarity)


@keras.saving.register_keras_serializable(package="psr")
class SemanticRelationLoss(keras.losses.Loss):
    """Semantic relation consistency loss (SRC).

    `y_true` is the **keys** (real-input embeddings), `y_pred` the **queries**
    (generated-image embeddings), both `[B, N, C]`. `call` returns one value
    per image (the sum over that image's N×N entries, see
    `semantic_relation`). The default `"sum_over_batch_size"` reduction then
    takes the **mean over B**: summing over B would scale the term with the
    batch size, and at B = 1 the mean is exactly the official value.

    Args:
        divergence: `"jsd"`, `"kl"`, `"l1"` or `"l2"`.
        reduction, name: as in `keras.losses.Loss`.
        dtype: dtype of the returned value; the computation is float32.

    Formula:
    ```
    loss = mean_b JSD_b(softmax_axis1(S_q), sg(softmax_axis1(S_k)))
    ```
    """

    def __init__(self, divergence="jsd", reduction="sum_over_batch_size", name="src", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _check_divergence(divergence)
        self.divergence = divergence

    def call(self, y_true, y_pred):
        return semantic_relation(queries=y_pred, keys=y_true, divergence=self.divergence)

    def get_config(self):
        config = super().get_config()
        config.update({"divergence": self.divergence, "dtype": self._dtype_policy.name})
        return config


__all__ = ["DIVERGENCES", "SemanticRelationLoss", "semantic_relation"]
