"""The one interface every raw image source implements.

Alignment, records and everything after them see a source only through
:class:`Source`: a sorted list of stable keys, and ``read(key)`` returning the
encoded bytes with JSON-serialisable metadata (attributes, identity, URL, ...).
Where the bytes came from (a generated sample, a CelebA zip, an LMDB export,
an ImageNet tar, a crawl) is the source's business only.

Keys are POSIX relative paths ("sub/dir/name.jpg"); they are stable across
runs, so shards, splits and de-duplication can be derived from them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

#: File suffixes treated as images when a directory is listed.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif",
                            ".tif", ".tiff", ".ppm", ".pgm"})


@dataclass(frozen=True)
class Item:
    """One raw image: ``key`` (stable, unique in its source), ``data`` (encoded
    bytes, undecoded) and ``meta`` (JSON-serialisable dict)."""
    key: str
    data: bytes
    meta: dict = field(default_factory=dict)


class Source:
    """Base class: subclasses implement :meth:`keys` and :meth:`read`."""

    #: Short name used in paths and records, e.g. "sample", "celeba".
    name = "source"

    def keys(self) -> list[str]:
        """All keys, sorted, so that chunking them into shards is deterministic."""
        raise NotImplementedError

    def read(self, key: str) -> Item:
        """The item for ``key``. Raises ``KeyError`` for an unknown key and
        ``OSError`` when the bytes cannot be read."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Item]:
        for key in self.keys():
            yield self.read(key)

    def __len__(self) -> int:
        return len(self.keys())


def list_images(root: str | os.PathLike) -> list[str]:
    """Sorted POSIX relative paths of the image files under ``root``.

    Hidden files and folders (".tmp-*" partial outputs among them) are skipped.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((rel / name).as_posix())
    return sorted(found)


class DirectorySource(Source):
    """Images in a folder tree; the key is the path relative to ``root``.

    ``meta_for`` maps a key to extra metadata (CelebA attributes, crawl URLs,
    ...). When the folder holds ``index.jsonl`` (one JSON object per line with
    a ``key`` field), those objects are the metadata, which is how generated
    and crawled sources carry what they know about each image.
    """

    def __init__(self, root: str | os.PathLike, name: str | None = None,
                 meta_for: Callable[[str], dict] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"source folder {self.root} does not exist")
        self.name = name or self.root.name
        self._meta_for = meta_for
        self._keys: list[str] | None = None
        self._index: dict[str, dict] | None = None

    def keys(self) -> list[str]:
        if self._keys is None:
            self._keys = list_images(self.root)
        return self._keys

    def _index_meta(self, key: str) -> dict:
        if self._index is None:
            from pipeline.jsonl import read_jsonl
            self._index = {row.pop("key"): row for row in read_jsonl(self.root / "index.jsonl")}
        return dict(self._index.get(key, {}))

    def read(self, key: str) -> Item:
        path = self.root / key
        if not path.is_file():
            raise KeyError(f"{key!r} is not an image of source {self.name} ({self.root})")
        meta = self._index_meta(key)
        if self._meta_for is not None:
            meta.update(self._meta_for(key))
        return Item(key=key, data=path.read_bytes(), meta=meta)


def shard_keys(keys: list[str], shard_size: int) -> list[list[str]]:
    """Split sorted ``keys`` into consecutive chunks of ``shard_size``.

    Consecutive chunks (not ``hash % n``) keep earlier shards unchanged when
    keys are appended, which is what makes incremental re-runs cheap.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [keys[i:i + shard_size] for i in range(0, len(keys), shard_size)]


def checksums(name: str) -> dict:
    """The published files of data set ``name`` (``celeba``, ``mnist``, ``cifar10``): URLs,
    sizes and checksums, kept as data in ``pipeline/sources/checksums/<name>.json`` (as
    TensorFlow Datasets keeps its url_checksums), with the sources they were taken from
    under ``about``. The download tasks' ``files`` default to them; luigi.cfg only overrides."""
    import json

    return json.loads((Path(__file__).parent / "checksums" / f"{name}.json").read_text())
