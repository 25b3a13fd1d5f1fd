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

import psr.builders  # noqa: E402
from psr.builders import build_compression_trainer, build_cut_trainer, build_stargan2_trainer  # noqa: E402
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
    "stargan2": {
        "method": "stargan2",
        "data": {"crop_size": 16, "load_size": 16},
        "model": {"num_domains": 3, "latent_dim": 3, "style_dim": 4, "mapping_hidden": 8,
                  "generator": {"filters": 4, "max_filters": 8, "num_res_blocks": 1, "num_adain_blocks": 1},
                  "style_encoder": {"filters": 4, "max_filters": 8}, "discriminator": {"filters": 4, "max_filters": 8},
                  "head": {"units": 8, "num_patches": 6, "layers": [0, 1]}},
        "train": {"weight_decay": 1e-2},
        # The tiny networks' patch embeddings start near zero, where the unit normalisation's gradient is
        # ~1e7: float noise in it would decide the comparison, so the semantic terms are off here (their
        # replica scaling shows in the logged values, which must match, and in the CUT/SinCUT parity).
        "loss": {"lambda_contrastive": 0.0, "lambda_src": 0.0},
    },
    "compression": {
        "method": "compression",
        "data": {"crop_size": 16, "load_size": 16},
        "model": {"teacher": {"run": "unused"}, "student": {"filters": 4, "num_blocks": 3, "candidates": [4, 2]},
                  "discriminator": {"filters": 4, "num_layers": 2}, "head": {"units": 8, "num_patches": 16}},
        "loss": {"lambda_contrastive": 0.1, "lambda_src": 10.0},
    },
}


def tiny_teacher(_teacher_cfg):
    from psr.models.resnet_generator import ResnetGenerator

    keras.utils.set_random_seed(7)
    return ResnetGenerator(filters=4, num_blocks=3, antialias=False, antialias_up=False)


psr.builders.load_teacher = tiny_teacher  # no teacher run directory in this subprocess


def networks(trainer):
    if trainer.__class__.__name__ == "StarGAN2Trainer":
        return [trainer.generator, trainer.mapping, trainer.style_encoder, trainer.discriminator]
    if trainer.__class__.__name__ == "CompressionTrainer":
        return [trainer.student, trainer.discriminator, trainer.adaptors, trainer.head]
    return [trainer.generator, trainer.discriminator, trainer.head]


def build(cfg, strategy, weights=None):
    keras.utils.set_random_seed(0)
    inputs = TrainerInputs(image_size=cfg.data.crop_size, steps_per_epoch=1, seed=3)
    with strategy.scope():
        if cfg.method == "stargan2":
            sgd = {name: keras.optimizers.SGD(1e-2) for name in
                   ("generator", "mapping", "style_encoder", "discriminator", "head")}
            trainer = build_stargan2_trainer(cfg.model, cfg.loss, cfg.train, inputs, optimizers=sgd)
        elif cfg.method == "compression":
            sgd = [keras.optimizers.SGD(1e-3) for _ in range(3)]
            trainer = build_compression_trainer(cfg.model, cfg.loss, cfg.train, inputs, optimizers=sgd)
        else:
            sgd = [keras.optimizers.SGD(1e-3) for _ in range(3)]
            trainer = build_cut_trainer(cfg.model, cfg.loss, cfg.train, inputs, optimizers=sgd)
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
    if method == "stargan2":
        labels = np.array([0, 2, 1, 1], np.int32)
        data = tf.data.Dataset.from_tensors(((x, labels), (y, x[::-1].copy(), np.array([1, 0, 2, 2], np.int32))))

    single = build(cfg, tf.distribute.get_strategy())
    before = [[w.copy() for w in net.get_weights()] for net in networks(single)]
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = build(cfg, mirrored_strategy, before)
    if method == "stargan2":  # the EMA copies start as copies of the (replaced) trained weights
        for net, ema in ((mirrored.generator, mirrored.generator_ema), (mirrored.mapping, mirrored.mapping_ema),
                         (mirrored.style_encoder, mirrored.style_encoder_ema)):
            ema.set_weights(net.get_weights())
    single_logs = single.fit(data, epochs=1, verbose=0).history
    mirrored_logs = mirrored.fit(data, epochs=1, verbose=0).history

    # Per network: the worst update difference relative to that network's largest update.
    relative, largest = 0.0, 0.0
    for net_single, net_mirrored, initial in zip(networks(single), networks(mirrored), before):
        worst, net_largest = 0.0, 0.0
        for w0, w1, w2 in zip(initial, net_single.get_weights(), net_mirrored.get_weights()):
            worst = max(worst, float(np.max(np.abs((w2 - w0) - (w1 - w0)))))
            net_largest = max(net_largest, float(np.max(np.abs(w1 - w0))))
        # CUT/SinCUT: relative to the largest update of all networks; stargan2 and compression (networks whose
        # updates differ by orders of magnitude): relative to each network's own.
        per_network = method in ("stargan2", "compression")
        relative = max(relative, worst / max(net_largest, 1e-30)) if per_network else max(relative, worst)
        largest = max(largest, net_largest)
    if method not in ("stargan2", "compression"):
        relative /= largest
    ema = {}
    if method == "stargan2":  # EMA moves by 1e-3 of an update, below float32's resolution of the weights: compare values
        ema["ema_difference"] = max(
            float(np.max(np.abs(a - b))) for a, b in zip(single.generator_ema.get_weights(),
                                                         mirrored.generator_ema.get_weights()))
    print(json.dumps({
        **ema,
        "replicas": mirrored_strategy.num_replicas_in_sync,
        "relative_difference": relative,
        "largest_update": largest,
        "logs_single": {k: v[0] for k, v in single_logs.items()},
        "logs_mirrored": {k: v[0] for k, v in mirrored_logs.items()},
    }))


if __name__ == "__main__":
    main(sys.argv[1])
