"""The CUT step with the fused units compiles with XLA under mixed_bfloat16 (issue #16).

`train.jit_compile` and `train.mixed_precision` are meant for GPUs, where the step is the same XLA program;
on this CPU the test checks that the program exists and computes what the graph step computes.
"""

import keras
import numpy as np
import tensorflow as tf

from psr.builders import build_cut_trainer
from psr.config import DiscriminatorConfig, GeneratorConfig, HeadConfig, LossConfig, ModelConfig, TrainConfig
from psr.methods import TrainerInputs

SIZE = 16


def build(policy: str):
    model = ModelConfig(
        generator=GeneratorConfig(filters=4, num_blocks=1, fused=True),
        discriminator=DiscriminatorConfig(filters=4, num_layers=2, fused=True),
        head=HeadConfig(units=8, num_patches=16, layers=(0, 4, 8, 12)),
    )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return build_cut_trainer(model, LossConfig(), TrainConfig(), TrainerInputs(image_size=SIZE, steps_per_epoch=2, seed=3))
    finally:
        keras.config.set_dtype_policy(previous)


def copy_weights(source, target) -> None:
    for network in ("generator", "discriminator", "head"):
        getattr(target, network).set_weights(getattr(source, network).get_weights())


def test_mixed_precision_fused_step_compiles_with_xla_and_matches_the_graph_step():
    """It did not compile before: the blur upsampling's resize took bf16 and gave its gradient in float32.

    The float32 step under XLA, fused units included, is tested by
    tests/trainers/test_cut_trainer.py::test_fit_with_batch_two_under_xla_traces_once_while_gamma_changes.
    """
    # bfloat16 activations (unit roundoff 2^-9 ≈ 2e-3), rounded at different points by the two programs,
    # through ~10 layers to D's loss: ≲ 10 · 2e-3 relative.
    policy, rtol = "mixed_bfloat16", 2e-2
    graph, xla = build(policy), build(policy)
    copy_weights(graph, xla)
    assert graph.generator.fused and graph.discriminator.fused
    rng = np.random.default_rng(0)
    batch = tuple(tf.constant(rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")) for _ in range(2))
    before = [w.numpy() for w in xla.generator.trainable_weights + xla.discriminator.trainable_weights]
    graph_logs = tf.function(graph.train_step)(batch)
    xla_logs = tf.function(xla.train_step, jit_compile=True)(batch)
    for name, value in xla_logs.items():
        assert value.dtype == tf.float32, name  # the losses stay float32 under mixed precision
        assert np.isfinite(value.numpy()).all(), name
    # D's loss is computed before any update, from identical weights and data.
    np.testing.assert_allclose(xla_logs["d_loss"].numpy(), graph_logs["d_loss"].numpy(), rtol=rtol)
    # The compiled step updated every network's weights, which stay float32.
    after = xla.generator.trainable_weights + xla.discriminator.trainable_weights
    assert all(w.dtype == "float32" for w in after)
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after))
