"""Writing aligned faces as TFRecord shards named like TensorFlow Datasets.

Files are ``{name}-{split}.tfrecord-{i:05d}-of-{n:05d}`` next to a
``dataset_info.json`` holding the counts, shard lengths and feature spec.
The image is stored as raw ``uint8`` bytes (64*64*3 = 12 KiB): parsing it is
a ``decode_raw`` and a reshape, far cheaper per step than PNG decoding.
TensorFlow is imported inside the functions (the pipeline must import fast).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

#: Feature spec of one example; the reader parses exactly these keys.
FEATURES = {
    "image": "bytes: raw uint8 RGB, row-major (size, size, 3)",
    "key": "bytes: source key of the photo",
    "source": "bytes: source name",
    "face": "int64: index of the face in the photo (0 = largest)",
    "identity": "int64: person id, -1 when unknown",
    "landmarks": "float32[136]: 68 (x, y) landmarks in source pixels",
    "transform": "float32[6]: source->aligned 2x3 affine, row-major",
}


def shard_name(name: str, split: str, index: int, count: int) -> str:
    """TFDS-style file name of record shard ``index`` of ``count``."""
    return f"{name}-{split}.tfrecord-{index:05d}-of-{count:05d}"


def _example(image: np.ndarray, face: dict):
    import tensorflow as tf

    def b(v): return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
    def i(v): return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
    def f(v): return tf.train.Feature(float_list=tf.train.FloatList(value=v))

    identity = face.get("meta", {}).get("identity")
    return tf.train.Example(features=tf.train.Features(feature={
        "image": b(np.ascontiguousarray(image, np.uint8).tobytes()),
        "key": b(face["key"].encode()),
        "source": b(face.get("source", "").encode()),
        "face": i(int(face.get("face", 0))),
        "identity": i(int(identity) if identity is not None else -1),
        "landmarks": f(np.asarray(face["landmarks"], np.float32).ravel()),
        "transform": f(np.asarray(face["transform"], np.float32).ravel()),
    }))


def write_split(folder, name: str, split: str, images: np.ndarray, faces: list[dict],
                num_shards: int) -> list[int]:
    """Write ``images`` and their metadata as ``num_shards`` consecutive shards
    of ``split`` into ``folder``; returns the shard lengths.

    Fewer shards than asked are written when there are fewer examples, so no
    shard is empty.
    """
    import tensorflow as tf

    n = len(images)
    count = max(1, min(num_shards, n))
    per = math.ceil(n / count) if n else 0
    lengths = []
    for s in range(count):
        lo, hi = s * per, min(n, (s + 1) * per)
        with tf.io.TFRecordWriter(str(Path(folder) / shard_name(name, split, s, count))) as writer:
            for j in range(lo, hi):
                writer.write(_example(images[j], faces[j]).SerializeToString())
        lengths.append(hi - lo)
    return lengths


def dataset_info(name: str, size: int, splits: dict[str, list[int]], **extra) -> dict:
    """The ``dataset_info.json`` content for shards written by :func:`write_split`."""
    return {"name": name, "image_shape": [size, size, 3], "features": FEATURES,
            "splits": {s: {"num_examples": sum(lens), "shard_lengths": lens,
                           "filepattern": f"{name}-{s}.tfrecord-*-of-{len(lens):05d}"}
                       for s, lens in splits.items()},
            **extra}


def read_info(folder) -> dict:
    """The parsed ``dataset_info.json`` of a records folder."""
    path = Path(folder) / "dataset_info.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the records first (BuildTFRecords)")
    return json.loads(path.read_text())
