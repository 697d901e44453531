"""The training input pipeline over a records version folder (pipeline/records.py).

files -> shuffled file order -> interleaved reads (parallel) -> shuffle
buffer -> repeat -> batch -> parse + decode + dequantise to [-1, 1], batched
and parallel -> prefetch. With ``deterministic=True`` (the default) the order
depends only on ``seed``, so a resumed run can skip the batches it used;
``deterministic=False`` lets parallel stages hand out whatever is ready first.
"""
from __future__ import annotations

import tensorflow as tf

from pipeline.records import ATTRIBUTE_NAMES, read_info, split_files

#: How each stored feature is parsed (see pipeline.records.FEATURES).
_SPEC = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "key": tf.io.FixedLenFeature([], tf.string),
    "source": tf.io.FixedLenFeature([], tf.string),
    "face": tf.io.FixedLenFeature([], tf.int64),
    "identity": tf.io.FixedLenFeature([], tf.int64),
    "attributes": tf.io.FixedLenFeature([], tf.string),
    "landmarks": tf.io.FixedLenFeature([68, 2], tf.float32),
    "transform": tf.io.FixedLenFeature([2, 3], tf.float32),
}


def record_files(folder, split: str = "train") -> list[str]:
    """The record files of ``split`` listed in the folder's manifest, in order."""
    return split_files(folder, split)


def dequantize(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels -> float32 in [-1, 1]."""
    return tf.cast(images, tf.float32) * (1 / 127.5) - 1.0


def decode_images(encoded: tf.Tensor, size: int, image_format: str = "raw") -> tf.Tensor:
    """A batch of stored image strings -> ``(n, size, size, 3) uint8``."""
    if image_format == "raw":
        return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), [-1, size, size, 3])
    decoded = tf.map_fn(lambda png: tf.io.decode_png(png, channels=3), encoded,
                        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return tf.ensure_shape(decoded, [None, size, size, 3])


def parse_images(serialized: tf.Tensor, size: int, image_format: str = "raw") -> tf.Tensor:
    """A batch of serialized examples -> ``(n, size, size, 3)`` float32 in [-1, 1]."""
    parsed = tf.io.parse_example(serialized, {"image": _SPEC["image"]})
    return dequantize(decode_images(parsed["image"], size, image_format))


def parse_examples(serialized: tf.Tensor, size: int, image_format: str = "raw") -> dict[str, tf.Tensor]:
    """A batch of serialized examples -> every feature: ``image`` (uint8),
    ``key``, ``source``, ``face``, ``identity``, ``attributes`` ``(n, 40)`` int8
    (-1 unknown; names: pipeline.records.ATTRIBUTE_NAMES), ``landmarks``
    ``(n, 68, 2)`` and ``transform`` ``(n, 2, 3)``."""
    parsed = tf.io.parse_example(serialized, _SPEC)
    parsed["image"] = decode_images(parsed["image"], size, image_format)
    parsed["attributes"] = tf.reshape(tf.io.decode_raw(parsed["attributes"], tf.int8),
                                      [-1, len(ATTRIBUTE_NAMES)])
    return parsed


def _records(folder, split: str, shuffle: int, seed: int, repeat: bool,
             deterministic: bool, cycle_length: int | None) -> tf.data.Dataset:
    files = record_files(folder, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length or min(len(files), 16),
                       block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shuffle:
        ds = ds.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    return ds.repeat() if repeat else ds


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    return options


def image_dataset(folder, split: str = "train", batch_size: int = 64, shuffle: int = 10_000,
                  seed: int = 0, repeat: bool = True, drop_remainder: bool = True,
                  deterministic: bool = True, cycle_length: int | None = None) -> tf.data.Dataset:
    """Batches of images, ``(batch_size, S, S, 3)`` float32 in [-1, 1].

    ``shuffle`` is the shuffle buffer (0: file order, no shuffling); the file
    order is shuffled too. ``cycle_length`` files are read at once (default:
    up to 16). The order depends only on ``seed`` when ``deterministic``.
    """
    info = read_info(folder)
    size, image_format = info["image_shape"][0], info.get("image_format", "raw")
    ds = _records(folder, split, shuffle, seed, repeat, deterministic, cycle_length)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda s: parse_images(s, size, image_format), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))


def example_dataset(folder, split: str = "train", batch_size: int = 64, shuffle: int = 0,
                    seed: int = 0, repeat: bool = False, drop_remainder: bool = False,
                    deterministic: bool = True) -> tf.data.Dataset:
    """Batches of every feature (see :func:`parse_examples`); images stay uint8.
    By default in file order, once: what evaluation, attribute models and
    tests want."""
    info = read_info(folder)
    size, image_format = info["image_shape"][0], info.get("image_format", "raw")
    ds = _records(folder, split, shuffle, seed, repeat, deterministic, None if shuffle else 1)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda s: parse_examples(s, size, image_format), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))
