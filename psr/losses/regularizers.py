"""Discriminator regularisers: the R1 gradient penalty of SinCUT.

SinCUT (upstream CUT `sincut_model.py`, spec §4.7) adds, at every
discriminator step, a penalty on the gradient of D at the real target crops:

    L_R1 = lambda_R1 * 0.5 * mean_b sum_pixels (d sum_b' D(y_b') / d y_b)^2

Note the 0.5: upstream multiplies by `lambda_R1 * 0.5` (λ_R1 = 1, so the
effective coefficient is 0.5), a factor the paper's supplement does not show.
`r1_penalty` returns the per-sample sum only; the trainer applies
`0.5 * lambda_R1 * mean` (global-batch mean under `tf.distribute`).

The gradient of the penalty with respect to D's weights is a second-order
derivative, taken with nested `tf.GradientTape`s. TensorFlow-specific on
purpose: Keras 3 has no backend-neutral nested-gradient API, and the psr
trainers run on the TensorFlow backend. Second derivatives through
`tf.nn.moments`-based norms (GroupNormalization, BatchNormalization) are
wrong in TF (keras_tf_notes §4), so D must not contain such layers; the
StyleGAN2 discriminator has none.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def r1_penalty(discriminator: keras.Model, real_images, training: bool = True):
    """R1 penalty per sample: squared norm of the gradient of D's score at the real images.

    Call it inside the discriminator's `GradientTape`: the inner tape that
    computes the input gradient is recorded by the outer one, so the returned
    penalty can be differentiated with respect to D's weights.

    Formula:
    ```
    g_b = d (sum_b' sum_j D(y)_{b', j}) / d y_b           (shape of one image)
    penalty_b = sum_{h, w, c} g_b[h, w, c]^2
    ```
    Summing D's outputs over the batch first gives the per-sample gradient as
    long as D treats the samples independently (no batch statistics). The
    trainer's loss term is `0.5 * lambda_R1 * mean_b(penalty_b)` (upstream's
    extra 0.5, spec §4.7).

    Args:
        discriminator: callable `D(images, training=...)` returning scores.
        real_images: real target images `[B, H, W, C]`.
        training: forwarded to the discriminator.

    Returns:
        `(penalty, real_scores)`: `penalty` `[B]` in the images' dtype, and
        D's scores for `real_images` (reusable for the GAN loss, saving a
        second forward pass).
    """
    real_images = tf.convert_to_tensor(real_images)
    with tf.GradientTape() as input_tape:
        input_tape.watch(real_images)
        real_scores = discriminator(real_images, training=training)
    # A non-scalar target: the tape differentiates the sum of its entries.
    # A D that ignores its input has a zero gradient, not None.
    gradients = input_tape.gradient(
        real_scores, real_images, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    batch = ops.shape(gradients)[0]
    penalty = ops.sum(ops.square(ops.reshape(gradients, (batch, -1))), axis=1)
    return penalty, real_scores
