"""Aligned faces and labeled images as TFRecords in the layout of TensorFlow Datasets.

Three pieces, each plain Python (TensorFlow is not imported: the records are
framed and the ``tf.train.Example`` protos encoded here, byte for byte what
TensorFlow writes):

- the example layouts (:data:`LAYOUTS`: "faces", and "labeled" for MNIST and
  CIFAR-10), declared once, and their encoding (:func:`encode_example`,
  :func:`serialize_example`); model/train/data.py derives its parser from them;
- the split of an example (:func:`split_of`): CelebA's official partition when
  the source gives one, else a hash of the identity (no person in two splits)
  when the data set knows enough identities, else a hash of the photo's key;
- record shards and dataset versions: one record shard folder per aligned
  shard (``{split}.tfrecord`` per split, :func:`write_record_shard`), and a
  version folder (:func:`write_version`) that lists a set of them under TFDS
  file names ``{name}-{split}.tfrecord-00000-of-00016`` (hard links), with
  ``dataset_info.json`` + ``features.json`` (what
  ``tfds.builder_from_directory`` reads) and ``manifest.json`` (what this
  project reads: version id, shard list, source key digest, lineage).

The image is stored as raw ``uint8`` bytes (64*64*3 = 12 KiB), not PNG: see
docs/records.md for the measurement (PNG saves about a quarter of the bytes,
but decoding it makes the reader about 12 times slower).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.versions import digest

#: CelebA's 40 attributes in the order of ``list_attr_celeba.txt``; records
#: store them as an int8 vector in this order (1 yes, 0 no, -1 unknown).
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)
IMAGE_FORMATS = ("raw", "png")
SPLIT_RULES = ("key", "identity")
#: Default split ratios (CelebA's official partition is about 80/10/10).
DEFAULT_SPLITS = "train=0.8,validation=0.1,test=0.1"
#: Bumped when the example layout changes (TFDS wants a semantic version).
FORMAT_VERSION = "1.0.0"

@dataclass(frozen=True)
class Feature:
    """One stored feature of an example, declared once: the writer
    (:func:`encode_example`), ``features.json`` (:func:`features_json`), the
    manifest and the TensorFlow parser (model/train/data.py) all derive from it.

    ``dtype``/``shape``: the decoded value (``"size"`` and ``"channels"`` are
    filled from the version's image shape); ``storage``: what the
    ``tf.train.Example`` holds, "bytes" (one string: text, or a tensor's raw
    bytes), "int64" or "float" (packed lists of ``prod(shape)`` values);
    ``tfds``: its TFDS feature class ("image", "text", "scalar",
    "class_label", "tensor").
    """
    dtype: str
    shape: tuple
    storage: str
    tfds: str
    description: str


#: The example layouts: layout name -> feature name -> :class:`Feature`.
#: "faces" (aligned faces with their metadata; every example has every
#: feature) and "labeled" (images with a class: MNIST, CIFAR-10). ``image`` is
#: ``(size, size, channels) uint8``, stored as raw bytes or PNG (IMAGE_FORMATS).
LAYOUTS: dict[str, dict[str, Feature]] = {
    "faces": {
        "image": Feature("uint8", ("size", "size", 3), "bytes", "image", "the aligned face, RGB, row-major"),
        "key": Feature("string", (), "bytes", "text", "source key of the photo"),
        "source": Feature("string", (), "bytes", "text", "source name"),
        "face": Feature("int64", (), "int64", "scalar", "index of the face in the photo (0 = largest)"),
        "identity": Feature("int64", (), "int64", "scalar", "person id, -1 when unknown"),
        "attributes": Feature("int8", (len(ATTRIBUTE_NAMES),), "bytes", "tensor",
                              "CelebA attributes in ATTRIBUTE_NAMES order: 1 yes, 0 no, -1 unknown"),
        "landmarks": Feature("float32", (68, 2), "float", "tensor", "dlib's 68 (x, y) landmarks in source pixels"),
        "transform": Feature("float32", (2, 3), "float", "tensor", "source -> aligned affine transform"),
    },
    "labeled": {
        "image": Feature("uint8", ("size", "size", "channels"), "bytes", "image",
                         "the image, row-major: 1 channel (gray) or 3 (RGB)"),
        "key": Feature("string", (), "bytes", "text", "source key of the image"),
        "label": Feature("int64", (), "int64", "class_label", "class index into the manifest's class_names"),
    },
}


def layout_of(info: dict) -> str:
    """The example layout of a version's manifest ("faces" when it names none:
    face versions are written without the key)."""
    layout = info.get("layout", "faces")
    if layout not in LAYOUTS:
        raise ValueError(f"manifest layout {layout!r} unknown; this code reads {sorted(LAYOUTS)}")
    return layout


def feature_shape(feature: Feature, image_shape) -> list[int]:
    """``feature.shape`` with ``"size"``/``"channels"`` taken from ``image_shape`` ``(S, S, C)``."""
    fill = {"size": int(image_shape[0]), "channels": int(image_shape[2])}
    return [fill.get(d, d) for d in feature.shape]


# --- the example -------------------------------------------------------------

def attribute_vector(meta: dict) -> np.ndarray:
    """``(40,) int8``: the ``attributes`` dict of a source's metadata as 1/0, -1 where unknown."""
    attributes = meta.get("attributes") or {}
    return np.array([-1 if attributes.get(n) is None else int(bool(attributes[n]))
                     for n in ATTRIBUTE_NAMES], np.int8)


