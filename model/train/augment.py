"""Differentiable augmentation of the discriminator's inputs (Zhao et al. 2020,
"Differentiable Augmentation for Data-Efficient GAN Training", DiffAugment).

The same policy is applied to real and generated batches before every
discriminator call, in the discriminator's and in the generator's update, so
the discriminator never sees un-augmented images and cannot memorise a small
training set, while gradients flow through the transform to the generator.
Every transform draws its parameters per image from the run's noise generator;
images keep their shape ``(n, H, W, C)``; the empty
border of a translation and the cut-out square are 0 (mid-gray), as in the
paper's code.

Transforms (the policy names them, comma separated):

* ``color``: brightness + U(-0.5, 0.5); saturation x U(0, 2) around the
  per-pixel channel mean; contrast x U(0.5, 1.5) around the image mean; then
  clipped to [-1, 1] (the paper's code leaves it unclipped; here the
  discriminator sees only values a real image can have);
* ``translation``: a shift of up to 1/8 of the side in x and y (integer pixels);
* ``cutout``: a square of half the side set to 0 at a random position.
"""
from __future__ import annotations

import tensorflow as tf

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def color(x: tf.Tensor, rng: tf.random.Generator) -> tf.Tensor:
    n = tf.shape(x)[0]
    x = x + (rng.uniform([n, 1, 1, 1]) - 0.5)
    mean = tf.reduce_mean(x, axis=3, keepdims=True)
    x = (x - mean) * (rng.uniform([n, 1, 1, 1]) * 2.0) + mean
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * (rng.uniform([n, 1, 1, 1]) + 0.5) + mean
    return tf.clip_by_value(x, -1.0, 1.0)


def translation(x: tf.Tensor, rng: tf.random.Generator, ratio: float = TRANSLATION_RATIO) -> tf.Tensor:
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = rng.uniform([n, 1], -sy, sy + 1, dtype=tf.int32)
    dx = rng.uniform([n, 1], -sx, sx + 1, dtype=tf.int32)
    padded = tf.pad(x, [[0, 0], [sy, sy], [sx, sx], [0, 0]])
    rows = tf.gather(padded, tf.range(h)[None, :] + sy - dy, axis=1, batch_dims=1)
    return tf.gather(rows, tf.range(w)[None, :] + sx - dx, axis=2, batch_dims=1)


def cutout(x: tf.Tensor, rng: tf.random.Generator, ratio: float = CUTOUT_RATIO) -> tf.Tensor:
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # the square's centre, as the paper's code draws it; the square is clipped at the border
    y0 = rng.uniform([n, 1], 0, h + (1 - ch % 2), dtype=tf.int32) - ch // 2
    x0 = rng.uniform([n, 1], 0, w + (1 - cw % 2), dtype=tf.int32) - cw // 2
    rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
    in_y = (rows >= y0) & (rows < y0 + ch)
    in_x = (cols >= x0) & (cols < x0 + cw)
    hole = in_y[:, :, None] & in_x[:, None, :]
    return x * tf.cast(~hole, x.dtype)[..., None]


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def augment(x: tf.Tensor, policy: tuple[str, ...], rng: tf.random.Generator, probability: float = 1.0) -> tf.Tensor:
    """``x`` ``(n, H, W, C)`` with the ``policy``'s transforms applied in order; each image is
    transformed with ``probability`` (else passed through unchanged)."""
    if not policy:
        return x
    out = tf.cast(x, tf.float32)
    for name in policy:
        out = _OPS[name](out, rng)
    if probability < 1.0:
        keep = rng.uniform([tf.shape(x)[0], 1, 1, 1]) < probability
        out = tf.where(keep, out, tf.cast(x, tf.float32))
    return tf.cast(out, x.dtype)
