"""The training input pipeline over a records version folder (pipeline/records.py).

files -> shuffled file order -> interleaved reads (parallel) -> shuffle
buffer -> repeat -> batch -> parse + decode + dequantise to [-1, 1], batched
and parallel -> prefetch. With ``deterministic=True`` (the default) the order
depends only on ``seed``, so a resumed run can skip the batches it used;
``deterministic=False`` lets parallel stages hand out whatever is ready first.

The parser is derived from the example layouts declared in
``pipeline.records.LAYOUTS`` ("faces" and "labeled"); the layout and the image
shape ``(S, S, C)`` (C = 1 for MNIST) come from the folder's manifest.
"""
from __future__ import annotations

import tensorflow as tf

from pipeline.records import ATTRIBUTE_NAMES, LAYOUTS, Feature, feature_shape, layout_of, read_info, split_files

#: What :func:`training_dataset` can yield.
TRAINING_FEATURES = ("image", "label", "attributes")


def _tf_feature(feature: Feature, image_shape) -> tf.io.FixedLenFeature:
    if feature.storage == "bytes":
        return tf.io.FixedLenFeature([], tf.string)
    dtype = tf.int64 if feature.storage == "int64" else tf.float32
    return tf.io.FixedLenFeature(feature_shape(feature, image_shape), dtype)


def parse_spec(layout: str = "faces", image_shape=(64, 64, 3), names=None) -> dict[str, tf.io.FixedLenFeature]:
    """How each stored feature of ``layout`` (or only ``names``) is parsed."""
    spec = LAYOUTS[layout]
    return {name: _tf_feature(spec[name], image_shape) for name in (names or spec)}


def record_files(folder, split: str = "train") -> list[str]:
    """The record files of ``split`` listed in the folder's manifest, in order."""
    return split_files(folder, split)


def dequantize(images: tf.Tensor) -> tf.Tensor:
    """uint8 pixels -> float32 in [-1, 1]."""
    return tf.cast(images, tf.float32) * (1 / 127.5) - 1.0


def decode_images(encoded: tf.Tensor, size: int, image_format: str = "raw", channels: int = 3) -> tf.Tensor:
    """A batch of stored image strings -> ``(n, size, size, channels) uint8``."""
    if image_format == "raw":
        return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), [-1, size, size, channels])
    decoded = tf.map_fn(lambda png: tf.io.decode_png(png, channels=channels), encoded,
                        fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))
    return tf.ensure_shape(decoded, [None, size, size, channels])


def parse_images(serialized: tf.Tensor, size: int, image_format: str = "raw", channels: int = 3) -> tf.Tensor:
    """A batch of serialized examples -> ``(n, size, size, channels)`` float32 in [-1, 1]."""
    parsed = tf.io.parse_example(serialized, parse_spec(names=("image",)))
    return dequantize(decode_images(parsed["image"], size, image_format, channels))


def parse_examples(serialized: tf.Tensor, size: int, image_format: str = "raw", layout: str = "faces",
                   channels: int = 3) -> dict[str, tf.Tensor]:
    """A batch of serialized examples -> every feature of ``layout``: ``image``
    ``(n, S, S, C)`` uint8, strings for text, int64 scalars, tensors in their
    declared dtype and shape. "faces": ``key``, ``source``, ``face``,
    ``identity``, ``attributes`` ``(n, 40)`` int8 (-1 unknown; names:
    pipeline.records.ATTRIBUTE_NAMES), ``landmarks`` ``(n, 68, 2)``,
    ``transform`` ``(n, 2, 3)``; "labeled": ``key``, ``label``."""
    image_shape = (size, size, channels)
    parsed = tf.io.parse_example(serialized, parse_spec(layout, image_shape))
    for name, feature in LAYOUTS[layout].items():
        if feature.tfds == "image":
            parsed[name] = decode_images(parsed[name], size, image_format, channels)
        elif feature.storage == "bytes" and feature.tfds == "tensor":
            parsed[name] = tf.reshape(tf.io.decode_raw(parsed[name], tf.as_dtype(feature.dtype)),
                                      [-1, *feature_shape(feature, image_shape)])
    return parsed


def _records(folder, split: str, shuffle: int, seed: int, repeat: bool,
             deterministic: bool, cycle_length: int | None, first: int | None = None) -> tf.data.Dataset:
    files = record_files(folder, split)
    # tf.data's shuffle seeds pair the op seed with the global seed, which a training run
    # sets (weight init); fixing it here makes the order ``seed``'s alone, so a run reads the
    # same batches whether it is the first in its process or follows another run.
    tf.random.set_seed(seed)
    if first is not None:
        # A fixed subset: the split's first records in manifest order, whatever the seed, so
        # runs on the same share of the data see the same images (then shuffled by seed).
        ds = tf.data.TFRecordDataset(files).take(first)
        if shuffle:
            ds = ds.shuffle(min(shuffle, first), seed=seed, reshuffle_each_iteration=True)
        return ds.repeat() if repeat else ds
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


def _image_info(info: dict) -> tuple[int, str, int]:
    """``(size, image_format, channels)`` of a manifest."""
    shape = info["image_shape"]
    return shape[0], info.get("image_format", "raw"), shape[2] if len(shape) > 2 else 3


