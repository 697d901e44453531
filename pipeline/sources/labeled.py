"""Labeled image data sets (MNIST, CIFAR-10) as a :class:`~pipeline.sources.base.Source`.

These data sets come as arrays (IDX files, pickled batches), not as image
files, and need no alignment: every image already is an example. A
:class:`LabeledSource` holds the arrays of each official partition and
presents them like any other source:

- keys ``"{partition}/{index:05d}.png"`` (``test/00000.png`` ... ``train/59999.png``),
  sorted, stable;
- ``read(key)`` gives the image as PNG bytes (lossless; gray stays 1 channel)
  and ``meta = {"label": int, "partition": "train" | "test"}``;
- ``class_names``: the class of label ``i`` is ``class_names[i]``.

The records stage (pipeline/records.py) writes them as labeled examples.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from pipeline.imaging import decode_rgb, encode_png
from pipeline.sources.base import Item, Source

#: Arrays of one partition: images ``(n, S, S, C) uint8``, labels ``(n,) int``.
Arrays = tuple[np.ndarray, np.ndarray]

_KEY = re.compile(r"^([a-z]+)/(\d{5,})\.png$")


class MissingFilesError(FileNotFoundError):
    """A labeled data set's folder lacks files; the message names every expected one."""


def missing_files_error(dataset: str, root: str | Path, missing: list[str], expected: list[str],
                        fix: str) -> MissingFilesError:
    """The one-line error for a folder that lacks ``missing`` of the ``expected`` files."""
    if not Path(root).is_dir():
        return MissingFilesError(f"{dataset} folder {root} does not exist (expected it to hold "
                                 f"{', '.join(expected)}); {fix}")
    return MissingFilesError(f"{dataset} folder {root} lacks {', '.join(missing)} (expected: "
                             f"{', '.join(expected)}); {fix}")


def check_arrays(name: str, images: np.ndarray, labels: np.ndarray, classes: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless images are ``(n, S, S, C) uint8``
    and labels ``(n,)`` integers in ``[0, classes)``."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{name}: images must be (n, S, S, C) uint8, got {images.shape} {images.dtype}")
    if labels.shape != (len(images),):
        raise ValueError(f"{name}: {len(labels)} labels for {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{name}: labels outside 0..{classes - 1} "
                         f"(min {labels.min()}, max {labels.max()}); the file is corrupt")


class LabeledSource(Source):
    """Images with class labels, from arrays per partition (loaded on first use, once).

    ``load()`` returns ``{partition: (images (n, S, S, C) uint8, labels (n,))}``.
    """

    def __init__(self, name: str, load: Callable[[], Mapping[str, Arrays]], class_names: list[str]):
        self.name = name
        self.class_names = list(class_names)
        self._load = load
        self._arrays: dict[str, Arrays] | None = None
        self._keys: list[str] | None = None

    @property
    def arrays(self) -> dict[str, Arrays]:
        if self._arrays is None:
            arrays = dict(self._load())
            for partition, (images, labels) in arrays.items():
                check_arrays(f"{self.name} {partition}", images, labels, len(self.class_names))
            self._arrays = arrays
        return self._arrays

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(S, S, C)`` of every image."""
        return tuple(next(iter(self.arrays.values()))[0].shape[1:])

    def keys(self) -> list[str]:
        if self._keys is None:
            self._keys = sorted(f"{p}/{i:05d}.png" for p, (images, _) in self.arrays.items()
                                for i in range(len(images)))
        return self._keys

    def _locate(self, key: str) -> tuple[str, int]:
        m = _KEY.match(key)
        if m is None or m.group(1) not in self.arrays or int(m.group(2)) >= len(self.arrays[m.group(1)][0]):
            raise KeyError(f"{key!r} is not an image of source {self.name} (keys look like "
                           f"'train/00000.png')")
        return m.group(1), int(m.group(2))

    def read(self, key: str) -> Item:
        partition, index = self._locate(key)
        images, labels = self.arrays[partition]
        image = images[index]
        data = encode_png(image[..., 0] if image.shape[-1] == 1 else image)
        return Item(key=key, data=data, meta={"label": int(labels[index]), "partition": partition})


def decode_item(item: Item, channels: int) -> np.ndarray:
    """The ``(S, S, channels) uint8`` pixels of a labeled item (gray PNGs decode
    to three equal channels, of which the first is kept)."""
    return decode_rgb(item.data)[..., :channels]


# --- records -----------------------------------------------------------------

#: Examples per record shard of a labeled data set (MNIST train: 6 shards).
EXAMPLES_PER_SHARD = 10_000


def write_labeled_version(root: str | Path, name: str, source: LabeledSource, rule: str,
                          ratios: dict[str, float], official: bool = True, image_format: str = "raw",
                          settings: dict | None = None, progress: Callable[[int, int], None] | None = None,
                          shard_size: int = EXAMPLES_PER_SHARD, **manifest) -> dict:
    """The records of a labeled source under ``root``, in the layout of face records:
    ``shards/{rule}/shard-{i:05d}-{digest}/`` per ``shard_size`` consecutive keys
    (each written atomically; present ones are kept, so a killed build resumes)
    and the version folder ``v-{id}`` (atomic; kept when present), TFDS name
    ``name``. Splits: the source's official partition when ``official``, else
    ``ratios`` by key hash. Returns the version's manifest (``version`` included).
    """
    from pipeline.align.shards import shard_name
    from pipeline.atomic import atomic_dir
    from pipeline.records import version_id, write_record_shard, write_version
    from pipeline.sources.base import shard_keys

    root = Path(root)
    keys = source.keys()
    size, _, channels = source.image_shape
    shards, done = [], 0
    for index, chunk in enumerate(shard_keys(keys, shard_size)):
        folder = root / "shards" / rule / shard_name(index, chunk)
        if not (folder / "summary.json").exists():
            items = [source.read(key) for key in chunk]
            images = np.stack([decode_item(item, channels) for item in items])
            rows = [{"key": item.key, "meta": item.meta} for item in items]
            with atomic_dir(folder) as tmp:
                write_record_shard(tmp, images, rows, rule, ratios, official, image_format, layout="labeled")
        done += len(chunk)
        if progress is not None:
            progress(done, len(keys))
        shards.append((f"{rule}/{folder.name}", folder, json.loads((folder / "summary.json").read_text())))
    settings = {**(settings or {}), "rule": rule, "size": size, "channels": channels, "layout": "labeled"}
    version = f"v-{version_id(name, [s for s, _, _ in shards], settings)}"
    if not (root / version / "manifest.json").exists():  # another run may have made it
        with atomic_dir(root / version) as tmp:
            write_version(tmp, name, size, shards, image_format, layout="labeled", channels=channels,
                          class_names=source.class_names, version=version, settings=settings, **manifest)
    return json.loads((root / version / "manifest.json").read_text())