def encode_image(image: np.ndarray, image_format: str = "raw") -> bytes:
    """The bytes stored for a ``(S, S, C) uint8`` image (C = 3 RGB or 1 gray)."""
    image = np.ascontiguousarray(image, np.uint8)
    if image_format == "raw":
        return image.tobytes()
    if image_format == "png":
        import cv2
        ok, buf = cv2.imencode(".png", image[..., ::-1])
        if not ok:
            raise ValueError("PNG encoding failed")
        return buf.tobytes()
    raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:      # Feature.bytes_list = 1 { value = 1 }
    return _field(1, _field(1, value))


def _float_feature(values: np.ndarray) -> bytes:  # Feature.float_list = 2 { packed value = 1 }
    return _field(2, _field(1, np.asarray(values, "<f4").tobytes()))


def _int64_feature(value: int) -> bytes:        # Feature.int64_list = 3 { packed value = 1 }
    return _field(3, _field(1, _varint(int(value) & 0xFFFFFFFFFFFFFFFF)))


def _encode_value(feature: Feature, value) -> bytes:
    """One feature's ``Feature`` proto from a value of its declared type."""
    if feature.storage == "bytes":
        if isinstance(value, str):
            value = value.encode()
        elif not isinstance(value, bytes):
            value = np.ascontiguousarray(value, feature.dtype).tobytes()
        return _bytes_feature(value)
    if feature.storage == "int64":
        return _int64_feature(value)
    return _float_feature(np.asarray(value, np.float32).reshape(-1))


def encode_example(layout: str, values: dict) -> bytes:
    """A serialized ``tf.train.Example`` holding ``values`` (feature name ->
    value: ``bytes``/``str`` for "bytes" storage, else an int or an array) for
    every feature of ``LAYOUTS[layout]``; ``image`` must already be encoded
    (:func:`encode_image`). Byte for byte what TensorFlow writes."""
    spec = LAYOUTS[layout]
    # Example.features = 1 { map<string, Feature> feature = 1 }, entries sorted by name.
    entries = b"".join(_field(1, _field(1, name.encode()) + _field(2, _encode_value(spec[name], values[name])))
                       for name in sorted(spec))
    return _field(1, entries)


def face_values(image: np.ndarray, face: dict, image_format: str = "raw") -> dict:
    """The "faces" values of one aligned face and its ``faces.jsonl`` row (pipeline/align/shards.py)."""
    meta = face.get("meta") or {}
    identity = meta.get("identity")
    return {"image": encode_image(image, image_format), "key": face["key"],
            "source": str(face.get("source", "")), "face": face.get("face", 0),
            "identity": -1 if identity is None else int(identity), "attributes": attribute_vector(meta),
            "landmarks": face["landmarks"], "transform": face["transform"]}


def labeled_values(image: np.ndarray, row: dict, image_format: str = "raw") -> dict:
    """The "labeled" values of one image and its row ``{"key", "meta": {"label"}}``."""
    return {"image": encode_image(image, image_format), "key": row["key"], "label": int(row["meta"]["label"])}


