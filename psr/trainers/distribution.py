"""tf.distribute for psr trainers: the strategy of `train.distribute`, chief-only writes, global reductions.

- `none`: TensorFlow's default strategy (one device).
- `mirrored`: `MirroredStrategy` over every local GPU, or over the logical CPUs
  when there is no GPU (tests split the CPU into two logical devices).
- `multi_worker`: `MultiWorkerMirroredStrategy`, configured by the `TF_CONFIG`
  environment variable (cluster addresses, this worker's task index).

Losses are reduced over the **global** batch (Keras optimisers sum the
replicas' gradients), every file is written by the chief only, and
minibatch-wide sets (SinCUT's negatives) are gathered across replicas.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import tensorflow as tf
from keras import ops

from psr.errors import ConfigError


def make_strategy(mode: str) -> tf.distribute.Strategy:
    """The strategy of `train.distribute`; networks and optimisers must be built in its scope."""
    if mode == "none":
        return tf.distribute.get_strategy()
    if mode == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if mode == "multi_worker":
        try:
            cluster = json.loads(os.environ.get("TF_CONFIG", ""))
            cluster["cluster"]["worker"], cluster["task"]["index"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                "train.distribute multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
                "on every machine (index = that machine's position)."
            ) from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"train.distribute: {mode!r} is not one of none, mirrored, multi_worker.")


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """True on the one process that writes files: the chief, else worker 0, else the only process."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def num_replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def global_batch_mean(per_sample):
    """Mean over the *global* batch: right under `tf.distribute`, where optimizers sum replica gradients."""
    per_sample = ops.cast(per_sample, "float32")
    return ops.sum(per_sample) / ops.cast(ops.shape(per_sample)[0] * num_replicas(), "float32")


def gather_replicas(x):
    """Concatenates every replica's `x` along axis 0 (in replica order); identity on one replica.

    Differentiable: the gradient of each replica's slice is the sum over replicas of the upstream
    gradient, so a loss that every replica computes on the gathered set (scaled by 1/replicas, as Keras
    losses are) gives each replica its exact share.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_gather(x, axis=0)


def update_moving_average(pairs, decay: float) -> None:
    """`average ← decay·average + (1 − decay)·value` for every `(average, value)` pair of variables.

    Under `tf.distribute` a mirrored variable cannot be assigned from a replica; every replica holds the
    same synchronised values, so the update is made once per variable through the cross-replica context.
    """
    def update(average, value):
        return average.assign(decay * average + (1.0 - decay) * ops.cast(value, average.dtype))

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        for average, value in pairs:
            update(average, value)
        return

    def merge(strategy, averages, values):
        for average, value in zip(averages, values):
            strategy.extended.update(average, update, args=(value,))

    averages = [_tf_variable(a) for a, _ in pairs]
    values = [ops.convert_to_tensor(v) for _, v in pairs]
    context.merge_call(merge, args=(averages, values))


def _tf_variable(variable):
    """The TensorFlow variable behind a `keras.Variable` (the strategy updates that one)."""
    return getattr(variable, "value", variable) if not isinstance(variable, tf.Variable) else variable


__all__ = ["gather_replicas", "update_moving_average", "global_batch_mean", "is_chief", "make_strategy", "num_replicas"]
