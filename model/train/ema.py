"""An exponential moving average of the generator's weights (Yazici et al. 2019, "The
Unusual Effectiveness of Averaging in GAN Training").

After each training step, every trainable weight ``w`` of the generator moves its
average ``a`` by ``a <- d a + (1 - d) w`` with ``d = min(decay, (1 + t) / (10 + t))``
at the ``t``-th update (TensorFlow's ``ExponentialMovingAverage`` warm-up with
``num_updates``): the first averages follow the weights closely, so the random
initialisation does not dominate them. Non-trainable weights (batch-norm moving
statistics) are copied, not averaged, and so are the trainable weights named in
``raw`` (a variant's part that should follow its last step, e.g. EGAN's blur mix with
``ema_raw_mix``). The averages are ordinary variables, kept in the run's checkpoints
and restored on resume.

Copied statistics are the raw generator's: they normalise features the averaged weights do
not compute. :func:`recompute_batch_norm` replaces them by the average's own (SWA's
``update_bn``, BigGAN's standing statistics; ``TrainConfig.ema_bn_batches``).
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf


class WeightAverage(tf.Module):
    """The moving averages of ``model.weights`` (same order, float32)."""

    def __init__(self, model, decay: float, raw=(), name: str = "ema"):
        """``raw``: variables of ``model`` copied at each update rather than averaged."""
        super().__init__(name=name)
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        raw = {id(v) for v in raw}
        if not raw <= {id(w) for w in model.weights}:
            raise ValueError("WeightAverage raw names variables the model does not hold")
        self._averaged = [id(w) not in raw and any(w is t for t in model.trainable_weights)
                          for w in model.weights]
        self.averages = [tf.Variable(tf.cast(w, tf.float32), trainable=False, name=f"average_{i}")
                         for i, w in enumerate(model.weights)]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")

    def rate(self) -> tf.Tensor:
        """The decay ``d`` the next update uses."""
        t = tf.cast(self.updates + 1, tf.float32)
        return tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + t) / (10.0 + t))

    def update(self, model) -> None:
        """Move the averages toward ``model``'s current weights (call after a generator step)."""
        d = self.rate()
        for average, weight, averaged in zip(self.averages, model.weights, self._averaged):
            weight = tf.cast(weight, tf.float32)
            average.assign(d * average + (1.0 - d) * weight if averaged else weight)
        self.updates.assign_add(1)

    def values(self) -> list:
        """The averaged weights as numpy arrays, in ``model.get_weights()`` order."""
        return [a.numpy() for a in self.averages]


def recompute_batch_norm(generator: keras.Model, draw: Callable[[], Any], batches: int) -> None:
    """Set the moving mean and variance of every batch-norm layer of ``generator`` to the mean
    of its batch statistics over ``batches`` calls of ``generator(draw(), training=True)``
    (``draw()``: one batch of generator inputs). No other weight changes. Eager calls: the
    layers' momentum is changed between batches (k / (k + 1) makes the moving statistics the
    running mean over the batches), then restored."""
    norms = [layer for layer in _layers(generator) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms or batches < 1:
        return
    kept = [layer.momentum for layer in norms]
    try:
        for k in range(batches):
            for layer in norms:
                layer.momentum = k / (k + 1.0)  # 0 at the first batch: the old statistics are dropped
            generator(draw(), training=True)
    finally:
        for layer, momentum in zip(norms, kept):
            layer.momentum = momentum


def _layers(model):
    """Every layer of ``model``, those of nested models included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)
