"""LSUN: download a category's LMDB zip and export its images to folders.

LSUN ships each category as a zipped LMDB whose values are encoded images
(WebP for the scenes, JPEG for the objects) keyed by an id. The export walks
the database with a cursor, in key order, writing shards of ``shard_size``
files (``out/00000/<id>.webp``, original bytes, format from magic bytes) so
the whole database is never in memory. Each shard folder appears atomically,
and a re-run skips the shards already there.

No checksums are published for the LSUN zips, so a download is verified by
reading the whole zip back (every member's CRC-32) before it gets its name.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from pipeline.atomic import atomic_dir, write_json
from pipeline.jsonl import write_jsonl
from pipeline.net.archive import DEFAULT_MAX_RATIO, extract_zip
from pipeline.net.download import RemoteFile
from pipeline.sources.base import DirectorySource

log = logging.getLogger(__name__)

#: URL patterns of the LSUN server, as in the official download.py
#: (github.com/fyu/lsun); overridable from the config.
SCENES_URL = "http://dl.yf.io/lsun/scenes/{category}_{split}_lmdb.zip"
OBJECTS_URL = "http://dl.yf.io/lsun/objects/{category}.zip"
SCENE_CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room",
                    "dining_room", "kitchen", "living_room", "restaurant", "tower")
OBJECT_CATEGORIES = ("airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
                     "chair", "cow", "dining_table", "dog", "horse", "motorbike", "person",
                     "potted_plant", "sheep", "sofa", "train", "tv-monitor")
EXPORT_INFO = "lsun_export.json"
#: Images per exported shard folder.
EXPORT_SHARD_SIZE = 10_000
REJECTED = "rejected.jsonl"

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


def lsun_remote_file(category: str, split: str = "train", scenes_url: str = SCENES_URL,
                     objects_url: str = OBJECTS_URL) -> RemoteFile:
    """The zip of one LSUN category (scenes have train/val splits; objects
    come as one zip). Size and hashes are unknown: see :func:`verify_zip`."""
    if category in SCENE_CATEGORIES:
        if split not in ("train", "val"):
            raise ValueError(f"LSUN split must be 'train' or 'val', got {split!r}")
        url = scenes_url.format(category=category, split=split)
    elif category in OBJECT_CATEGORIES:
        url = objects_url.format(category=category)
    else:
        raise ValueError(f"unknown LSUN category {category!r}; choose one of "
                         f"{', '.join(SCENE_CATEGORIES + OBJECT_CATEGORIES)}")
    return RemoteFile(name=url.rsplit("/", 1)[-1], urls=(url,))


def verify_zip(path: str | os.PathLike) -> None:
    """Read every member back and check its CRC-32: the only integrity check
    there is for LSUN. Raises ValueError naming the zip and the bad member."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path} is not a readable zip ({exc}); delete it and download again") from None
    if bad is not None:
        raise ValueError(f"{path}: member {bad!r} fails its CRC check; delete the zip and "
                         f"download again")


