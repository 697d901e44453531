"""Exporting a generator as a TensorFlow SavedModel for serving.

The serving signature ``serving_default`` takes every input the model card
declares, by name (``z`` ``(n, z_dim) float32``, then e.g. ``label``
``(n, classes)`` or ``c`` ``(n, k)``), and returns ``images`` ``(n, H, W, C)
uint8``, so a client (TF Serving, the web studio, ``tf.saved_model.load``)
needs no knowledge of the [-1, 1] convention.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from pipeline.atomic import atomic_path


def export_saved_model(generator: keras.Model, path: str | os.PathLike, card=None) -> None:
    """Write ``generator`` as a SavedModel at ``path`` (atomically: temp folder, rename).

    The signature's inputs are the ``card``'s (a :class:`model.card.ModelCard`); without
    a card, the generator's single ``z`` input."""
    path = Path(path)
    if card is not None:
        names, sizes = [s.name for s in card.inputs], [s.size for s in card.inputs]
    else:
        names, sizes = ["z"], [generator.input_shape[-1]]

    def serve(*args):
        inputs = dict(zip(names, args))
        images = generator(inputs["z"] if len(names) == 1 else inputs, training=False)
        return {"images": tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0, 255), tf.uint8)}

    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec((None, k), tf.float32, name=name)
                                          for name, k in zip(names, sizes)])
    with atomic_path(path) as tmp:
        archive.write_out(str(tmp), verbose=False)


def load_serving(path: str | os.PathLike):
    """The ``serving_default`` function of a SavedModel written by :func:`export_saved_model`."""
    return tf.saved_model.load(str(path)).signatures["serving_default"]
