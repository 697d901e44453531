"""CIFAR-10: the python batches, read without trusting the pickles, served as a source.

Layout (``cifar-10-python.tar.gz`` extracted, as torchvision and Keras use it)::

    root/cifar-10-batches-py/data_batch_1 ... data_batch_5   10000 images each (train)
    root/cifar-10-batches-py/test_batch                      10000 images (test)
    root/cifar-10-batches-py/batches.meta                    label_names

Each batch is a Python pickle of ``{"data": (10000, 3072) uint8 (R, G, B
planes of 32x32, row-major), "labels": [int], ...}``. A pickle can run any
code while it loads, so :func:`load_pickle` only lets through what such a
batch needs: numpy arrays of plain dtypes, and dicts, lists, strings and
numbers.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.atomic import atomic_dir
from pipeline.net.archive import extract_tar
from pipeline.net.download import ChecksumError, file_hashes
from pipeline.sources.labeled import LabeledSource, missing_files_error

log = logging.getLogger(__name__)

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
META = "batches.meta"
BATCH_FILES = [*TRAIN_BATCHES, *TEST_BATCHES, META]
SIDE = 32
#: ``label_names`` of the published ``batches.meta``, in label order.
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- restricted unpickling ---------------------------------------------------

def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled numpy array needs; anything else
    (``os.system``, ``builtins.eval``, ...) is refused before it is called."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("_codecs", "encode")}  # protocol-2 pickles written by Python 3 encode bytes this way

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            return _reconstruct()
        if module == "_codecs":
            import codecs
            return codecs.encode
        return getattr(np, name)


def load_pickle(path: str | os.PathLike) -> dict:
    """A CIFAR batch as a dict with ``str`` keys; ``ValueError`` naming the
    file when it is no such pickle or asks for anything but plain numpy arrays."""
    path = Path(path)
    try:
        obj = _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({exc}); fetch {ARCHIVE} again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def load_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, 32, 32, 3) uint8 RGB, labels (n,) int64)`` of one batch file."""
    batch = load_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * SIDE * SIDE or labels is None:
        raise ValueError(f"{path}: expected 'data' (n, 3072) uint8 and 'labels'; got keys "
                         f"{sorted(batch)} and data {getattr(data, 'shape', None)}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        raise ValueError(f"{path}: {labels.shape} labels of type {labels.dtype} for {len(data)} images")
    # Stored as three 32x32 planes per image: (n, C, H, W) -> (n, H, W, C).
    return data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1).copy(), labels.astype(np.int64)


def load_class_names(path: str | os.PathLike) -> list[str]:
    """``label_names`` of ``batches.meta``."""
    names = load_pickle(path).get("label_names")
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: no label_names list; fetch {ARCHIVE} again")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


# --- writing batches ---------------------------------------------------------

def batch_pickle(name: str, images: np.ndarray, labels: np.ndarray) -> bytes:
    """One batch file's bytes in the published layout (protocol 2, as Python 2's cPickle
    wrote them): ``data`` (n, 3072) uint8 R, G, B planes of ``images`` (n, 32, 32, 3),
    ``labels``, ``batch_label`` and per-image ``filenames``."""
    images = np.asarray(images, np.uint8)
    if images.ndim != 4 or images.shape[1:] != (SIDE, SIDE, 3) or len(labels) != len(images):
        raise ValueError(f"{name}: expected (n, 32, 32, 3) uint8 images and n labels, got {images.shape} "
                         f"and {len(labels)}")
    return pickle.dumps({b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                         b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3 * SIDE * SIDE),
                         b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(len(images))]}, protocol=2)


def meta_pickle(class_names: list[str]) -> bytes:
    """``batches.meta``'s bytes: ``label_names`` (and the published counts' keys)."""
    return pickle.dumps({b"label_names": [c.encode() for c in class_names], b"num_cases_per_batch": 10000,
                         b"num_vis": 3 * SIDE * SIDE}, protocol=2)