def image_format(data: bytes) -> str | None:
    """File suffix for encoded image bytes, from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    return None


def file_stem(key: bytes) -> str:
    """A file name for an LMDB key: the key itself when it is a plain ASCII
    id (LSUN's are 40-hex SHA-1s), its hex form otherwise."""
    try:
        text = key.decode("ascii")
        if _SAFE_KEY.match(text):
            return text
    except UnicodeDecodeError:
        pass
    return "x" + key.hex()


def find_lmdb(root: str | os.PathLike, what: str | None = None) -> Path:
    """The folder holding ``data.mdb`` under ``root`` (LSUN zips nest it);
    ``what`` names the source in the error (default: ``root``)."""
    root = Path(root)
    found = sorted(p.parent for p in root.rglob("data.mdb"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one LMDB (data.mdb) in {what or root}, found "
                                f"{len(found)}" + ("; it is not an LSUN zip: delete it and download "
                                                   "it again" if what else ""))
    return found[0]


def check_lmdb(root: str | os.PathLike, what: str | None = None) -> Path:
    """:func:`find_lmdb`, then open the database and read its header: raises
    ValueError naming ``what`` when LMDB cannot read it."""
    lmdb_dir = find_lmdb(root, what)
    try:
        import lmdb  # only LSUN needs it
    except ModuleNotFoundError:
        raise ModuleNotFoundError("reading LSUN needs the lmdb package: pip install lmdb") from None
    try:
        env = lmdb.open(str(lmdb_dir), readonly=True, lock=False, readahead=False, max_readers=1)
        try:
            with env.begin() as txn:
                txn.stat()
        finally:
            env.close()
    except lmdb.Error as exc:
        raise ValueError(f"{what or lmdb_dir}: {lmdb_dir.name}/data.mdb is not a readable LMDB "
                         f"({exc}); delete it and download it again") from None
    return lmdb_dir


@dataclass
class ExportStats:
    """Counts of one export run: entries in the database, shards written now
    and skipped as already done, images written and entries rejected now."""
    entries: int = 0
    shards: int = 0
    written_shards: int = 0
    skipped_shards: int = 0
    images: int = 0
    rejected: int = 0


def _check_export_info(out: Path, entries: int, shard_size: int, lmdb_dir: Path) -> None:
    info = {"entries": entries, "shard_size": shard_size, "lmdb": lmdb_dir.name}
    path = out / EXPORT_INFO
    if path.exists():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in info} != info:
            raise ValueError(f"{out} holds an export of {old.get('lmdb')} ({old.get('entries')} "
                             f"entries, shard_size {old.get('shard_size')}), not of {lmdb_dir.name} "
                             f"({entries}, {shard_size}); delete {out} or export elsewhere")
    else:
        write_json(path, info)


def _write_shard(cursor, count: int, folder: Path, stats: ExportStats) -> None:
    rejected = []
    for _ in range(count):
        key, value = cursor.key(), cursor.value()
        suffix = image_format(value)
        if suffix is None:
            rejected.append({"key": key.hex(), "reason": "not a JPEG/PNG/WebP/GIF/BMP image",
                             "bytes": len(value)})
        else:
            (folder / f"{file_stem(key)}.{suffix}").write_bytes(value)
            stats.images += 1
        cursor.next()
    if rejected:
        stats.rejected += len(rejected)
        write_jsonl(folder / REJECTED, rejected)


def export_lmdb(lmdb_dir: str | os.PathLike, out_dir: str | os.PathLike,
                shard_size: int = EXPORT_SHARD_SIZE,
                progress: Callable[[int, int], None] | None = None) -> ExportStats:
    """Write every image of the LMDB at ``lmdb_dir`` into shard folders under
    ``out_dir``; resumable. Entries that are not images go to the shard's
    ``rejected.jsonl`` with a reason, so every entry is accounted for.
    ``progress(shards_done, shards_total)`` is called after each shard."""
    try:
        import lmdb  # only LSUN needs it
    except ModuleNotFoundError:
        raise ModuleNotFoundError("exporting LSUN needs the lmdb package: pip install lmdb") from None

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    lmdb_dir, out = Path(lmdb_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(lmdb_dir), readonly=True, lock=False, readahead=False,
                    meminit=False, max_readers=1)
    stats = ExportStats()
    try:
        with env.begin(buffers=False) as txn:
            stats.entries = txn.stat()["entries"]
            stats.shards = math.ceil(stats.entries / shard_size)
            _check_export_info(out, stats.entries, shard_size, lmdb_dir)
            cursor = txn.cursor()
            cursor.first()
            for index in tqdm(range(stats.shards), desc=f"export {lmdb_dir.name}", unit="shard",
                              disable=None, leave=False):
                count = min(shard_size, stats.entries - index * shard_size)
                final = out / f"{index:05d}"
                if final.is_dir():
                    stats.skipped_shards += 1
                    for _ in range(count):  # keys only: the values' pages are not touched
                        cursor.next()
                else:
                    with atomic_dir(final) as tmp:
                        _write_shard(cursor, count, tmp, stats)
                    stats.written_shards += 1
                if progress is not None:
                    progress(index + 1, stats.shards)
    finally:
        env.close()
    log.info("LSUN export %s -> %s: %s", lmdb_dir, out, stats)
    return stats


def extract_lmdb(zip_path: str | os.PathLike, work_dir: str | os.PathLike,
                 max_bytes: int = 128 << 30, max_ratio: float = DEFAULT_MAX_RATIO) -> Path:
    """Unpack an LSUN zip into ``work_dir/<zip stem>/`` (safe, atomic) and
    return the LMDB folder inside it.

    The extraction is verified (:func:`check_lmdb`) before it appears under
    its name, so a zip without a readable LMDB leaves nothing behind and fails
    the same way on every run. A folder already there is verified too, and
    extracted again when it fails (an earlier version published unverified ones).
    """
    zip_path = Path(zip_path)
    final = Path(work_dir) / zip_path.stem
    if final.is_dir():
        try:
            return check_lmdb(final, str(zip_path))
        except (OSError, ValueError) as exc:
            log.warning("%s does not verify (%s); extracting %s again", final, exc, zip_path)
    with atomic_dir(final) as tmp:
        extract_zip(zip_path, tmp, max_bytes=max_bytes, max_members=1000, max_ratio=max_ratio)
        check_lmdb(tmp, str(zip_path))
    return find_lmdb(final)


class LSUNSource(DirectorySource):
    """The exported images of one category; keys ``00000/<id>.webp``, meta
    ``lsun_key`` (the LMDB id) and ``category``."""

    def __init__(self, root: str | os.PathLike, category: str | None = None):
        self.category = category
        super().__init__(root, name=f"lsun-{category}" if category else "lsun",
                         meta_for=self._meta)

    def _meta(self, key: str) -> dict:
        meta = {"lsun_key": Path(key).stem}
        if self.category:
            meta["category"] = self.category
        return meta
