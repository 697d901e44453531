"""MNIST: the four IDX ``.gz`` files, verified, parsed, and served as a source.

Layout (the official one, what torchvision and TFDS download)::

    root/train-images-idx3-ubyte.gz   60000 x 28 x 28 uint8
    root/train-labels-idx1-ubyte.gz   60000 labels 0..9
    root/t10k-images-idx3-ubyte.gz    10000 x 28 x 28 uint8
    root/t10k-labels-idx1-ubyte.gz    10000 labels

Verification (:func:`verify_gz`): a file passes when the ``.gz`` has the
published size and checksums, or, failing that, when its decompressed IDX
content has the published content MD5. A re-compressed copy (another gzip
level or header) differs byte for byte from the published ``.gz`` while its
content is the official one; the result says which of the two matched.
Checksums are config data (luigi.cfg), handed in with each file.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.net.download import CHUNK, ChecksumError, RemoteFile, file_hashes
from pipeline.sources.labeled import LabeledSource, missing_files_error

log = logging.getLogger(__name__)

#: partition -> (images file, labels file), the official names.
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FILE_NAMES = [name for pair in FILES.values() for name in pair]
CLASS_NAMES = [str(d) for d in range(10)]
#: Largest ``.gz`` accepted from a mirror (the files are at most 9.9 MB; a
#: re-compressed copy may be larger, so its size is not fixed in advance).
MAX_GZ_BYTES = 64 << 20
#: IDX type byte -> big-endian numpy dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --- IDX ---------------------------------------------------------------------

def parse_idx(data: bytes, source: str = "<idx>") -> np.ndarray:
    """An IDX file's array (native byte order). ``ValueError`` names ``source``
    when the magic number, the type or the length is wrong."""
    if len(data) < 4 or data[0] or data[1] or data[2] not in _IDX_TYPES:
        raise ValueError(f"{source}: not an IDX file (starts {data[:4].hex() or 'empty'}, expected "
                         f"00 00 <type> <dims>)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{source}: {len(data) - header} data bytes, the header promises {expected} "
                         f"({'x'.join(map(str, dims))} {dtype.name}); the file is truncated or corrupt")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file, gunzipping it when it is gzip (by content, not suffix)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: not a readable gzip file ({exc}); fetch it again") from None
    return parse_idx(data, str(path))


def load_partition(root: str | os.PathLike, partition: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, 28, 28, 1) uint8, labels (n,) uint8)`` of ``"train"`` or ``"test"``."""
    images_file, labels_file = (Path(root) / name for name in FILES[partition])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_file}: expected (n, rows, cols) uint8 images, got "
                         f"{images.shape} {images.dtype}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_file}: {labels.shape} labels for the {len(images)} images of "
                         f"{images_file.name}")
    return images[..., None], labels


def check_folder(root: str | os.PathLike) -> None:
    """Raise :class:`~pipeline.sources.labeled.MissingFilesError` naming every expected
    file unless ``root`` holds the four MNIST files."""
    root = Path(root)
    missing = [name for name in FILE_NAMES if not (root / name).is_file()]
    if missing:
        raise missing_files_error("MNIST", root, missing, FILE_NAMES,
                                  "download them (https://storage.googleapis.com/cvdf-datasets/"
                                  "mnist/) into it, or leave local_dir empty to download")


class MNISTSource(LabeledSource):
    """The 70,000 MNIST digits of a folder holding the four files:
    keys ``train/00000.png`` ... ``test/09999.png``, label in ``meta``."""

    def __init__(self, root: str | os.PathLike):
        check_folder(root)
        self.root = Path(root)
        super().__init__("mnist", lambda: {p: load_partition(self.root, p) for p in FILES}, CLASS_NAMES)


# --- verification ------------------------------------------------------------

@dataclass(frozen=True)
class GzipFile:
    """A published ``.gz`` file: its :class:`RemoteFile` (URLs, size and
    checksums of the ``.gz``) and the MD5 of its decompressed content."""
    remote: RemoteFile
    content_md5: str | None = None

    @classmethod
    def from_dict(cls, spec: Mapping) -> "GzipFile":
        """From a config entry: RemoteFile's keys plus ``content_md5``."""
        md5 = spec.get("content_md5")
        return cls(RemoteFile.from_dict(spec), str(md5).lower() if md5 else None)

    @property
    def name(self) -> str:
        return self.remote.name


def _content_md5(path: Path) -> str:
    h = hashlib.md5()
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(CHUNK * 16):
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        return f"unreadable gzip ({exc})"
    return h.hexdigest()


def verify_gz(path: str | os.PathLike, published: GzipFile) -> dict:
    """Which published checksum ``path`` matches, as a dict for source.json:
    ``matched`` is "compressed" (the ``.gz`` has the published size and
    hashes), "decompressed" (it does not, but its content has the published
    content MD5) or "unchecked" (the config gives no checksum), with the
    hashes computed. Raises :class:`~pipeline.net.download.ChecksumError` naming
    the file, both expected and both actual values when neither matches."""
    path, remote = Path(path), published.remote
    wanted = {k: v for k, v in (("md5", remote.md5), ("sha256", remote.sha256)) if v}
    got = file_hashes(path, ("md5", "sha256"))
    size = path.stat().st_size
    result = {"size": size, **got}
    compressed_ok = (remote.size in (None, size)) and all(got[k] == v for k, v in wanted.items())
    if wanted and compressed_ok:
        return {"matched": "compressed", **result}
    if not wanted and not published.content_md5:
        log.warning("%s: no published checksum configured; not verified", remote.name)
        return {"matched": "unchecked", **result}
    differs = ", ".join(f"{k} {got[k]} (published {v})" for k, v in wanted.items() if got[k] != v)
    if remote.size not in (None, size):
        differs = f"{size} bytes (published {remote.size})" + (f", {differs}" if differs else "")
    if published.content_md5:
        content = _content_md5(path)
        result["content_md5"] = content
        if content == published.content_md5:
            log.info("%s: the .gz differs from the published one (%s) but its decompressed content "
                     "has the published MD5 %s: accepted as a re-compressed copy",
                     remote.name, differs or "no .gz checksum configured", content)
            return {"matched": "decompressed", **result}
        differs += f"; decompressed md5 {content} (published {published.content_md5})"
    raise ChecksumError(f"{remote.name}: checksum mismatch: {differs or 'no checksum matched'}; "
                        f"delete the file and fetch it again, or correct its checksums in the config")