def write_batches(root: str | os.PathLike, train: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray], class_names: list[str] = CLASS_NAMES) -> Path:
    """``root/cifar-10-batches-py`` with the seven files (atomically: complete or absent) from
    ``(images (n, 32, 32, 3) uint8, labels (n,))`` per partition, the train images split over
    the five ``data_batch`` files in order, as the published archive does."""
    final = Path(root) / FOLDER
    with atomic_dir(final) as tmp:
        for name, chunk in zip(TRAIN_BATCHES, np.array_split(np.arange(len(train[0])), len(TRAIN_BATCHES)),
                               strict=True):
            (tmp / name).write_bytes(batch_pickle(name, train[0][chunk], np.asarray(train[1])[chunk]))
        (tmp / TEST_BATCHES[0]).write_bytes(batch_pickle(TEST_BATCHES[0], *test))
        (tmp / META).write_bytes(meta_pickle(class_names))
    return final


# --- a folder of batches -----------------------------------------------------

def batch_dir(root: str | os.PathLike) -> Path | None:
    """The folder holding the batch files: ``root/cifar-10-batches-py`` or ``root`` itself."""
    root = Path(root)
    for folder in (root / FOLDER, root):
        if all((folder / name).is_file() for name in BATCH_FILES):
            return folder
    return None


def check_folder(root: str | os.PathLike) -> Path:
    """The batch folder under ``root``; :class:`~pipeline.sources.labeled.MissingFilesError`
    naming every expected file when there is none (and no archive to extract)."""
    root = Path(root)
    if (folder := batch_dir(root)) is not None:
        return folder
    near = root / FOLDER if (root / FOLDER).is_dir() else root
    missing = [name for name in BATCH_FILES if not (near / name).is_file()]
    raise missing_files_error("CIFAR-10", near, missing, BATCH_FILES,
                              f"put them (or {ARCHIVE}) there, or leave local_dir empty to download")


def verify_batches(folder: str | os.PathLike, md5s: Mapping[str, str]) -> dict[str, str]:
    """MD5 of each batch file, checked against the published ``md5s`` (file -> md5);
    :class:`~pipeline.net.download.ChecksumError` names every file that differs."""
    folder = Path(folder)
    got = {name: file_hashes(folder / name, ("md5",))["md5"] for name in BATCH_FILES}
    bad = [f"{name} md5 {got[name]} (published {md5s[name]})" for name in BATCH_FILES
           if md5s.get(name) and got[name] != md5s[name].lower()]
    if bad:
        raise ChecksumError(f"CIFAR-10 batches in {folder} differ from the published ones: "
                            f"{'; '.join(bad)}; fetch {ARCHIVE} again")
    return got


def extract_batches(archive: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Extract the batch files of ``cifar-10-python.tar.gz`` into
    ``root/cifar-10-batches-py`` (atomically: complete or absent); kept if present."""
    final = Path(root) / FOLDER
    if batch_dir(final) == final:
        return final
    with atomic_dir(final) as tmp:
        written = extract_tar(archive, tmp, strip_components=1,
                              select=lambda name: name in BATCH_FILES)
        missing = sorted(set(BATCH_FILES) - set(written))
        if missing:
            raise ValueError(f"{archive} lacks {', '.join(missing)}; it is not {ARCHIVE}, "
                             f"delete it and download it again")
    return final


class CIFAR10Source(LabeledSource):
    """The 60,000 CIFAR-10 images of a batch folder: keys ``train/00000.png``
    (``data_batch_1`` first) ... ``test/09999.png``, label in ``meta``."""

    def __init__(self, root: str | os.PathLike):
        self.folder = check_folder(root)
        super().__init__("cifar10", self._load_all, load_class_names(self.folder / META))

    def _load_all(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for partition, names in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES)):
            batches = [load_batch(self.folder / name) for name in names]
            out[partition] = (np.concatenate([b[0] for b in batches]),
                              np.concatenate([b[1] for b in batches]))
        return out
