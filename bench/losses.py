"""Time forward + backward of the hDCE and SRC losses of one CUT training step.

What one call does (spec single_modal.md §2, B = 1): for each of the five NCE
layers (N = 256 patches, C = 256 channels), hDCE on the X→Y pair, hDCE on the
identity Y→Y pair and SRC (JSD) on the X→Y pair, averaged over the layers;
then the gradient with respect to the ten query tensors. Γ is a
`keras.Variable`, as in training.

Usage:
    python bench/losses.py [--iterations 50] [--patches 256] [--channels 256]

Prints the median milliseconds per call with XLA off and on (after warm-up,
which includes tracing and compiling). Not a test.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from psr.losses import HardDCELoss  # noqa: E402
from psr.losses import SemanticRelationLoss  # noqa: E402

NUM_LAYERS = 5


def unit_embeddings(rng, batch, patches, channels):
    x = rng.normal(size=(batch, patches, channels)).astype(np.float32)
    return tf.constant(x / np.linalg.norm(x, axis=-1, keepdims=True))


def make_step(jit_compile):
    weight_temperature = keras.Variable(30.0, trainable=False, name="weight_temperature")
    hdce = HardDCELoss(weight_temperature=weight_temperature)
    src = SemanticRelationLoss()

    @tf.function(jit_compile=jit_compile)
    def step(queries_xy, keys_x, queries_yy, keys_y):
        with tf.GradientTape() as tape:
            tape.watch(queries_xy + queries_yy)
            total = 0.0
            for layer in range(NUM_LAYERS):
                total += hdce(keys_x[layer], queries_xy[layer])
                total += hdce(keys_y[layer], queries_yy[layer])
                total += src(keys_x[layer], queries_xy[layer])
            total /= NUM_LAYERS
        return total, tape.gradient(total, queries_xy + queries_yy)

    return step


def time_step(step, inputs, iterations):
    for _ in range(3):  # trace / compile and warm caches
        _, grads = step(*inputs)
    grads[0].numpy()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        _, grads = step(*inputs)
        grads[-1].numpy()  # wait for the result
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--channels", type=int, default=256)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (1, args.patches, args.channels)
    inputs = [[unit_embeddings(rng, *shape) for _ in range(NUM_LAYERS)] for _ in range(4)]
    device = tf.config.list_logical_devices()[-1].name
    print(
        f"hDCE(X→Y) + hDCE(Y→Y) + SRC(X→Y), {NUM_LAYERS} layers, B=1, N={args.patches}, "
        f"C={args.channels}, forward+backward, device {device}, {args.iterations} calls"
    )
    for jit_compile in (False, True):
        median, best = time_step(make_step(jit_compile), inputs, args.iterations)
        print(f"jit_compile={str(jit_compile):5}  median {median:7.2f} ms/call   min {best:7.2f} ms/call")


if __name__ == "__main__":
    main()
