"""CelebA (aligned & cropped, 178x218) as a :class:`~pipeline.sources.base.Source`.

The layout is the official one (also what torchvision and TFDS expect)::

    root/img_align_celeba/000001.jpg ...        (or img_align_celeba.zip)
    root/list_attr_celeba.txt                    40 attributes, -1/1
    root/identity_CelebA.txt                     identity per image
    root/list_landmarks_align_celeba.txt         5 points in aligned coordinates
    root/list_eval_partition.txt                 0 train, 1 validation, 2 test

Label files may also come in the Kaggle CSV layout (``image_id,...`` header,
e.g. ``list_landmarks_align_celeba.csv``), and a copy may be partial (a subset
of images, label files cut short or missing): :func:`check_local_dir` lists
what is missing and refuses such a copy unless ``allow_partial`` is set.

Metadata per key (the image file name):

- ``attributes``: ``{name: bool}``, True where the official file says 1. Booleans
  (not -1/1) because every consumer (records, the EGAN attribute loss) wants
  0/1 targets, and JSON keeps them unambiguous.
- ``identity``: int, ``partition``: "train" | "validation" | "test",
  ``landmarks``: ``{"lefteye": [x, y], ...}`` in pixels of the aligned image;
  each only when its label file (and a row for the image) exists.

File names, sizes and checksums of the official release are config data
(luigi.cfg), handed in as :class:`pipeline.net.download.RemoteFile` objects.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from pipeline.atomic import atomic_dir
from pipeline.net.archive import extract_zip
from pipeline.net.download import RemoteFile, download
from pipeline.sources.base import IMAGE_SUFFIXES, DirectorySource

log = logging.getLogger(__name__)

IMAGES_DIR = "img_align_celeba"
IMAGES_ZIP = "img_align_celeba.zip"
ATTRIBUTES = "list_attr_celeba.txt"
IDENTITY = "identity_CelebA.txt"
LANDMARKS = "list_landmarks_align_celeba.txt"
PARTITION = "list_eval_partition.txt"
#: Label files of the official release, in the order they are reported.
LABEL_FILES = (ATTRIBUTES, IDENTITY, LANDMARKS, PARTITION)
#: Images in the official aligned release (rows of every label file).
NUM_IMAGES = 202_599
PARTITION_NAMES = {0: "train", 1: "validation", 2: "test"}
LANDMARK_POINTS = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")

_ATTRIBUTE_VALUES = {"1": 1, "-1": 0, "0": 0}
_ROW = re.compile(r"^\s*[^\s,]+\.(?:jpg|jpeg|png)[\s,]", re.I)


class IncompleteCopyError(FileNotFoundError):
    """A local CelebA copy lacks files; the message lists them."""


# --- label files --------------------------------------------------------------

def find_label_file(root: str | os.PathLike, official: str) -> Path | None:
    """The label file for ``official`` under ``root``: the official .txt, the
    Kaggle .csv, or a cut-down ``<stem>*.csv``/``<stem>*.txt`` copy."""
    root = Path(root)
    stem = Path(official).stem
    for candidate in (root / official, root / f"{stem}.csv"):
        if candidate.is_file():
            return candidate
    variants = sorted(p for p in root.glob(f"{stem}*") if p.suffix in (".csv", ".txt") and p.is_file())
    return variants[0] if variants else None


@dataclass(frozen=True)
class LabelTable:
    """A parsed label file: column names (empty when the file has no header)
    and the raw value tokens per image file name."""
    columns: tuple[str, ...]
    rows: dict[str, tuple[str, ...]]


def parse_label_lines(lines: Iterable[str], source: str = "<labels>") -> LabelTable:
    """Parse either layout: official whitespace text (optional count line,
    optional header line, CRLF or LF) or CSV with an ``image_id`` header."""
    columns: tuple[str, ...] = ()
    rows: dict[str, tuple[str, ...]] = {}
    width = None
    for number, line in enumerate(lines, 1):
        tokens = [t.strip() for t in line.split(",")] if "," in line else line.split()
        if not tokens or tokens == [""]:
            continue
        if os.path.splitext(tokens[0])[1].lower() not in IMAGE_SUFFIXES:
            if not rows and not columns and len(tokens) == 1 and tokens[0].isdigit():
                continue  # the official count line
            if not rows and not columns:
                columns = tuple(tokens[1:] if tokens[0].lower() == "image_id" else tokens)
                continue
            raise ValueError(f"{source}:{number}: expected '<image>.jpg <values>', got {line.strip()[:60]!r}")
        values = tuple(tokens[1:])
        width = width or len(values)
        if len(values) != width or (columns and len(values) != len(columns)):
            raise ValueError(f"{source}:{number}: {len(values)} values, expected "
                             f"{len(columns) or width}; the file is corrupt, fetch it again")
        rows[tokens[0]] = values
    return LabelTable(columns, rows)


def read_label_file(path: str | os.PathLike) -> LabelTable:
    """Parse a CelebA label file from disk (see :func:`parse_label_lines`)."""
    with open(path, encoding="utf-8", newline=None) as fh:
        return parse_label_lines(fh, str(path))


def count_rows(path: str | os.PathLike) -> int:
    """Image rows in a label file, without parsing their values."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return sum(1 for line in fh if _ROW.match(line))


