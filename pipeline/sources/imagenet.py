"""ImageNet (ILSVRC2012 train) imported from a copy the user already has.

ImageNet cannot be downloaded without an account, so the import starts from
``ILSVRC2012_img_train.tar`` (a tar of per-class tars ``n01440764.tar`` ...)
or a folder holding either per-synset subfolders or the per-class tars.
Everything is streamed (the tar is 138 GB), checked with the rules of
:mod:`pipeline.net.archive`, optionally filtered to a synset allow-list, and
written one synset folder at a time, atomically: ``out/n01440764/*.JPEG``.
A re-run skips synsets already imported. The train tar can be checked
against its published MD5 first (:func:`verify_md5`; opt-in, as it reads all
138 GB once more).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable

from tqdm import tqdm

from pipeline.atomic import atomic_dir
from pipeline.net.archive import UnsafeArchiveError, check_name, iter_tar_files
from pipeline.sources.base import IMAGE_SUFFIXES, DirectorySource, list_images

log = logging.getLogger(__name__)

#: The published MD5 of the train archive (torchvision's imagenet.py).
TRAIN_TAR_MD5 = "1d675b47d978889d74fa0da5fadfb00e"
HOW_TO_GET = ("ImageNet cannot be downloaded without an account: register at "
              "https://image-net.org/download-images, download ILSVRC2012_img_train.tar (138 GB, "
              f"MD5 {TRAIN_TAR_MD5}) and set [ImportImageNet] archive = /path/to/"
              "ILSVRC2012_img_train.tar (or to a folder of per-synset subfolders or per-class "
              "tars) in luigi.cfg")
#: Caps per class tar (the largest train class holds 1,300 images, ~150 MB).
CLASS_MAX_BYTES = 4 << 30
CLASS_MAX_MEMBERS = 20_000

_SYNSET = re.compile(r"^n\d{8}$")


class ImageNetNotConfigured(FileNotFoundError):
    """No ImageNet archive was given; the message says how to get one."""


def verify_md5(path: str | os.PathLike, md5: str = TRAIN_TAR_MD5) -> None:
    """Raise ValueError unless the file at ``path`` has MD5 ``md5``."""
    from pipeline.net.download import file_hashes
    actual = file_hashes(path, ("md5",))["md5"]
    if actual != md5.lower():
        raise ValueError(f"{path}: MD5 {actual} is not the published {md5}; the archive is damaged "
                         f"or another file: download ILSVRC2012_img_train.tar again")


def parse_synsets(value: str | Iterable[str] | None) -> frozenset[str] | None:
    """An allow-list from a config value ("n01440764, n01443537" or a list);
    ``None``/empty means every synset."""
    if value is None:
        return None
    items = re.split(r"[\s,]+", value) if isinstance(value, str) else list(value)
    synsets = frozenset(s.strip() for s in items if s and s.strip())
    bad = sorted(s for s in synsets if not _SYNSET.match(s))
    if bad:
        raise ValueError(f"not WordNet synset ids (like n01440764): {', '.join(bad)}; fix "
                         f"[ImportImageNet] synsets")
    return synsets or None


@dataclass
class ImportStats:
    """What one import run did, per synset."""
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)    # already in out_dir
    filtered: list[str] = field(default_factory=list)   # not in the allow-list
    images: int = 0
    ignored: list[str] = field(default_factory=list)    # entries that are no synset/image


def _write_class_tar(stream: IO[bytes], label: str, dest: Path, ignored: list[str]) -> int:
    """Stream one per-class tar into ``dest`` (flat, as ImageNet's are).
    Links, devices and escaping names are refused; files that are not images
    are listed in ``ignored``."""
    count = 0
    for member, data in iter_tar_files(stream, archive=label, max_bytes=CLASS_MAX_BYTES,
                                       max_members=CLASS_MAX_MEMBERS):
        name = check_name(label, member.name).name
        if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            ignored.append(f"{label}:{member.name}")
            continue
        target = dest / name
        if target.exists():
            raise UnsafeArchiveError(f"{label}: refusing member {member.name!r}: duplicate name")
        with open(target, "wb") as out:
            shutil.copyfileobj(data, out, 1 << 20)
        count += 1
    return count


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when on the same file system (no extra space), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_folder(src: Path, dest: Path) -> int:
    keys = list_images(src)
    for key in keys:
        target = dest / key
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(src / key, target)
    return len(keys)


def _synset_of(name: str) -> str | None:
    stem = name[:-4] if name.endswith(".tar") else name
    return stem if _SYNSET.match(stem) else None


class _Importer:
    """Shared bookkeeping: allow-list, skip-if-done, atomic synset folders."""

    def __init__(self, out: Path, synsets: frozenset[str] | None,
                 progress: Callable[[str, int], None] | None):
        self.out, self.synsets, self.progress = out, synsets, progress
        self.stats = ImportStats()
        self.seen: set[str] = set()
        self.bar = tqdm(desc="import ImageNet", unit="synset", disable=None, leave=False)

    def wants(self, synset: str) -> bool:
        self.seen.add(synset)
        if self.synsets is not None and synset not in self.synsets:
            self.stats.filtered.append(synset)
            return False
        if (self.out / synset).is_dir():
            self.stats.skipped.append(synset)
            return False
        return True

    def write(self, synset: str, fill: Callable[[Path], int]) -> None:
        with atomic_dir(self.out / synset) as tmp:
            count = fill(tmp)
        self.stats.imported.append(synset)
        self.stats.images += count
        self.bar.update(1)
        if self.progress is not None:
            self.progress(synset, count)

    def finish(self, archive: Path) -> ImportStats:
        self.bar.close()
        missing = sorted((self.synsets or set()) - self.seen)
        if missing:
            raise ValueError(f"synsets not found in {archive}: {', '.join(missing)}; fix "
                             f"[ImportImageNet] synsets (the synsets found were imported)")
        return self.stats


def import_imagenet(archive: str | os.PathLike | None, out_dir: str | os.PathLike,
                    synsets: str | Iterable[str] | None = None,
                    progress: Callable[[str, int], None] | None = None,
                    md5: str | None = None) -> ImportStats:
    """Import ImageNet train images into ``out_dir/<synset>/``.

    ``archive`` is ILSVRC2012_img_train.tar or a folder (per-synset subfolders
    and/or per-class tars). ``synsets`` restricts the import; a requested
    synset absent from the archive is an error (after the others are done).
    ``progress(synset, images)`` is called after each synset. With ``md5`` a
    tar archive is verified against it before anything is imported.
    """
    if archive is None or str(archive).strip() == "":
        raise ImageNetNotConfigured(HOW_TO_GET)
    archive = Path(archive)
    if not archive.exists():
        raise ImageNetNotConfigured(f"{archive} does not exist. {HOW_TO_GET}")
    if md5 is not None and archive.is_file():
        verify_md5(archive, md5)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job = _Importer(out, parse_synsets(synsets), progress)
    if archive.is_dir():
        for entry in sorted(archive.iterdir()):
            synset = _synset_of(entry.name)
            if synset is None or not (entry.is_dir() or entry.name.endswith(".tar")):
                job.stats.ignored.append(entry.name)
            elif job.wants(synset):
                if entry.is_dir():
                    job.write(synset, lambda tmp, src=entry: _write_folder(src, tmp))
                else:
                    with open(entry, "rb") as fh:
                        job.write(synset, lambda tmp, f=fh, n=str(entry): _write_class_tar(
                            f, n, tmp, job.stats.ignored))
    else:
        for member, data in iter_tar_files(archive, max_members=10_000, max_bytes=256 << 30):
            name = check_name(str(archive), member.name).name
            synset = _synset_of(name)
            if synset is None or not name.endswith(".tar"):
                job.stats.ignored.append(member.name)
            elif job.wants(synset):
                label = f"{archive}:{member.name}"
                job.write(synset, lambda tmp, f=data, n=label: _write_class_tar(
                    f, n, tmp, job.stats.ignored))
    return job.finish(archive)


class ImageNetSource(DirectorySource):
    """Imported ImageNet images; keys ``n01440764/n01440764_10026.JPEG``,
    meta ``synset`` (the folder, a WordNet id)."""

    def __init__(self, root: str | os.PathLike):
        super().__init__(root, name="imagenet", meta_for=self._meta)

    @staticmethod
    def _meta(key: str) -> dict:
        return {"synset": key.split("/", 1)[0]}
