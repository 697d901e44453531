"""Serving a generator: as a TensorFlow SavedModel, and as a fast in-process forward.

The serving signature ``serving_default`` takes every input the model card
declares, by name (``z`` ``(n, z_dim) float32``, then e.g. ``label``
``(n, classes)`` or ``c`` ``(n, k)``), and returns ``images`` ``(n, H, W, C)
uint8``, so a client (TF Serving, ``tf.saved_model.load``) needs no knowledge of
the [-1, 1] convention. :func:`compile_generator` is the same mapping in process,
traced once, for the web studio.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.atomic import atomic_path


def to_uint8(images: tf.Tensor) -> tf.Tensor:
    """Generator output in [-1, 1] -> ``uint8`` in [0, 255] (in the graph)."""
    x = tf.cast(images, tf.float32)
    return tf.cast(tf.clip_by_value(tf.round((x + 1.0) * 127.5), 0, 255), tf.uint8)


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
        return {"images": to_uint8(generator(inputs["z"] if len(names) == 1 else inputs, training=False))}

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


def serving_copy(generator, precision: str = "float32"):
    """A copy of ``generator`` for fast inference, same weights: transposed and strided
    convolutions become model/nets/layers.py's drop-in matmul-route layers, and with
    ``precision`` ``mixed_bfloat16`` every layer but the output one computes in
    bfloat16 (measured 2x faster on CPUs with AVX-512 BF16; pixels within a few levels
    of float32, most identical). ``float32`` with no small strided layers returns ``generator`` itself."""
    from model.nets.layers import MatmulConv2D, MatmulConv2DTranspose

    swap = {keras.layers.Conv2DTranspose: MatmulConv2DTranspose, keras.layers.Conv2D: MatmulConv2D}
    outputs = {id(t._keras_history[0]) for t in generator.outputs}

    def clone(layer):
        config = layer.get_config()
        if precision != "float32" and id(layer) not in outputs:
            config["dtype"] = precision
        return swap.get(type(layer), type(layer)).from_config(config)

    if precision == "float32" and not any(type(layer) in swap for layer in generator.layers):
        return generator
    copy = keras.models.clone_model(generator, clone_function=clone)
    copy.set_weights(generator.get_weights())
    return copy


def compile_generator(generator, precision: str = "float32"):
    """A fast ``forward(inputs) -> (n, H, W, C) uint8`` for serving: one traced TensorFlow
    graph for any batch size (no per-call Keras overhead) over :func:`serving_copy`,
    the [-1, 1] -> uint8 conversion inside it. ``inputs`` is ``{name: (n, size) float32}``
    with every input of the generator (a z-only generator takes ``{"z": z}``)."""
    names = [t.name for t in generator.inputs]
    fast = serving_copy(generator, precision)
    spec = {name: tf.TensorSpec((None, t.shape[-1]), tf.float32, name=name)
            for name, t in zip(names, generator.inputs, strict=True)}

    @tf.function(input_signature=[spec])
    def forward(inputs):
        return to_uint8(fast(inputs[names[0]] if len(names) == 1 else inputs, training=False))

    def call(inputs: dict):
        return forward({k: np.asarray(inputs[k], np.float32) for k in names}).numpy()

    call.input_names, call.generator, call.precision = names, generator, precision
    return call
