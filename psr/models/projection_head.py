"""Patch projection head F of CUT (`netF mlp_sample`, `netF_nc` 256)."""

from collections.abc import Sequence

import keras

from psr.models.layers import conv_kernel_initializer, gather_patches
from psr.numerics import l2_normalize


@keras.saving.register_keras_serializable(package="psr")
class PatchMLPHead(keras.layers.Layer):
    """Projects sampled patch features to unit-norm embeddings, one MLP per NCE layer.

    For feature map l: gather the patches at `patch_ids[l]` ([B, N, C_l]),
    apply `Dense(units) -> ReLU -> Dense(units)` (skipped when `use_mlp` is
    False) and L2-normalise each vector. The MLPs are built in the constructor
    from `input_channels`, so every weight exists before training (CUT creates
    them on the first batch, which breaks optimizers built ahead of time).

    Formula:
        z = W2 relu(W1 f + b1) + b2,   out = z / (||z||_2 + 1e-7)

    Args:
        input_channels: channels of each feature map, e.g.
            `ResnetGenerator.feature_channels()` = [3, 128, 256, 256, 256].
        units: width of both dense layers (CUT `netF_nc`, 256).
        use_mlp: False gives CUT's `netF sample`: gather and normalise only.
    """

    def __init__(
        self,
        input_channels: Sequence[int],
        units: int = 256,
        use_mlp: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        input_channels = list(input_channels)
        if not input_channels or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in input_channels
        ):
            raise ValueError(
                "Argument `input_channels` must be a non-empty list of integers >= 1. "
                f"Received: input_channels={input_channels!r}"
            )
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"Argument `units` must be an integer >= 1. Received: units={units!r}")
        self.input_channels = input_channels
        self.units = units
        self.use_mlp = bool(use_mlp)
        self.mlps = []
        if self.use_mlp:
            for index in range(len(input_channels)):
                self.mlps.append(
                    [
                        keras.layers.Dense(
                            units,
                            activation="relu",
                            kernel_initializer=conv_kernel_initializer(),
                            bias_initializer="zeros",
                            name=f"mlp_{index}_dense1",
                        ),
                        keras.layers.Dense(
                            units,
                            kernel_initializer=conv_kernel_initializer(),
                            bias_initializer="zeros",
                            name=f"mlp_{index}_dense2",
                        ),
                    ]
                )
        self.build()

    def build(self, input_shape=None):
        # The input shapes are known from `input_channels`; whatever Keras
        # passes here on the first call is not needed.
        for (first, second), channels in zip(self.mlps, self.input_channels):
            if not first.built:
                first.build((None, channels))
            if not second.built:
                second.build((None, self.units))

    def call(self, features, patch_ids):
        """Embeds the patches of each feature map.

        Args:
            features: list of [B, H_l, W_l, C_l] maps, one per entry of `input_channels`.
            patch_ids: list of int [N_l] location ids (from `PatchSampler`).

        Returns:
            list of [B, N_l, units] unit-norm embeddings ([B, N_l, C_l] without MLP).
        """
        if len(features) != len(self.input_channels) or len(patch_ids) != len(self.input_channels):
            raise ValueError(
                f"PatchMLPHead expects {len(self.input_channels)} feature maps and id lists. "
                f"Received: {len(features)} feature maps, {len(patch_ids)} id lists"
            )
        outputs = []
        for index, (feature, ids) in enumerate(zip(features, patch_ids)):
            patches = gather_patches(feature, ids)
            if self.use_mlp:
                first, second = self.mlps[index]
                patches = second(first(patches))
            outputs.append(l2_normalize(patches))
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "input_channels": list(self.input_channels),
            "units": self.units,
            "use_mlp": self.use_mlp,
        }
