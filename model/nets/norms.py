"""Normalisation layers of the networks: batch norm (Torch's defaults, the DCGAN reference's
scales), layer norm, or none, chosen by name (``TrainConfig.norm``)."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from model.nets.layers import FusedBatchNormalization

NORMS = ("batch", "layer", "none")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"discriminator norm must be one of {NORMS}, got {norm!r}")
    return norm


def batch_norm(fast: bool, momentum: float = 0.9, epsilon: float = 1e-5, gamma_std: float = 0.02,
               name: str | None = None) -> layers.BatchNormalization:
    """Batch norm (the fused one of model/nets/layers.py when ``fast``). The defaults, momentum 0.9
    and epsilon 1e-5, are Torch's (0.1 update rate), scales ~ N(1, ``gamma_std``) as the DCGAN
    reference code (``gamma_std=0``: ones, Keras' default).

    Made in the scope of a strategy with several replicas, it normalises over the global
    batch (``synchronized``: the statistics are summed over the replicas), as one device does
    (model/train/distribute.py)."""
    cls = FusedBatchNormalization if fast else layers.BatchNormalization
    gamma = keras.initializers.RandomNormal(1.0, gamma_std) if gamma_std else "ones"
    synchronized = tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1
    return cls(momentum=momentum, epsilon=epsilon, gamma_initializer=gamma, name=name, synchronized=synchronized)


def normalization(norm: str, fast: bool, axis=-1, momentum: float = 0.9, epsilon: float = 1e-5, gamma_std=0.02,
                  name: str | None = None):
    """A normalisation layer of kind ``norm``, or None for ``"none"``. Batch norm over the
    last axis with Torch's momentum/epsilon and N(1, ``gamma_std``) scales by default (the
    DCGAN reference; ``gamma_std=0`` for ones); layer norm over ``axis`` (e.g. [1, 2, 3]: the
    whole feature map of each example, as the WGAN-GP reference critic)."""
    check_norm(norm)
    if norm == "batch":
        return batch_norm(fast, momentum=momentum, epsilon=epsilon, gamma_std=gamma_std, name=name)
    if norm == "layer":
        return layers.LayerNormalization(axis=axis, name=name)
    return None


def apply_norm(x, norm: str, fast: bool, **kw):
    """``x`` through :func:`normalization` (unchanged for ``"none"``)."""
    layer = normalization(norm, fast, **kw)
    return x if layer is None else layer(x)