def _ints(path: Path, table: LabelTable, width: int) -> dict[str, tuple[int, ...]]:
    out = {}
    for key, values in table.rows.items():
        if len(values) != width:
            raise ValueError(f"{path}: {key} has {len(values)} values, expected {width}")
        try:
            out[key] = tuple(int(v) for v in values)
        except ValueError:
            raise ValueError(f"{path}: {key} has a non-integer value in {values}") from None
    return out


@dataclass(frozen=True)
class CelebALabels:
    """Every label CelebA has for the images of one copy, kept compact
    (attribute rows as bytes of 0/1) so the full 202,599 rows fit easily."""
    attribute_names: tuple[str, ...]
    attributes: dict[str, bytes]
    identity: dict[str, int]
    partition: dict[str, str]
    landmarks: dict[str, tuple[int, ...]]

    def meta(self, key: str) -> dict:
        meta: dict = {}
        if key in self.attributes:
            row = self.attributes[key]
            meta["attributes"] = {n: bool(v) for n, v in zip(self.attribute_names, row, strict=True)}
        if key in self.identity:
            meta["identity"] = self.identity[key]
        if key in self.partition:
            meta["partition"] = self.partition[key]
        if key in self.landmarks:
            xy = self.landmarks[key]
            meta["landmarks"] = {p: [xy[2 * i], xy[2 * i + 1]] for i, p in enumerate(LANDMARK_POINTS)}
        return meta


def load_labels(root: str | os.PathLike) -> CelebALabels:
    """Read whichever label files ``root`` has; absent ones give empty maps."""
    root = Path(root)
    names: tuple[str, ...] = ()
    attributes: dict[str, bytes] = {}
    if path := find_label_file(root, ATTRIBUTES):
        table = read_label_file(path)
        names = table.columns
        if len(names) != 40:
            raise ValueError(f"{path}: header names {len(names)} attributes, expected 40")
        for key, row in table.rows.items():
            try:
                attributes[key] = bytes(_ATTRIBUTE_VALUES[v] for v in row)
            except KeyError:
                raise ValueError(f"{path}: {key} has attribute values outside -1/0/1") from None
    identity = {}
    if path := find_label_file(root, IDENTITY):
        identity = {k: v[0] for k, v in _ints(path, read_label_file(path), 1).items()}
    partition = {}
    if path := find_label_file(root, PARTITION):
        for key, (value,) in _ints(path, read_label_file(path), 1).items():
            if value not in PARTITION_NAMES:
                raise ValueError(f"{path}: {key} has partition {value}, expected 0, 1 or 2")
            partition[key] = PARTITION_NAMES[value]
    landmarks = {}
    if path := find_label_file(root, LANDMARKS):
        landmarks = _ints(path, read_label_file(path), 10)
    return CelebALabels(names, attributes, identity, partition, landmarks)


# --- a local copy ---------------------------------------------------------------

def image_dir(root: str | os.PathLike) -> Path | None:
    """The folder of aligned images (Kaggle nests it one level deeper)."""
    folder = Path(root) / IMAGES_DIR
    nested = folder / IMAGES_DIR
    if nested.is_dir() and not any(p.suffix.lower() == ".jpg" for p in folder.iterdir()):
        return nested
    return folder if folder.is_dir() else None


def _count_images(folder: Path) -> int:
    with os.scandir(folder) as it:
        return sum(1 for e in it if not e.name.startswith(".")
                   and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)


def _image_problems(root: Path, sizes: Mapping[str, int], expected: int | None) -> list[str]:
    folder = image_dir(root)
    if folder is not None:
        count = _count_images(folder)
        if count == 0:
            return [f"{IMAGES_DIR}/ (empty)"]
        if expected is not None and count < expected:
            return [f"{IMAGES_DIR}/ ({count} of {expected} images)"]
        return []
    archive = root / IMAGES_ZIP
    if not archive.is_file():
        return [f"{IMAGES_DIR}/ or {IMAGES_ZIP}"]
    size, want = archive.stat().st_size, sizes.get(IMAGES_ZIP)
    return [f"{IMAGES_ZIP} ({size} bytes, expected {want})"] if want and size != want else []


