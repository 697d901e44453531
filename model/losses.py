"""GAN losses on discriminator logits (float32 even under mixed precision)."""
from __future__ import annotations

import tensorflow as tf


def _bce(value: float, logits: tf.Tensor) -> tf.Tensor:
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), value), logits=logits))


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """The DCGAN discriminator loss: BCE(real -> 1) + BCE(fake -> 0)."""
    return _bce(1.0, real_logits) + _bce(0.0, fake_logits)


def generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """The non-saturating generator loss of Goodfellow et al.: BCE(fake -> 1)."""
    return _bce(1.0, fake_logits)


def discriminator_stats(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> dict[str, tf.Tensor]:
    """Mean D(x), mean D(G(z)), and D's accuracy on the real and the fake batch."""
    real = tf.cast(real_logits, tf.float32)
    fake = tf.cast(fake_logits, tf.float32)
    return {"d_real": tf.reduce_mean(tf.sigmoid(real)), "d_fake": tf.reduce_mean(tf.sigmoid(fake)),
            "d_acc_real": tf.reduce_mean(tf.cast(real > 0, tf.float32)),
            "d_acc_fake": tf.reduce_mean(tf.cast(fake < 0, tf.float32))}