def image_dataset(folder, split: str = "train", batch_size: int = 64, shuffle: int = 10_000,
                  seed: int = 0, repeat: bool = True, drop_remainder: bool = True,
                  deterministic: bool = True, cycle_length: int | None = None) -> tf.data.Dataset:
    """Batches of images, ``(batch_size, S, S, C)`` float32 in [-1, 1].

    ``shuffle`` is the shuffle buffer (0: file order, no shuffling); the file
    order is shuffled too. ``cycle_length`` files are read at once (default:
    up to 16). The order depends only on ``seed`` when ``deterministic``.
    """
    size, image_format, channels = _image_info(read_info(folder))
    ds = _records(folder, split, shuffle, seed, repeat, deterministic, cycle_length)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda s: parse_images(s, size, image_format, channels), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))


def example_dataset(folder, split: str = "train", batch_size: int = 64, shuffle: int = 0,
                    seed: int = 0, repeat: bool = False, drop_remainder: bool = False,
                    deterministic: bool = True) -> tf.data.Dataset:
    """Batches of every feature (see :func:`parse_examples`); images stay uint8.
    By default in file order, once: what evaluation, attribute models and
    tests want."""
    info = read_info(folder)
    size, image_format, channels = _image_info(info)
    layout = layout_of(info)
    ds = _records(folder, split, shuffle, seed, repeat, deterministic, None if shuffle else 1)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda s: parse_examples(s, size, image_format, layout, channels),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))


def class_names(folder) -> list[str] | None:
    """The class names of a labeled records folder (label ``i`` is ``names[i]``); None for faces."""
    names = read_info(folder).get("class_names")
    return list(names) if names else None


def attribute_indices(attributes) -> list[int]:
    """Positions of CelebA attribute ``names`` in ATTRIBUTE_NAMES (``ValueError`` listing
    the valid names for an unknown one)."""
    if isinstance(attributes, str):
        attributes = [attributes]
    unknown = [a for a in attributes if a not in ATTRIBUTE_NAMES]
    if unknown or not attributes:
        raise ValueError(f"unknown attribute names {unknown or attributes!r}; valid names: "
                         f"{', '.join(ATTRIBUTE_NAMES)}")
    return [ATTRIBUTE_NAMES.index(a) for a in attributes]


def training_dataset(folder, split: str = "train", batch_size: int = 64, shuffle: int = 10_000,
                     seed: int = 0, features=("image",), attributes=None,
                     deterministic: bool = True, fraction: float = 1.0) -> tf.data.Dataset:
    """Training batches as dicts, repeated forever, whole batches only, in an
    order fixed by ``seed`` (with ``features=("image",)`` the very batches of
    :func:`image_dataset` with the same arguments). ``fraction`` < 1 reads only the
    split's first :func:`subset_size` records (the same ones for every seed).

    ``features`` picks from:

    - ``"image"``: ``(n, S, S, C)`` float32 in [-1, 1], C from the manifest (1 for MNIST);
    - ``"label"``: ``(n,)`` int64 class index (labeled records: MNIST, CIFAR-10;
      names: :func:`class_names`);
    - ``"attributes"``: ``(n, k)`` float32 in {0, 1}, the CelebA attributes named
      in ``attributes`` (default: all 40, in ATTRIBUTE_NAMES order). An
      attribute the source does not know (stored as -1) reads as 0: "not known
      to be present" (a partial CelebA copy, or a source without attributes,
      gives all zeros).

    Raises a one-line ``ValueError`` for an unknown feature or attribute name,
    and for a feature the records do not have (naming the folder).
    """
    features = (features,) if isinstance(features, str) else tuple(features)
    unknown = [f for f in features if f not in TRAINING_FEATURES]
    if unknown or not features:
        raise ValueError(f"training_dataset features {features!r}: choose from {TRAINING_FEATURES}")
    if attributes is not None and "attributes" not in features:
        raise ValueError(f"attributes={list(attributes)!r} given but 'attributes' is not in features "
                         f"{features!r}; add it")
    info = read_info(folder)
    layout = layout_of(info)
    missing = [f for f in features if f not in LAYOUTS[layout]]
    if missing:
        hint = {"label": "labels come with MNIST and CIFAR-10 records (BuildTFRecords --dataset mnist)",
                "attributes": "attributes come with face records (e.g. --dataset celeba)"}[missing[0]]
        raise ValueError(f"records {folder} have no {missing[0]!r} (layout {layout!r}: "
                         f"{', '.join(LAYOUTS[layout])}); {hint}")
    columns = attribute_indices(ATTRIBUTE_NAMES if attributes is None else attributes) \
        if "attributes" in features else []
    size, image_format, channels = _image_info(info)
    image_shape = (size, size, channels)
    spec = parse_spec(layout, image_shape, features)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        out = {}
        if "image" in features:
            out["image"] = dequantize(decode_images(parsed["image"], size, image_format, channels))
        if "label" in features:
            out["label"] = parsed["label"]
        if "attributes" in features:
            stored = tf.reshape(tf.io.decode_raw(parsed["attributes"], tf.int8), [-1, len(ATTRIBUTE_NAMES)])
            out["attributes"] = tf.cast(tf.equal(tf.gather(stored, columns, axis=1), 1), tf.float32)
        return out

    first = subset_size(info, split, fraction) if fraction < 1 else None
    ds = _records(folder, split, shuffle, seed, True, deterministic, None, first)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))


def subset_size(info: dict, split: str, fraction: float) -> int:
    """How many records ``fraction`` of ``split`` is (at least 1), from a manifest ``info``."""
    return max(1, round(fraction * info["splits"][split]["num_examples"]))