#: layout -> the function giving an example's values from ``(image, row, image_format)``.
ROW_VALUES = {"faces": face_values, "labeled": labeled_values}


def serialize_example(image: np.ndarray, face: dict, image_format: str = "raw", layout: str = "faces") -> bytes:
    """A serialized ``tf.train.Example`` of one image and its row: a
    ``faces.jsonl`` row for "faces", ``{"key", "meta": {"label"}}`` for "labeled"."""
    return encode_example(layout, ROW_VALUES[layout](image, face, image_format))


# --- TFRecord files ----------------------------------------------------------

def _masked_crc(data: bytes, crc32c) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _fast_crc32c():
    """google-crc32c's C implementation, or None."""
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value if google_crc32c.implementation == "c" else None


class RecordWriter:
    """Writes a TFRecord file: ``len, crc(len), data, crc(data)`` per record.

    Uses google-crc32c (no TensorFlow import: a shard is written in
    milliseconds by a process that never loads TensorFlow) and falls back to
    ``tf.io.TFRecordWriter`` when that package is missing.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._crc = _fast_crc32c()
        if self._crc is None:
            import tensorflow as tf
            self._tf = tf.io.TFRecordWriter(self.path)
        else:
            self._fh = open(self.path, "wb")

    def write(self, record: bytes) -> None:
        if self._crc is None:
            self._tf.write(record)
            return
        length = struct.pack("<Q", len(record))
        self._fh.write(length + _masked_crc(length, self._crc) + record + _masked_crc(record, self._crc))

    def close(self) -> None:
        if self._crc is None:
            self._tf.close()
        else:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iter_records(path: str | os.PathLike):
    """The records of a TFRecord file, checking lengths and checksums
    (``ValueError`` names the file on a torn or corrupt record)."""
    crc32c = _fast_crc32c()
    with open(path, "rb") as fh:
        while header := fh.read(12):
            if len(header) < 12:
                raise ValueError(f"{path}: truncated record header")
            length = struct.unpack("<Q", header[:8])[0]
            data, footer = fh.read(length), fh.read(4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"{path}: truncated record")
            if crc32c is not None and (_masked_crc(header[:8], crc32c) != header[8:]
                                       or _masked_crc(data, crc32c) != footer):
                raise ValueError(f"{path}: record checksum mismatch")
            yield data


# --- splits ------------------------------------------------------------------

def parse_splits(text: str) -> dict[str, float]:
    """``"train=0.8,validation=0.1,test=0.1"`` -> ``{"train": 0.8, ...}`` (must sum to 1)."""
    ratios: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            ratio = float(value)
        except ValueError:
            ratio = -1.0
        if not sep or not name.strip().isidentifier() or ratio <= 0 or name.strip() in ratios:
            raise ValueError(f"splits {text!r}: expected distinct 'name=fraction' pairs with "
                             f"fractions > 0, e.g. {DEFAULT_SPLITS!r}")
        ratios[name.strip()] = ratio
    if not ratios or abs(sum(ratios.values()) - 1) > 1e-6:
        raise ValueError(f"splits {text!r}: the fractions must add up to 1, e.g. {DEFAULT_SPLITS!r}")
    return ratios


def resolve_rule(split_by: str, identities: int, min_identities: int) -> str:
    """The split rule for ``split_by`` ("auto", "identity" or "key"): auto means
    by identity when at least ``min_identities`` distinct identities are known
    (fewer make the ratios meaningless: the sample data set has 2), else by key."""
    if split_by == "auto":
        return "identity" if identities >= max(min_identities, 1) else "key"
    if split_by not in SPLIT_RULES:
        raise ValueError(f"split_by must be auto, identity or key, got {split_by!r}")
    return split_by


def _unit(text: str) -> float:
    """A deterministic pseudo-random number in [0, 1) from ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0 ** 64


