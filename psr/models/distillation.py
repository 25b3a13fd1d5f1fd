"""Pieces that connect a student to its teacher in GAN compression (spec compression §3.5–3.6, §4.3)."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


def teacher_feature_layers(teacher) -> list[int]:
    """The teacher list indices the code distils (spec §3.1): the encoder output (the entry before the first
    residual block) and the outputs of the last block of each third of the blocks — 9, 12, 15, 18 for
    CycleGAN's resnet_9blocks; antialiased CUT generators have the same maps at other indices."""
    from psr.models.resnet_generator import ResnetBlock

    blocks = [i for i, layer in enumerate(teacher.sequence) if isinstance(layer, ResnetBlock)]
    if not blocks or len(blocks) % 3:
        raise ValueError(f"the teacher has {len(blocks)} residual blocks; distillation needs a multiple of 3 (9).")
    first, per_group = blocks[0], len(blocks) // 3
    return [first - 1] + [first - 1 + per_group * g for g in (1, 2, 3)]


def pad_channels(feature, channels: int):
    """Zero channels appended up to `channels` (the shared head's input width); a no-op when equal."""
    missing = channels - int(feature.shape[-1])
    if missing == 0:
        return feature
    return ops.pad(feature, [[0, 0], [0, 0], [0, 0], [0, missing]])


@keras.saving.register_keras_serializable(package="psr")
class DistillationAdaptors(keras.layers.Layer):
    """The 1×1 convs f_l (with bias) mapping each student map to the teacher's width (spec §3.5).

    Args:
        student_channels: the supernet's widest residual stream (4·filters); narrower configs feed
            zeros in the unused channels, which equals the code's use of the first R input channels.
        teacher_channels: channels of each teacher map.
    """

    def __init__(self, student_channels: int, teacher_channels: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.student_channels = int(student_channels)
        self.teacher_channels = [int(c) for c in teacher_channels]
        self.convs = [
            keras.layers.Conv2D(c, 1, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
                                bias_initializer="zeros", name=f"adaptor_{i}")
            for i, c in enumerate(self.teacher_channels)
        ]
        for conv in self.convs:
            conv.build((None, None, None, self.student_channels))

    def call(self, features):
        return [conv(f) for conv, f in zip(self.convs, features)]

    def get_config(self):
        return {**super().get_config(), "student_channels": self.student_channels,
                "teacher_channels": list(self.teacher_channels)}



__all__ = ["DistillationAdaptors", "pad_channels", "teacher_feature_layers"]
