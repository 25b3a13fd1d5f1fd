"""What the contrastive losses need from a generator: the outputs of its first layers, by index."""

from __future__ import annotations

from typing import Sequence

from psr.models.fused import run_layers


class SequentialFeatures:
    """Mixin for generators built as an ordered list of feature layers (optionally followed by a decoder).

    A subclass sets `feature_layers` (the list whose entries `encode` can return, in order),
    `feature_layer_channels` (their output channels) and `default_layer_ids`, and may override
    `decode` (the layers after the feature list) and `check_inputs`.
    """

    feature_layers: list
    feature_layer_channels: list
    default_layer_ids: tuple = ()
    # Run parameter-free layers and the conv after them as one `conv_unit` (see `psr.models.fused`).
    fused: bool = False

    def decode(self, features):
        return features

    def check_inputs(self, inputs) -> None:
        pass

    def encode(self, inputs, layer_ids: Sequence[int] = None) -> list:
        """Runs the feature layers up to `max(layer_ids)` and returns the outputs of those entries, in order."""
        layer_ids = self._check_layer_ids(self.default_layer_ids if layer_ids is None else layer_ids)
        return self._run(inputs, layer_ids, stop=max(layer_ids) + 1)[1]

    def translate_and_encode(self, inputs, layer_ids: Sequence[int] = None, training=False):
        """`(call(inputs), encode(inputs, layer_ids))` in one pass: the encoder is the generator's start.

        The trainer uses it for the real images, whose features (the contrastive keys) are activations the
        translation computes anyway, so no separate encoder pass is needed.
        """
        self.check_inputs(inputs)
        layer_ids = self._check_layer_ids(self.default_layer_ids if layer_ids is None else layer_ids)
        features, captured = self._run(inputs, layer_ids, stop=len(self.feature_layers))
        return self.decode(features), captured

    def feature_channels(self, layer_ids: Sequence[int] = None) -> list[int]:
        """Channels of the `encode` outputs (e.g. [3, 128, 256, 256, 256] for CUT), to build the head early."""
        layer_ids = self._check_layer_ids(self.default_layer_ids if layer_ids is None else layer_ids)
        return [self.feature_layer_channels[index] for index in layer_ids]

    def _run(self, inputs, layer_ids: list, stop: int):
        x, captured = run_layers(inputs, self.feature_layers[:stop], fused=self.fused, capture=layer_ids)
        return x, [captured[index] for index in layer_ids]

    def _check_layer_ids(self, layer_ids) -> list[int]:
        layer_ids = [int(index) for index in layer_ids]
        count = len(self.feature_layers)
        if not layer_ids or any(index < 0 or index >= count for index in layer_ids):
            raise ValueError(
                f"Argument `layer_ids` must be a non-empty list of feature-layer indices in [0, {count - 1}]. "
                f"Received: layer_ids={layer_ids}"
            )
        return layer_ids