def split_of(face: dict, rule: str, ratios: dict[str, float], official: bool = True) -> str:
    """The split of an aligned face: its source's official ``partition`` when
    ``official`` and present; else by the hash of its identity (``rule`` =
    "identity" and the identity is known) or of its photo's key. Every face of
    a photo, and with the identity rule every photo of a person, lands in the
    same split, whatever else is in the data set."""
    meta = face.get("meta") or {}
    if official and meta.get("partition"):
        return str(meta["partition"])
    if rule == "identity" and meta.get("identity") is not None:
        u = _unit(f"identity:{meta['identity']}")
    else:
        u = _unit(f"key:{face['key']}")
    total = 0.0
    for name, ratio in ratios.items():
        total += ratio
        if u < total:
            return name
    return name  # u within rounding of 1


# --- record shards -----------------------------------------------------------

def write_record_shard(folder, images: np.ndarray, faces: list[dict], rule: str,
                       ratios: dict[str, float], official: bool = True, image_format: str = "raw",
                       progress=None, layout: str = "faces") -> dict:
    """Write the records of one shard into ``folder`` (normally an atomic
    temporary): ``{split}.tfrecord`` for each split that gets examples, in
    row order, and ``summary.json``. ``faces`` are the rows of ``images``
    (``faces.jsonl`` rows, or ``{"key", "meta"}`` for the "labeled" layout).
    Returns the summary (``lengths`` and ``bytes`` per split)."""
    folder = Path(folder)
    by_split: dict[str, list[int]] = {}
    for i, face in enumerate(faces):
        by_split.setdefault(split_of(face, rule, ratios, official), []).append(i)
    lengths, sizes, done = {}, {}, 0
    for split in sorted(by_split):
        path = folder / f"{split}.tfrecord"
        with RecordWriter(path) as writer:
            for i in by_split[split]:
                writer.write(serialize_example(images[i], faces[i], image_format, layout))
                done += 1
                if progress is not None:
                    progress(done, len(faces))
        lengths[split], sizes[split] = len(by_split[split]), path.stat().st_size
    summary = {"lengths": lengths, "bytes": sizes, "examples": len(faces), "rule": rule,
               "image_format": image_format}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


# --- dataset versions --------------------------------------------------------

def file_name(name: str, split: str, index: int, count: int) -> str:
    """TFDS file name of record shard ``index`` of ``count`` of ``split``."""
    return f"{name}-{split}.tfrecord-{index:05d}-of-{count:05d}"


def version_id(name: str, shards: list[str], settings: dict) -> str:
    """12 hex digits naming a dataset version: a hash of its record shard
    list (shard names are content hashes) and settings."""
    return digest([name, FORMAT_VERSION, shards, settings], 12)


