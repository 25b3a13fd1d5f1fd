"""Patch-wise contrastive losses: PatchNCE, DCE and hard-negative DCE (hDCE).

Notation (spec `single_modal.md` §1): for one image and one encoder layer,
`q_i` are the N projected patch embeddings of the **generated** image
("queries", they carry the gradient) and `k_i` the embeddings of the **real
input** at the same locations ("keys", always stop-gradient inside the loss).
Tensors are `[B, N, C]`; every similarity matrix is per image, `[B, N, N]`,
so a batch never mixes negatives across images (spec §1.7; at B = 1 this is
exactly the official code).

`weight_temperature` (Γ) is the official code's `HDCE_gamma`: key
self-similarities are divided by it before the softmax that makes the
hard-negative weights. The paper writes γ = 1/Γ.

All maths runs in float32 whatever the input dtype: the masked logits reach
−10/τ ≈ −143, which bfloat16 cannot hold precisely.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from psr.numerics import l2_normalize
from psr.registry import REPORTED_VALUES

# The official code fills masked similarities with −10, not −inf, so the
# masked entry still adds exp(−10/τ) (≈ e^−143 at τ = 0.07) to a denominator.
MASK_VALUE = -10.0
# Added to the norm when keys are re-normalised for the weights (spec §1.3).
NORM_EPSILON = 1e-7


# === Shared helpers ===


def _as_float32_pair(queries, keys):
    """Casts both to float32, checks shapes, and cuts the key gradient."""
    queries = ops.cast(queries, "float32")
    keys = ops.cast(keys, "float32")
    query_shape, key_shape = tuple(queries.shape), tuple(keys.shape)
    same_known_dims = len(query_shape) == len(key_shape) and all(
        a is None or b is None or a == b for a, b in zip(query_shape, key_shape)
    )
    if len(query_shape) != 3 or not same_known_dims:
        raise ValueError(
            "queries and keys must both have shape [batch, num_patches, channels]. "
            f"Received: queries.shape={query_shape}, keys.shape={key_shape}"
        )
    return queries, ops.stop_gradient(keys)


def _diagonal_mask(num_patches):
    """`[N, N]` boolean identity; works for a dynamic N as well."""
    index = ops.arange(num_patches)
    return ops.expand_dims(index, 1) == ops.expand_dims(index, 0)


def _pairwise_similarity(left, right):
    """`[B, N, C] × [B, N, C] → [B, N, N]`, entry (i, j) = left_i · right_j."""
    return ops.matmul(left, ops.swapaxes(right, -1, -2))


def _contrastive_rows(queries, keys, temperature, negative_weights=None):
    """`(dce_rows, infonce_rows)`, both `[B, N]`; see `hard_dce`."""
    queries, keys = _as_float32_pair(queries, keys)
    similarity = _pairwise_similarity(queries, keys)  # s_ij = q_i · k_j
    positive = ops.sum(queries * keys, axis=-1)  # s_ii, computed as the official bmm does
    negatives = similarity if negative_weights is None else similarity * negative_weights
    # The diagonal (the positive itself) is masked *after* weighting, as in hDCE.py.
    negatives = ops.where(_diagonal_mask(ops.shape(similarity)[-1]), MASK_VALUE, negatives)
    logits = (negatives - ops.expand_dims(positive, -1)) / temperature
    dce_rows = ops.logsumexp(logits, axis=-1)
    # Cross-entropy of [s_ii, negatives_i·] / τ with target 0 equals
    # log(1 + Σ_j exp((n_ij − s_ii)/τ)) = softplus(dce_i): the positive is the
    # only term DCE leaves out of the denominator.
    infonce_rows = ops.softplus(dce_rows)
    return dce_rows, infonce_rows


def _check_positive(name, value):
    if isinstance(value, numbers.Real) and not value > 0:
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value}")


# === Functions ===


def hard_negative_weights(keys, weight_temperature):
    """Hard-negative weights from the key self-similarities (spec §1.3).

    Args:
        keys: `[B, N, C]` embeddings of the real input.
        weight_temperature: Γ, a float, tensor or `keras.Variable` (> 0).

    Returns:
        `[B, N, N]` float32 weights in (0, 1], stop-gradient. In each row the
        hardest negative (the most input-similar other patch) gets exactly 1.

    Formula:
    ```
    k̂ = k / (‖k‖ + 1e-7);   A = k̂ k̂ᵀ;   A_ii = −10
    P = softmax(A / Γ, axis=-1);   w_ij = P_ij / max_j' P_ij'
      = exp((A_ij − max_j' A_ij') / Γ)
    ```
    """
    keys = ops.stop_gradient(ops.cast(keys, "float32"))
    normalized = l2_normalize(keys)
    affinity = _pairwise_similarity(normalized, normalized)
    affinity = ops.where(_diagonal_mask(ops.shape(affinity)[-1]), MASK_VALUE, affinity)
    weight_temperature = ops.cast(weight_temperature, "float32")
    probabilities = ops.softmax(affinity / weight_temperature, axis=-1)
    weights = probabilities / ops.max(probabilities, axis=-1, keepdims=True)
    return ops.stop_gradient(weights)


def hard_dce(queries, keys, weight_temperature, temperature: float = 0.07):
    """Weighted decoupled InfoNCE per patch row (spec §1.4).

    Args:
        queries: `[B, N, C]` embeddings of the generated image (gradient flows).
        keys: `[B, N, C]` embeddings of the real input (stop-gradient).
        weight_temperature: Γ of `hard_negative_weights` (float or variable).
        temperature: τ, the logit temperature (`nce_T`).

    Returns:
        `(dce_rows, infonce_rows)`, both `[B, N]` float32. `dce_rows` is the
        term the official code optimises; `infonce_rows` is the cross-entropy
        with the positive in the denominator, the value it logs.

    Formula:
    ```
    s_ij = q_i · k_j;   n_ij = w_ij s_ij (j ≠ i),   n_ii = −10
    dce_i     = logsumexp_j (n_ij − s_ii) / τ
              = −s_ii/τ + log(Σ_{j≠i} exp(w_ij s_ij / τ) + exp(−10/τ))
    infonce_i = −s_ii/τ + log(exp(s_ii/τ) + Σ_j exp(n_ij / τ)) = softplus(dce_i)
    ```
    The weight multiplies the raw similarity, not its exponential: a
    down-weighted negative moves toward logit 0, it is not removed.
    """
    weights = hard_negative_weights(keys, weight_temperature)
    return _contrastive_rows(queries, keys, temperature, negative_weights=weights)


def dce(queries, keys, temperature: float = 0.07):
    """Decoupled InfoNCE per patch row (spec §1.2): `hard_dce` with w ≡ 1.

    Returns:
        `(dce_rows, infonce_rows)`, both `[B, N]` float32.

    Formula:
    ```
    dce_i = −s_ii/τ + log(Σ_{j≠i} exp(s_ij/τ) + exp(−10/τ))
    ```
    """
    return _contrastive_rows(queries, keys, temperature)


def patch_nce(queries, keys, temperature: float = 0.07):
    """CUT's PatchNCE (InfoNCE) per patch row (spec §1.1), `[B, N]` float32.

    Formula:
    ```
    nce_i = −s_ii/τ + log(exp(s_ii/τ) + Σ_{j≠i} exp(s_ij/τ) + exp(−10/τ))
    ```
    """
    return _contrastive_rows(queries, keys, temperature)[1]


# === Loss classes ===


class _PatchContrastiveLoss(keras.losses.Loss):
    """Base of the patch-contrastive losses.

    Arguments follow `keras.losses.Loss`: `y_true` is the **keys** (real-input
    embeddings), `y_pred` the **queries** (generated-image embeddings), both
    `[B, N, C]`. `call` returns one value per image, the mean of its N patch
    rows, so the default `"sum_over_batch_size"` reduction gives the mean over
    all B·N rows (the official reduction) and scales correctly under
    `tf.distribute`.

    Args:
        temperature: τ, the logit temperature (`nce_T`, 0.07 in the paper).
        reduction: as in `keras.losses.Loss`.
        name: name of the loss instance.
        dtype: dtype of the *returned* value (`keras.losses.Loss` semantics);
            the computation itself is always float32.
    """

    def __init__(self, temperature=0.07, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _check_positive("temperature", temperature)
        self.temperature = temperature

    def patch_rows(self, queries, keys):
        """Per-row losses `[B, N]`; implemented by subclasses."""
        raise NotImplementedError

    def call(self, y_true, y_pred):
        return ops.mean(self.patch_rows(queries=y_pred, keys=y_true), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": float(self.temperature), "dtype": self._dtype_policy.name})
        return config


@keras.saving.register_keras_serializable(package="psr")
class PatchNCELoss(_PatchContrastiveLoss):
    """CUT's PatchNCE loss (InfoNCE over the patches of each image).

    Value and gradient are both the InfoNCE of `patch_nce`.

    Formula:
    ```
    loss_b = mean_i [−s_ii/τ + log(exp(s_ii/τ) + Σ_{j≠i} exp(s_ij/τ) + exp(−10/τ))]
    ```
    See `_PatchContrastiveLoss` for the arguments.
    """

    def __init__(self, temperature=0.07, reduction="sum_over_batch_size", name="patch_nce", dtype=None):
        super().__init__(temperature=temperature, reduction=reduction, name=name, dtype=dtype)

    def patch_rows(self, queries, keys):
        return patch_nce(queries, keys, self.temperature)


@keras.saving.register_keras_serializable(package="psr")
class DCELoss(_PatchContrastiveLoss):
    """Decoupled InfoNCE (positive removed from the denominator), weights ≡ 1.

    Args:
        temperature: τ.
        reported_value: `"infonce"` (default, the official behaviour): the
            value equals the mean InfoNCE cross-entropy while the gradient is
            the gradient of the mean DCE (spec §1.4 steps 6–8). `"dce"`: value
            and gradient are both the DCE.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Formula:
    ```
    dce_i = −s_ii/τ + log(Σ_{j≠i} exp(s_ij/τ) + exp(−10/τ))
    "infonce":  loss_i = dce_i − sg(dce_i) + sg(softplus(dce_i))
    "dce":      loss_i = dce_i
    loss_b = mean_i loss_i
    ```
    """

    def __init__(
        self,
        temperature=0.07,
        reported_value="infonce",
        reduction="sum_over_batch_size",
        name="dce",
        dtype=None,
    ):
        super().__init__(temperature=temperature, reduction=reduction, name=name, dtype=dtype)
        if reported_value not in REPORTED_VALUES:
            raise ValueError(
                f"Argument `reported_value` must be one of {REPORTED_VALUES}. "
                f"Received: reported_value={reported_value!r}"
            )
        self.reported_value = reported_value

    def dce_and_infonce_rows(self, queries, keys):
        """`(dce_rows, infonce_rows)`, overridden by `HardDCELoss`."""
        return dce(queries, keys, self.temperature)

    def patch_rows(self, queries, keys):
        dce_rows, infonce_rows = self.dce_and_infonce_rows(queries, keys)
        if self.reported_value == "dce":
            return dce_rows
        # Value: exactly the cross-entropy (v − sg(v) is exactly 0); gradient: ∇v only.
        return dce_rows - ops.stop_gradient(dce_rows) + ops.stop_gradient(infonce_rows)

    def get_config(self):
        config = super().get_config()
        config["reported_value"] = self.reported_value
        return config


@keras.saving.register_keras_serializable(package="psr")
class HardDCELoss(DCELoss):
    """Decoupled InfoNCE with hard-negative weights (hDCE, spec §1.3–1.4).

    Args:
        temperature: τ.
        weight_temperature: Γ (`HDCE_gamma`; the paper's γ = 1/Γ). A float or
            a `keras.Variable`. A variable is read at every call, so a callback
            (`psr.schedules.GammaScheduler`) can change it between steps of a
            compiled train step without retracing.
        reported_value: `"infonce"` or `"dce"`, as in `DCELoss`.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Formula:
    ```
    w_ij = exp((A_ij − max_j' A_ij') / Γ),  A = k̂ k̂ᵀ with A_ii = −10
    dce_i = −s_ii/τ + log(Σ_{j≠i} exp(w_ij s_ij / τ) + exp(−10/τ))
    loss_b = mean_i [dce_i − sg(dce_i) + sg(softplus(dce_i))]    ("infonce")
    ```

    Example:
    ```python
    gamma = keras.Variable(50.0, trainable=False, name="weight_temperature")
    loss_fn = HardDCELoss(weight_temperature=gamma)
    loss = loss_fn(real_features, fake_features)   # keys first, as y_true
    ```
    """

    def __init__(
        self,
        temperature=0.07,
        weight_temperature=1.0,
        reported_value="infonce",
        reduction="sum_over_batch_size",
        name="hard_dce",
        dtype=None,
    ):
        super().__init__(
            temperature=temperature,
            reported_value=reported_value,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        _check_positive("weight_temperature", weight_temperature)
        # Kept as given: converting a variable to a float here would freeze Γ
        # into the traced graph.
        self.weight_temperature = weight_temperature

    def dce_and_infonce_rows(self, queries, keys):
        return hard_dce(queries, keys, self.weight_temperature, self.temperature)

    def get_config(self):
        config = super().get_config()
        config["weight_temperature"] = float(self.weight_temperature)
        return config


__all__ = [
    "DCELoss",
    "HardDCELoss",
    "PatchNCELoss",
    "dce",
    "hard_dce",
    "hard_negative_weights",
    "l2_normalize",
    "patch_nce",
]
