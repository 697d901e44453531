"""The training input pipeline over the TFRecord shards of pipeline/records.py."""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from pipeline.records import read_info


def record_files(folder, split: str = "train") -> list[str]:
    """The shard files of ``split`` listed in the folder's ``dataset_info.json``."""
    info = read_info(folder)
    if split not in info["splits"]:
        raise ValueError(f"split {split!r} not in {folder} (has {sorted(info['splits'])})")
    pattern = info["splits"][split]["filepattern"]
    files = sorted(str(p) for p in Path(folder).glob(pattern))
    if len(files) != len(info["splits"][split]["shard_lengths"]):
        raise FileNotFoundError(f"{folder}: expected {len(info['splits'][split]['shard_lengths'])} "
                                f"shards matching {pattern}, found {len(files)}")
    return files


def parse_images(serialized: tf.Tensor, size: int) -> tf.Tensor:
    """A batch of serialized examples -> ``(n, size, size, 3)`` float32 in [-1, 1]."""
    parsed = tf.io.parse_example(serialized, {"image": tf.io.FixedLenFeature([], tf.string)})
    pixels = tf.io.decode_raw(parsed["image"], tf.uint8)
    images = tf.reshape(pixels, [-1, size, size, 3])
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def image_dataset(folder, split: str = "train", batch_size: int = 64, shuffle: int = 10_000,
                  seed: int = 0, repeat: bool = True, drop_remainder: bool = True) -> tf.data.Dataset:
    """Batches of images in [-1, 1], shuffled deterministically from ``seed``.

    The order depends only on ``seed`` (not on thread timing), so a resumed
    run can skip to where it stopped.
    """
    info = read_info(folder)
    size = info["image_shape"][0]
    files = record_files(folder, split)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8))
    if shuffle:
        ds = ds.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda s: parse_images(s, size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