def features_json(size: int, image_format: str = "raw", layout: str = "faces", channels: int = 3,
                  num_classes: int | None = None) -> dict:
    """``features.json`` of TFDS (``FeaturesDict.to_json()``) for ``LAYOUTS[layout]``."""
    image_shape = (size, size, channels)
    tfds = "tensorflow_datasets.core.features."

    def tensor(dtype, shape, encoding="none"):
        return {"pythonClassName": tfds + "tensor_feature.Tensor",
                "tensor": {"shape": {"dimensions": [str(d) for d in shape]} if shape else {},
                           "dtype": dtype, "encoding": encoding}}

    def entry(feature: Feature) -> dict:
        shape = feature_shape(feature, image_shape)
        if feature.tfds == "image" and image_format == "png":
            return {"pythonClassName": tfds + "image_feature.Image",
                    "image": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": feature.dtype,
                              "encodingFormat": "png"}}
        if feature.tfds == "text":
            return {"pythonClassName": tfds + "text_feature.Text", "text": {}}
        if feature.tfds == "scalar":
            return {"pythonClassName": tfds + "scalar.Scalar",
                    "tensor": {"shape": {}, "dtype": feature.dtype, "encoding": "none"}}
        if feature.tfds == "class_label":
            return {"pythonClassName": tfds + "class_label_feature.ClassLabel",
                    "classLabel": {"numClasses": str(num_classes)}}
        return tensor(feature.dtype, shape, "bytes" if feature.storage == "bytes" else "none")

    features = {name: entry(feature) for name, feature in LAYOUTS[layout].items()}
    return {"type": tfds + "features_dict.FeaturesDict",
            "content": {"features": features}, "proto_cls": "tensorflow_datasets.FeaturesDict"}


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` as ``dst`` (a version costs no copy); symlink or copy
    where hard links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        try:
            os.symlink(os.path.relpath(src, dst.parent), dst)
        except OSError:
            import shutil
            shutil.copyfile(src, dst)


def write_version(folder, name: str, size: int, shards: list[tuple[str, Path, dict]],
                  image_format: str = "raw", layout: str = "faces", channels: int = 3,
                  class_names: list[str] | None = None, **manifest) -> dict:
    """Write a dataset version into ``folder`` (normally an atomic temporary).

    ``shards`` are ``(shard name, record shard folder, its summary)`` in order;
    split ``s``'s files are the shards' ``{s}.tfrecord`` (where they have one),
    linked under TFDS names. Writes ``dataset_info.json`` and ``features.json``
    (TFDS; plus ``label.labels.txt`` for a labeled layout), and
    ``manifest.json``; returns the manifest. A "labeled" manifest also has
    ``layout``, ``class_names`` and ``num_classes``; a "faces" one has
    ``attribute_names`` (and no ``layout`` key, as before layouts existed).
    """
    folder = Path(folder)
    splits: dict[str, dict] = {}
    names = sorted({s for _, _, summary in shards for s in summary["lengths"]})
    for split in names:
        members = [(shard, path, summary) for shard, path, summary in shards
                   if summary["lengths"].get(split)]
        files = []
        for i, (_, path, _) in enumerate(members):
            files.append(file_name(name, split, i, len(members)))
            _link(Path(path) / f"{split}.tfrecord", folder / files[-1])
        lengths = [summary["lengths"][split] for _, _, summary in members]
        splits[split] = {"num_examples": sum(lengths), "shard_lengths": lengths, "files": files,
                         "num_bytes": sum(summary["bytes"][split] for _, _, summary in members)}
    dataset = manifest.get("dataset", name)
    if layout == "faces":
        what = f"Aligned {size}x{size} faces"
        extra = {"attribute_names": list(ATTRIBUTE_NAMES)}
    else:
        if not class_names:
            raise ValueError(f"{name}: a {layout} version needs its class_names")
        what = f"{size}x{size} {'gray' if channels == 1 else 'RGB'} images with {len(class_names)} classes"
        extra = {"layout": layout, "class_names": list(class_names), "num_classes": len(class_names)}
        (folder / "label.labels.txt").write_text("".join(f"{c}\n" for c in class_names))
    description = f"{what} of the '{dataset}' data set (facegan-pipeline), version {manifest.get('version', '?')}."
    info = {"name": name, "version": FORMAT_VERSION, "description": description,
            "fileFormat": "tfrecord",
            "releaseNotes": {FORMAT_VERSION: description},
            "splits": [{"name": s, "shardLengths": [str(n) for n in v["shard_lengths"]],
                        "numBytes": str(v["num_bytes"]),
                        "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}
                       for s, v in splits.items()]}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    features = features_json(size, image_format, layout, channels, len(class_names or ()))
    (folder / "features.json").write_text(json.dumps(features, indent=2) + "\n")
    full = {"name": name, "image_shape": [size, size, channels], "image_format": image_format,
            "format_version": FORMAT_VERSION,
            "features": {k: [f.dtype, list(f.shape), f.description] for k, f in LAYOUTS[layout].items()},
            **extra, "splits": splits, "shards": [shard for shard, _, _ in shards], **manifest}
    (folder / "manifest.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return full


def read_info(folder) -> dict:
    """The ``manifest.json`` of a version folder: ``image_shape``, ``splits``
    (per split: ``num_examples``, ``shard_lengths``, ``files``), ``version``, ..."""
    path = Path(folder) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the records first "
                                f"(luigi --module tasks BuildTFRecords --local-scheduler)")
    return json.loads(path.read_text())


def split_files(folder, split: str = "train") -> list[str]:
    """Paths of the record files of ``split`` in a version folder, in order."""
    info = read_info(folder)
    if split not in info["splits"]:
        raise ValueError(f"split {split!r} not in {folder} (it has {sorted(info['splits'])})")
    files = [str(Path(folder) / f) for f in info["splits"][split]["files"]]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(f"{folder}: {len(missing)} record files of {split!r} are missing, "
                                f"e.g. {missing[0]}; rebuild with BuildTFRecords")
    return files
