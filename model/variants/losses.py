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


# -- Wasserstein critics (WGAN, WGAN-GP) ----------------------------------------------------------

def critic_loss(real_scores: tf.Tensor, fake_scores: tf.Tensor, global_batch: int) -> tf.Tensor:
    """The critic's loss E[f(G(z))] - E[f(x)]: minus the Wasserstein estimate (Arjovsky et al.)."""
    return _mean(tf.cast(fake_scores, tf.float32), global_batch) - _mean(tf.cast(real_scores, tf.float32),
                                                                         global_batch)


def critic_generator_loss(fake_scores: tf.Tensor, global_batch: int) -> tf.Tensor:
    """The generator's loss -E[f(G(z))]."""
    return -_mean(tf.cast(fake_scores, tf.float32), global_batch)


def critic_stats(real_scores: tf.Tensor, fake_scores: tf.Tensor, global_batch: int) -> dict[str, tf.Tensor]:
    """Mean critic score on real (``d_real``) and fake (``d_fake``) images, the Wasserstein
    estimate ``w_dist`` = E[f(x)] - E[f(G(z))], and an accuracy for a critic that has no
    decision threshold: the scores are split at the midpoint between this batch's mean
    real and mean fake score; ``d_acc_real`` is the share of real scores above it,
    ``d_acc_fake`` the share of fake scores below it (0.5 each when the critic cannot
    tell them apart; under several replicas each replica takes its own midpoint)."""
    real = tf.reshape(tf.cast(real_scores, tf.float32), [-1])
    fake = tf.reshape(tf.cast(fake_scores, tf.float32), [-1])
    threshold = tf.stop_gradient(0.5 * (tf.reduce_mean(real) + tf.reduce_mean(fake)))
    d_real, d_fake = _mean(real, global_batch), _mean(fake, global_batch)
    return {"d_real": d_real, "d_fake": d_fake, "w_dist": d_real - d_fake,
            "d_acc_real": _mean(tf.cast(real > threshold, tf.float32), global_batch),
            "d_acc_fake": _mean(tf.cast(fake < threshold, tf.float32), global_batch)}


def gradient_penalty(critic, real: tf.Tensor, fake: tf.Tensor, fraction: tf.Tensor, global_batch: int,
                     target: float = 1.0) -> tf.Tensor:
    """WGAN-GP's penalty E[(||grad_x f(x_hat)||_2 - target)^2] (Gulrajani et al. 2017).

    ``x_hat = fraction * real + (1 - fraction) * fake`` with ONE ``fraction`` per example,
    ``(n,)`` in [0, 1] (a fraction per pixel would not sample the straight lines between
    pairs the paper's argument is about), and the norm taken over each example's whole
    gradient (every pixel and channel). ``critic(x)`` returns ``(n, 1)`` scores."""
    real = tf.cast(real, tf.float32)
    eps = tf.reshape(tf.cast(fraction, tf.float32), [-1, 1, 1, 1])
    x_hat = eps * real + (1.0 - eps) * tf.cast(fake, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        scores = tf.cast(critic(x_hat), tf.float32)
    grad = tf.cast(tape.gradient(scores, x_hat), tf.float32)
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]) + 1e-12)
    return _mean(tf.square(norm - target), global_batch)


# -- auxiliary heads (ACGAN, InfoGAN) -------------------------------------------------------------

def class_loss(labels_onehot: tf.Tensor, logits: tf.Tensor, global_batch: int) -> tf.Tensor:
    """Softmax cross-entropy of class ``logits`` against one-hot ``labels_onehot``."""
    per_example = tf.nn.softmax_cross_entropy_with_logits(tf.cast(labels_onehot, tf.float32),
                                                          tf.cast(logits, tf.float32))
    return _mean(per_example, global_batch)


def class_accuracy(labels_onehot: tf.Tensor, logits: tf.Tensor, global_batch: int) -> tf.Tensor:
    """Share of examples whose arg-max logit is the labelled class."""
    hit = tf.equal(tf.argmax(logits, -1), tf.argmax(labels_onehot, -1))
    return _mean(tf.cast(hit, tf.float32), global_batch)


def gaussian_nll(codes: tf.Tensor, outputs: tf.Tensor, global_batch: int, fixed_std: bool = True) -> tf.Tensor:
    """Negative log-likelihood of continuous ``codes`` ``(n, k)`` under a factored Gaussian
    Q(c|x), constants dropped: with ``fixed_std`` ``outputs`` are the means (unit
    variance, as the InfoGAN reference code): sum 0.5 (c - mu)^2; else ``outputs`` are
    ``(n, 2k)`` means and log standard deviations: sum log sigma + 0.5 ((c - mu) / sigma)^2."""
    codes, outputs = tf.cast(codes, tf.float32), tf.cast(outputs, tf.float32)
    if fixed_std:
        per_example = tf.reduce_sum(0.5 * tf.square(codes - outputs), -1)
    else:
        mu, log_std = tf.split(outputs, 2, axis=-1)
        per_example = tf.reduce_sum(log_std + 0.5 * tf.square((codes - mu) * tf.exp(-log_std)), -1)
    return _mean(per_example, global_batch)


def mode_seeking(images: tf.Tensor, z: tf.Tensor, global_batch: int, eps: float = 1e-5) -> tf.Tensor:
    """The mode-seeking term of Mao et al. (2019, MSGAN) for the generator to minimise:
    1 / (mean |x_a - x_b| / mean |z_a - z_b| + eps) over the pairs of rows (i, i + n/2) of
    ``images`` ``(n, h, w, c)`` and their noise ``z`` ``(n, d)``: large when different z
    draw the same image, so G keeps its faces apart. Weighted by this replica's share of
    ``global_batch``, so the replicas' values sum to one batch's term; 0 for a replica with one row
    (no pair)."""
    n = tf.shape(images)[0]
    h = n // 2
    x = tf.cast(images, tf.float32)
    z = tf.cast(z, tf.float32)

    def mean_gap(a):  # mean |a_i - a_(i + h)|; sum over size so that no pair gives 0, not NaN
        gap = tf.abs(a[:h] - a[h:2 * h])
        return tf.reduce_sum(gap) / tf.maximum(tf.cast(tf.size(gap), tf.float32), 1.0)

    ratio = mean_gap(x) / tf.maximum(mean_gap(z), eps)
    return tf.cast(h > 0, tf.float32) * tf.cast(n, tf.float32) / global_batch / (ratio + eps)
