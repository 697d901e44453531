"""GAN losses on discriminator logits (float32 even under mixed precision).

Each loss is averaged over the *global* batch (``tf.nn.compute_average_loss``),
so summing the per-replica values under a distribution strategy gives the
same number as one device would.
"""
from __future__ import annotations

import tensorflow as tf


def _mean(per_example: tf.Tensor, global_batch: int) -> tf.Tensor:
    return tf.nn.compute_average_loss(tf.reshape(per_example, [-1]), global_batch_size=global_batch)


def _bce(value: float, logits: tf.Tensor, global_batch: int) -> tf.Tensor:
    logits = tf.cast(logits, tf.float32)
    per_example = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), value), logits=logits)
    return _mean(per_example, global_batch)


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor, global_batch: int) -> tf.Tensor:
    """The DCGAN discriminator loss: BCE(real -> 1) + BCE(fake -> 0)."""
    return _bce(1.0, real_logits, global_batch) + _bce(0.0, fake_logits, global_batch)


def generator_loss(fake_logits: tf.Tensor, global_batch: int) -> tf.Tensor:
    """The non-saturating generator loss of Goodfellow et al.: BCE(fake -> 1)."""
    return _bce(1.0, fake_logits, global_batch)


def discriminator_stats(real_logits: tf.Tensor, fake_logits: tf.Tensor, global_batch: int) -> dict[str, tf.Tensor]:
    """Mean D(x), mean D(G(z)), and D's accuracy on the real and the fake batch."""
    real = tf.cast(real_logits, tf.float32)
    fake = tf.cast(fake_logits, tf.float32)
    return {"d_real": _mean(tf.sigmoid(real), global_batch), "d_fake": _mean(tf.sigmoid(fake), global_batch),
            "d_acc_real": _mean(tf.cast(real > 0, tf.float32), global_batch),
            "d_acc_fake": _mean(tf.cast(fake < 0, tf.float32), global_batch)}
