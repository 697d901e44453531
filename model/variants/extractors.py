"""EGAN's extractors F: what an image's attribute measures, in [0, 1].

From the EGAN thesis ("A Study of Generative Adversarial Networks and Possible
Extensions of GANs"): the generator takes attribute codes c and a loss ties
F(G(z, c)) to c. Each function here takes ``(n, H, W, C)`` float32 images in
[-1, 1] (the generator's output; C = 3 RGB or 1 gray) and returns ``(n,)``
float32 values in [0, 1]; all are differentiable, so the generator learns
through them. The same formulas, on ``uint8`` images, are the independent
measurer of bench/egan.py (:func:`measure`).

* ``brightness``: the sum over the image of Rec. 709 luma
  0.2126 R + 0.7152 G + 0.0722 B (channels 0-255), divided by 255 * W * H:
  the mean luma in [0, 1].
* ``sharpness``: the gradient of the grayscale (luma) image as
  ``numpy.gradient`` computes it (central differences inside, one-sided at the
  borders), its magnitude summed over the image and divided by
  W * H * (the image's largest magnitude): the mean magnitude relative to the
  strongest edge, in [0, 1] (0 for a flat image). With ``norm = p > 0`` the
  largest magnitude is replaced by the magnitudes' p-norm (mean of m^p)^(1/p),
  a smooth stand-in for the maximum for training (EGAN's ``sharpness_norm``):
  the maximum's gradient reaches one pixel only, the p-norm's the strongest edges
  in proportion to m^(p-1). On 2,684 real CelebA faces the p = 12 value ranks
  like the formula (Spearman 0.97; docs/egan.md).
* a CelebA attribute (``Male``, ``Mouth_Slightly_Open``, ...): the probability
  of the project's attribute classifier (model/apps/attributes.py).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from model.config import EXTRACTOR_FORMULAS

#: Rec. 709 luma weights of R, G, B.
LUMA = (0.2126, 0.7152, 0.0722)
#: The extractors computed by formula; any other name is a CelebA attribute.
FORMULAS = EXTRACTOR_FORMULAS
#: Avoids 0 / 0 for a flat image in sharpness.
EPS = 1e-6


def luma(images: tf.Tensor) -> tf.Tensor:
    """``(n, H, W, C)`` in [-1, 1] -> ``(n, H, W)`` luma in [0, 1] (gray images: the channel)."""
    x = (tf.cast(images, tf.float32) + 1.0) * 0.5
    if x.shape[-1] == 1:
        return x[..., 0]
    return tf.tensordot(x, tf.constant(LUMA, tf.float32), axes=[[3], [0]])


def brightness(images: tf.Tensor) -> tf.Tensor:
    """``(n,)`` mean Rec. 709 luma in [0, 1] (see the module docstring)."""
    return tf.reduce_mean(luma(images), axis=[1, 2])


def np_gradient(f: tf.Tensor, axis: int) -> tf.Tensor:
    """``numpy.gradient(f, axis=axis)`` with unit spacing: central differences inside,
    one-sided differences at both borders (the axis needs at least 2 samples)."""
    n = f.shape[axis]
    take = lambda a, b: tf.gather(f, tf.range(a, b), axis=axis)  # noqa: E731
    first = take(1, 2) - take(0, 1)
    last = take(n - 1, n) - take(n - 2, n - 1)
    inner = (take(2, n) - take(0, n - 2)) * 0.5
    return tf.concat([first, inner, last], axis=axis)


def sharpness(images: tf.Tensor, norm: float = 0.0) -> tf.Tensor:
    """``(n,)`` summed gradient magnitude of the luma image over W * H * its largest
    magnitude (``norm`` 0) or its magnitudes' ``norm``-norm, in [0, 1] (see the module
    docstring)."""
    gray = luma(images)
    # sqrt(x + eps^2) - eps: the magnitude, with a finite gradient where it is 0
    magnitude = tf.sqrt(tf.square(np_gradient(gray, 1)) + tf.square(np_gradient(gray, 2)) + EPS ** 2) - EPS
    h, w = gray.shape[1], gray.shape[2]
    strongest = tf.reduce_max(magnitude, axis=[1, 2])
    if norm:
        # the p-norm is homogeneous of degree 1, so scaling by a constant (the maximum, held
        # fixed) keeps its value and gradient while m^p stays clear of float32's underflow
        scale = tf.stop_gradient(strongest)[:, None, None] + EPS
        strongest = scale[:, 0, 0] * tf.reduce_mean((magnitude / scale) ** norm, axis=[1, 2]) ** (1.0 / norm)
    return tf.reduce_sum(magnitude, axis=[1, 2]) / (h * w * strongest + EPS)


def formula(name: str, sharpness_norm: float = 0.0):
    """The extractor function of ``name`` (``brightness`` or ``sharpness``; the latter with
    ``sharpness_norm``, see :func:`sharpness`)."""
    if name == "sharpness" and sharpness_norm:
        return lambda images: sharpness(images, sharpness_norm)
    return {"brightness": brightness, "sharpness": sharpness}[name]


def measure(name: str, images: np.ndarray, batch_size: int = 256, sharpness_norm: float = 0.0) -> np.ndarray:
    """``(n,) float64`` values of a formula extractor on ``uint8`` images ``(n, H, W, C)``
    (sharpness with ``sharpness_norm``, see :func:`sharpness`)."""
    fn = formula(name, sharpness_norm)
    out = [fn(tf.constant(images[i:i + batch_size], tf.float32) * (1 / 127.5) - 1.0).numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float64)
