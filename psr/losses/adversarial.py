"""Adversarial objectives, per sample.

Each function returns one value per image (`[B]`); the trainer reduces them
over the global batch so that the same code is right under `tf.distribute`.
Discriminator outputs may be patch maps (`[B, H, W, 1]`, PatchGAN) or `[B, 1]`.
"""

from __future__ import annotations

from keras import ops

from psr.registry import GAN_MODES


def _per_sample_mean(x):
    x = ops.cast(x, "float32")
    return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1)), axis=1)


def discriminator_loss(real_scores, fake_scores, mode: str = "lsgan"):
    """`(L_real, L_fake)` per sample; the official D loss is ½(L_real + L_fake).

    Formula:
        lsgan:          L_real = mean (D(y) − 1)²,     L_fake = mean D(ŷ)²
        nonsaturating:  L_real = mean softplus(−D(y)), L_fake = mean softplus(D(ŷ))
        hinge:          L_real = mean relu(1 − D(y)),  L_fake = mean relu(1 + D(ŷ))   (pix2pix / GAN Compression)
    """
    if mode == "lsgan":
        return _per_sample_mean(ops.square(real_scores - 1.0)), _per_sample_mean(ops.square(fake_scores))
    if mode == "nonsaturating":
        # softplus(−x) = −log σ(x): the logistic loss without a saturating sigmoid.
        return _per_sample_mean(ops.softplus(-real_scores)), _per_sample_mean(ops.softplus(fake_scores))
    if mode == "hinge":
        return _per_sample_mean(ops.relu(1.0 - real_scores)), _per_sample_mean(ops.relu(1.0 + fake_scores))
    raise ValueError(f"Unknown GAN mode. Expected one of {GAN_MODES}. Received: mode={mode!r}")


def generator_loss(fake_scores, mode: str = "lsgan"):
    """Per-sample generator loss.

    Formula:
        lsgan:          mean (D(ŷ) − 1)²
        nonsaturating:  mean softplus(−D(ŷ))
        hinge:          −mean D(ŷ)
    """
    if mode == "lsgan":
        return _per_sample_mean(ops.square(fake_scores - 1.0))
    if mode == "nonsaturating":
        return _per_sample_mean(ops.softplus(-fake_scores))
    if mode == "hinge":
        return -_per_sample_mean(fake_scores)
    raise ValueError(f"Unknown GAN mode. Expected one of {GAN_MODES}. Received: mode={mode!r}")


__all__ = ["GAN_MODES", "discriminator_loss", "generator_loss"]