def _label_problems(root: Path, official: str, sizes: Mapping[str, int],
                    expected: int | None) -> list[str]:
    path = find_label_file(root, official)
    if path is None:
        return [official]
    want = sizes.get(official)
    if path.name == official and want:
        size = path.stat().st_size
        return [] if size == want else [f"{official} ({size} bytes, expected {want})"]
    rows = count_rows(path)
    if expected is not None and rows < expected:
        found = "" if path.name == official else f" in {path.name}"
        return [f"{official} ({rows} of {expected} rows{found})"]
    return []


def check_local_dir(local_dir: str | os.PathLike, sizes: Mapping[str, int] | None = None,
                    allow_partial: bool = False, expected_images: int | None = NUM_IMAGES,
                    ) -> list[str]:
    """What a local CelebA copy lacks, as one entry per missing/short file.

    ``sizes`` (official name -> bytes, from the config) are checked where the
    official file name is present; other copies are judged by their row
    count. Raises :class:`IncompleteCopyError` listing the problems unless
    ``allow_partial``, in which case they are logged and returned.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"CelebA local_dir {root} does not exist; set local_dir to the "
                                f"folder holding {IMAGES_DIR}/ and the label files")
    sizes = sizes or {}
    problems = _image_problems(root, sizes, expected_images)
    for official in LABEL_FILES:
        problems += _label_problems(root, official, sizes, expected_images)
    if problems and not allow_partial:
        raise IncompleteCopyError(f"CelebA copy {root} is incomplete: missing or short: "
                                  f"{', '.join(problems)}; add those files, or set "
                                  f"allow_partial=True to use it as it is")
    for problem in problems:
        log.warning("CelebA copy %s: missing or short: %s", root, problem)
    return problems


class CelebASource(DirectorySource):
    """The aligned CelebA images under ``root/img_align_celeba/`` with their labels.

    The copy is checked on construction (see :func:`check_local_dir`); what a
    partial copy lacks is kept in ``self.missing``. Labels are parsed on first
    use, once.
    """

    def __init__(self, root: str | os.PathLike, allow_partial: bool = False,
                 sizes: Mapping[str, int] | None = None,
                 expected_images: int | None = NUM_IMAGES):
        self.missing = check_local_dir(root, sizes, allow_partial, expected_images)
        folder = image_dir(root)
        if folder is None:
            raise FileNotFoundError(f"{Path(root) / IMAGES_DIR}/ not found; extract {IMAGES_ZIP} "
                                    f"first (pipeline.sources.celeba.extract_images)")
        super().__init__(folder, name="celeba", meta_for=self._meta)
        self.label_root = Path(root)
        self._labels: CelebALabels | None = None

    @property
    def labels(self) -> CelebALabels:
        if self._labels is None:
            self._labels = load_labels(self.label_root)
        return self._labels

    def _meta(self, key: str) -> dict:
        return self.labels.meta(key)


# --- download -----------------------------------------------------------------

def extract_images(zip_path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Unpack ``img_align_celeba.zip`` into ``root/img_align_celeba/`` (safe,
    atomic: the folder appears complete or not at all); kept if present."""
    final = Path(root) / IMAGES_DIR
    if final.is_dir():
        return final
    with atomic_dir(final) as tmp:
        written = extract_zip(zip_path, tmp, strip_components=1, select=lambda name: "/" not in name
                              and Path(name).suffix.lower() in IMAGE_SUFFIXES)
        if not written:
            raise ValueError(f"{zip_path} holds no images under {IMAGES_DIR}/; it is not the "
                             f"CelebA aligned zip, delete it and download it again")
    return final


def prepare_celeba(dest: str | os.PathLike, files: Sequence[RemoteFile],
                   local_dir: str | os.PathLike | None = None, allow_partial: bool = False,
                   **download_kwargs) -> Path:
    """A CelebA root ready for :class:`CelebASource`, and where it is.

    With ``local_dir`` the copy on disk is checked (sizes from ``files``) and
    used in place; otherwise every file is downloaded into ``dest``, verified
    (see :func:`pipeline.net.download.download`) and the images are extracted.
    """
    sizes = {f.name: f.size for f in files if f.size}
    if local_dir:
        check_local_dir(local_dir, sizes, allow_partial)
        return Path(local_dir)
    dest = Path(dest)
    for remote in files:
        if remote.name == IMAGES_ZIP and image_dir(dest) is not None:
            continue  # extracted already; the zip may have been deleted to save space
        download(remote, dest, **download_kwargs)
    if image_dir(dest) is None:
        extract_images(dest / IMAGES_ZIP, dest)
    return dest
