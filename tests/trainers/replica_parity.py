"""Subprocess body of the tf.distribute parity tests (logical devices must be set before TensorFlow starts).

Builds one trainer on one device and one under `MirroredStrategy` over two logical CPUs, with the same
initial weights, runs one `fit` step on the same global batch of 4 and prints the largest weight-update
difference relative to the largest update, as JSON.
"""

import json
import sys

import numpy as np
import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from psr.builders import build_cut_trainer  # noqa: E402
from psr.config import config_from_dict  # noqa: E402
from psr.methods import TrainerInputs  # noqa: E402

METHODS = {
    "cut": {
        "method": "cut",
        "data": {"crop_size": 16, "load_size": 16},
        "model": {"generator": {"filters": 4, "num_blocks": 1}, "discriminator": {"filters": 4, "num_layers": 2},
                  "head": {"units": 8, "num_patches": 16, "layers": [0, 4, 8, 12]}},
    },
    "sincut": {
        "method": "sincut",
        "data": {"crop_size": 16, "load_size": 16},
        "model": {"generator": {"filters": 2, "num_blocks": 1}, "discriminator": {"filters": 2},
                  "head": {"units": 8, "num_patches": 2, "layers": [0, 1, 2]}},
        # hDCE so that the hard-negative weights and the gathered minibatch set both matter.
        "loss": {"contrastive": "hdce"},
    },
}


def networks(trainer):
    return [trainer.generator, trainer.discriminator, trainer.head]


def build(cfg, strategy, weights=None):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        sgd = [keras.optimizers.SGD(1e-3) for _ in range(3)]
        trainer = build_cut_trainer(cfg.model, cfg.loss, cfg.train,
                                    TrainerInputs(image_size=cfg.data.crop_size, steps_per_epoch=1, seed=3),
                                    optimizers=sgd)
    if weights is not None:
        for net, values in zip(networks(trainer), weights):
            net.set_weights(values)
    return trainer


def main(method: str) -> None:
    cfg = config_from_dict(METHODS[method])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    y = rng.uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    data = tf.data.Dataset.from_tensors((x, y))

    single = build(cfg, tf.distribute.get_strategy())
    before = [[w.copy() for w in net.get_weights()] for net in networks(single)]
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = build(cfg, mirrored_strategy, before)
    single_logs = single.fit(data, epochs=1, verbose=0).history
    mirrored_logs = mirrored.fit(data, epochs=1, verbose=0).history

    worst, largest = 0.0, 0.0
    for net_single, net_mirrored, initial in zip(networks(single), networks(mirrored), before):
        for w0, w1, w2 in zip(initial, net_single.get_weights(), net_mirrored.get_weights()):
            worst = max(worst, float(np.max(np.abs((w2 - w0) - (w1 - w0)))))
            largest = max(largest, float(np.max(np.abs(w1 - w0))))
    print(json.dumps({
        "replicas": mirrored_strategy.num_replicas_in_sync,
        "relative_difference": worst / largest,
        "largest_update": largest,
        "logs_single": {k: v[0] for k, v in single_logs.items()},
        "logs_mirrored": {k: v[0] for k, v in mirrored_logs.items()},
    }))


if __name__ == "__main__":
    main(sys.argv[1])
