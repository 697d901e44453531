"""Tiny MNIST and CIFAR-10 copies in the official file formats, for any test.

    from labeled_data import write_mnist, write_cifar10, use_mnist

    mnist = write_mnist(tmp_path / "mnist", n_train=64, n_test=16)   # four IDX .gz files
    use_mnist(luigi_config, mnist)                                   # DownloadMNIST local_dir + checksums
    # then: BuildTFRecords(dataset="mnist") -> 28x28x1 labeled records

Each writer returns a :class:`Written`: the folder, the arrays per partition
(what the records must hold), the class names, the files' bytes and their
config entries with the real checksums (what luigi.cfg's ``files`` holds).
Images are random but deterministic in ``seed``; every class appears once the
partition has at least 10 images (labels cycle through the classes, shuffled).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.sources.cifar import CLASS_NAMES as CIFAR_CLASSES
from pipeline.sources.cifar import batch_pickle, meta_pickle

MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


@dataclass
class Written:
    folder: Path
    #: partition -> (images (n, S, S, C) uint8, labels (n,) int64), in key order.
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    class_names: list[str]
    #: file name -> bytes as written.
    files: dict[str, bytes] = field(default_factory=dict)
    #: config entries ({name, urls, size, md5, sha256[, content_md5]}) per file.
    specs: list[dict] = field(default_factory=list)
    #: CIFAR-10 only: batch file name -> MD5 (the ``batches`` config value).
    batch_md5s: dict[str, str] = field(default_factory=dict)

    def files_json(self, url=lambda name: f"http://127.0.0.1:9/{name}") -> str:
        """The ``files`` config value, with ``url(name)`` as each file's one mirror."""
        return json.dumps([{**spec, "urls": [url(spec["name"])]} for spec in self.specs])


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % 10).astype(np.int64)


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file of a uint8 array."""
    array = np.ascontiguousarray(array, np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _spec(name: str, data: bytes, content: bytes | None = None) -> dict:
    spec = {"name": name, "urls": [], "size": len(data), "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}
    if content is not None:
        spec["content_md5"] = hashlib.md5(content).hexdigest()
    return spec


def gzip_bytes(data: bytes, level: int = 9) -> bytes:
    """gzip of ``data`` with a fixed header (mtime 0): the same bytes on every run."""
    return gzip.compress(data, compresslevel=level, mtime=0)


def write_mnist(folder, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Written:
    """The four MNIST ``.gz`` files in ``folder``: 28x28 gray digits (random pixels)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = Written(folder, {}, [str(d) for d in range(10)])
    for partition, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = _labels(n, rng)
        written.arrays[partition] = (images[..., None], labels)
        for name, array in zip(MNIST_FILES[partition], (images, labels.astype(np.uint8)), strict=True):
            content = idx_bytes(array)
            data = gzip_bytes(content)
            (folder / name).write_bytes(data)
            written.files[name] = data
            written.specs.append(_spec(name, data, content))
    return written


def recompress(written: Written, name: str, level: int = 1) -> bytes:
    """Re-compress one file of a MNIST copy (other level: other ``.gz`` bytes, same
    content), as a mirror might; returns and writes the new bytes."""
    data = gzip_bytes(gzip.decompress(written.files[name]), level)
    assert data != written.files[name]
    (written.folder / name).write_bytes(data)
    return data


def cifar_batches(n_train: int = 20, n_test: int = 10, seed: int = 0):
    """``(arrays, {file name: pickle bytes})`` of a CIFAR-10 copy with ``n_train``
    train images over the five batches and ``n_test`` in the test batch."""
    rng = np.random.default_rng(seed)
    per_batch = [len(chunk) for chunk in np.array_split(np.arange(n_train), 5)]
    files, arrays = {}, {}
    for partition, names, sizes in (("train", [f"data_batch_{i}" for i in range(1, 6)], per_batch),
                                    ("test", ["test_batch"], [n_test])):
        images = rng.integers(0, 256, (sum(sizes), 32, 32, 3), dtype=np.uint8)
        labels = _labels(sum(sizes), rng)
        arrays[partition] = (images, labels)
        start = 0
        for name, size in zip(names, sizes, strict=True):
            files[name] = batch_pickle(name, images[start:start + size], labels[start:start + size])
            start += size
    files["batches.meta"] = meta_pickle(CIFAR_CLASSES)
    return arrays, files


def cifar_archive(files: dict[str, bytes]) -> bytes:
    """``cifar-10-python.tar.gz`` of the batch files (under ``cifar-10-batches-py/``, with a readme)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in {**files, "readme.html": b"<html>test copy</html>"}.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_cifar10(folder, n_train: int = 20, n_test: int = 10, seed: int = 0, archive: bool = False) -> Written:
    """A CIFAR-10 copy in ``folder``: ``cifar-10-batches-py/`` with the seven batch
    files, or (``archive=True``) only ``cifar-10-python.tar.gz``. ``specs`` holds
    the archive's entry; :func:`batch_md5s` the batches' MD5s."""
    folder = Path(folder)
    arrays, files = cifar_batches(n_train, n_test, seed)
    written = Written(folder, arrays, list(CIFAR_CLASSES), files)
    data = cifar_archive(files)
    written.specs.append(_spec("cifar-10-python.tar.gz", data))
    if archive:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cifar-10-python.tar.gz").write_bytes(data)
        written.files = {"cifar-10-python.tar.gz": data}
    else:
        (folder / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
        for name, batch in files.items():
            (folder / "cifar-10-batches-py" / name).write_bytes(batch)
    written.batch_md5s = {name: hashlib.md5(batch).hexdigest() for name, batch in files.items()}
    return written


def use_mnist(set_config, written: Written) -> None:
    """Point ``[DownloadMNIST]`` at a copy written by :func:`write_mnist` (with its
    real checksums); ``set_config`` is conftest's ``luigi_config`` fixture."""
    set_config("DownloadMNIST", "local_dir", written.folder)
    set_config("DownloadMNIST", "files", written.files_json())


def use_cifar10(set_config, written: Written) -> None:
    """Point ``[DownloadCIFAR10]`` at a copy written by :func:`write_cifar10`."""
    set_config("DownloadCIFAR10", "local_dir", written.folder)
    set_config("DownloadCIFAR10", "files", written.files_json())
    set_config("DownloadCIFAR10", "batches", json.dumps(written.batch_md5s))
