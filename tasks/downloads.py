"""Raw sources with real data: CelebA, LSUN and ImageNet as Luigi tasks.

Each task puts (or finds) its images on disk, verifies them, and writes a
``source.json`` marker last; the marker's existence is what makes the task
complete. ``source()`` returns the :class:`pipeline.sources.base.Source` that
alignment reads, so nothing downstream knows where the images came from.

Parameter values are checked when a task is built (an unknown LSUN category,
bad synset ids, ...); what needs the file system (no ImageNet archive, a
missing or partial local copy) is checked in ``complete()``, i.e. while Luigi
schedules, before any other task has run. Each is a
:class:`tasks.errors.ConfigError`: one line naming the key and the fix.
"""
from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path
from typing import Callable

import luigi

from pipeline.atomic import write_json
from pipeline.net.download import RemoteFile, download
from pipeline.net.httpclient import Policy
from pipeline.sources.base import Source, checksums, list_images
from pipeline.sources.celeba import (
    IMAGES_ZIP,
    LABEL_FILES,
    NUM_IMAGES,
    CelebASource,
    IncompleteCopyError,
    check_local_dir,
    extract_images,
    find_label_file,
    image_dir,
    prepare_celeba,
)
from pipeline.sources.imagenet import (
    HOW_TO_GET,
    TRAIN_TAR_MD5,
    ImageNetSource,
    import_imagenet,
    parse_synsets,
)
from pipeline.sources.lsun import (
    EXPORT_SHARD_SIZE,
    OBJECTS_URL,
    SCENES_URL,
    LSUNSource,
    export_lmdb,
    extract_lmdb,
    find_lmdb,
    lsun_remote_file,
    verify_zip,
)
from pipeline.versions import digest
from tasks import common
from tasks.common import Progress, Report, raw_dir, version
from tasks.errors import Checked, ConfigError, at_least, settings_of
from tasks.storage import target

MARKER = "source.json"


class _Marked(Checked):
    """A raw task complete when its ``source.json`` marker is in
    :meth:`output_dir` (a mixin, not a task). While it is not, ``complete()``
    runs :meth:`check`, so a bad configuration fails while Luigi schedules,
    before any other work."""

    def output_dir(self) -> Path:
        raise NotImplementedError

    def check(self) -> object:
        """Raise :class:`ConfigError` for what the disk says cannot work."""

    def output(self):
        return target(str(self.output_dir() / MARKER))

    def complete(self):
        if self.output().exists():
            return True
        self.check()
        return False


class _FetchParams(_Marked):
    """Network settings shared by the download tasks (a mixin, not a task)."""
    retries = luigi.IntParameter(default=Policy.retries, significant=False,
                                 description="Retries of a failed request or broken transfer in a "
                                             "row, with exponential backoff.")
    timeout = luigi.FloatParameter(default=Policy.read_timeout, significant=False,
                                   description="Seconds without data before a request is retried.")

    def validate(self):
        super().validate()
        with settings_of(self, rename={"read_timeout": "timeout"}):
            self.policy()

    def policy(self) -> Policy:
        return Policy(retries=self.retries, read_timeout=self.timeout)

    def fetch_options(self) -> dict:
        """The keyword arguments of :func:`pipeline.net.download.download` these settings give."""
        return {"policy": self.policy(), "allow": common.ALLOW_NETWORKS}


def _local(path: str) -> Path | None:
    return Path(os.path.expanduser(path)) if path and path.strip() else None


_SOURCES: dict[tuple, Source] = {}


def _memo(key: tuple, make: Callable[[], Source], *watched: Path) -> Source:
    """One Source per process and state of the ``watched`` paths (their mtimes).

    Alignment asks for the source in every shard task and while scheduling;
    listing 200k files and parsing CelebA's labels once per process instead
    (forked Luigi workers inherit it) saves seconds per shard. Adding or
    removing files in a watched folder, or a new marker, makes a fresh one.
    """
    key = (*key, *((str(p), p.stat().st_mtime_ns if p.exists() else None) for p in watched))
    if key not in _SOURCES:
        if len(_SOURCES) >= 8:
            _SOURCES.pop(next(iter(_SOURCES)))
        _SOURCES[key] = make()
    return _SOURCES[key]


# --- CelebA -------------------------------------------------------------------

class DownloadCelebA(_FetchParams, luigi.Task):
    """CelebA's aligned images and label files, downloaded and verified, or a
    copy on disk (``local_dir``) checked for the expected files and used in place.

    Output: ``raw/celeba/source.json`` after a download (the files lie next to
    it), ``raw/celeba-local/<version>/source.json`` for a local copy.
    """
    local_dir = luigi.Parameter(default="", description="Folder of a CelebA copy to use in place of "
                                "a download (img_align_celeba/ or img_align_celeba.zip, and the label "
                                "files); empty = download.")
    allow_partial = luigi.BoolParameter(default=False, description="Accept a copy that lacks files, "
                                        "images or label rows; what is missing is logged and "
                                        "recorded in source.json.")
    files = luigi.ListParameter(default=checksums("celeba")["files"], significant=False,
                                description="The official files as a JSON list of {name, urls, size, sha256, "
                                "md5}; a 'gdrive:<id>' url goes through Google Drive (default: "
                                "pipeline/sources/checksums/celeba.json).")
    num_images = luigi.IntParameter(default=NUM_IMAGES, significant=False,
                                    description="Images (and label rows) of a complete copy; "
                                                "a copy with fewer is partial.")

    def validate(self):
        super().validate()
        at_least(self, "num_images", 1)
        self.remote_files()

    def remote_files(self) -> list[RemoteFile]:
        try:
            return [RemoteFile.from_dict(spec) for spec in self.files]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"[DownloadCelebA] files: bad entry ({exc}); each needs name, urls "
                              f"and optionally size, sha256, md5") from None

    def sizes(self) -> dict[str, int]:
        return {f.name: f.size for f in self.remote_files() if f.size}

    def root(self) -> Path:
        """Where the images and label files are: the download folder, ``local_dir``,
        or, for a local copy that has only the zip, the folder it is extracted to."""
        local = _local(self.local_dir)
        if local is None:
            return raw_dir("celeba")
        if image_dir(local) is None and (local / IMAGES_ZIP).is_file():
            return self.output_dir()
        return local

    def output_dir(self) -> Path:
        if _local(self.local_dir):
            return raw_dir("celeba-local", version(self))
        return raw_dir("celeba")

    def check(self) -> list[str]:
        """What the copy lacks (local_dir only); raises unless ``allow_partial``."""
        if not _local(self.local_dir):
            if not self.remote_files():
                raise ConfigError("[DownloadCelebA] files is empty: set it (see luigi.cfg) or set "
                                  "[DownloadCelebA] local_dir to a copy on disk")
            return []
        try:
            return check_local_dir(_local(self.local_dir), self.sizes(), self.allow_partial,
                                   self.num_images)
        except IncompleteCopyError as exc:
            raise ConfigError(f"{exc} ([DownloadCelebA] allow_partial = true, or "
                              f"--DownloadCelebA-allow-partial)") from None
        except FileNotFoundError as exc:
            raise ConfigError(f"{exc} ([DownloadCelebA] local_dir)") from None

    def run(self):
        missing = self.check()
        local = _local(self.local_dir)
        if local and self.root() != local:  # only the zip: extract it, put the labels beside it
            extract_images(local / IMAGES_ZIP, self.root())
            for official in LABEL_FILES:
                if (path := find_label_file(local, official)) is not None:
                    shutil.copyfile(path, self.root() / path.name)
        if not local:
            report = Report(self, "MiB downloaded", unit=1 << 20)
            prepare_celeba(self.root(), self.remote_files(), progress=report, **self.fetch_options())
            report.close()
            missing = check_local_dir(self.root(), self.sizes(), self.allow_partial, self.num_images)
        write_json(self.output().path, {
            "name": "celeba", "root": str(self.root().resolve()), "local_dir": self.local_dir,
            "allow_partial": self.allow_partial, "missing": missing,
            "images": len(self.source())})

    def source(self) -> Source:
        root = self.root()
        return _memo(("celeba", str(root)), partial(_celeba_source, root),
                     root, image_dir(root) or root, Path(self.output().path))


def _celeba_source(root: Path) -> CelebASource:
    # Checked in run(); here only wholly missing files are logged again.
    source = CelebASource(root, allow_partial=True, expected_images=None)
    source.labels  # noqa: B018  (parse them once, before workers fork)
    return source


# --- LSUN ---------------------------------------------------------------------

class lsun(luigi.Config):
    """``--lsun-category`` / ``--lsun-split`` (or ``[lsun]``): the LSUN subset that
    ``--dataset lsun`` means, from any task's command line. Empty = the
    ``[DownloadLSUN]`` setting."""
    category = luigi.Parameter(default="", description="LSUN category for --dataset lsun "
                                                       "(overrides [DownloadLSUN] category).")
    split = luigi.Parameter(default="", description="LSUN split for --dataset lsun "
                                                    "(overrides [DownloadLSUN] split).")


class DownloadLSUN(_FetchParams, luigi.Task):
    """One LSUN category: its LMDB zip downloaded (verified by reading back
    every member's CRC), extracted, and its images exported to shard folders
    ``raw/lsun/<category>-<split>/00000/<id>.webp`` (objects: ``raw/lsun/<category>/``).
    """
    category = luigi.Parameter(default="bedroom", description="LSUN category: a scene (bedroom, "
                               "church_outdoor, ...) or an object (cat, dog, ...).")
    split = luigi.ChoiceParameter(default="train", choices=("train", "val"),
                                  description="Scene split; objects have only one, so it is ignored.")
    shard_size = luigi.IntParameter(default=EXPORT_SHARD_SIZE, description="Images per exported folder.")
    local_dir = luigi.Parameter(default="", significant=False, description="Folder holding the "
                                "category's zip (e.g. bedroom_train_lmdb.zip) or its extracted LMDB "
                                "(bedroom_train_lmdb/data.mdb); empty = download.")
    scenes_url = luigi.Parameter(default=SCENES_URL, significant=False,
                                 description="URL pattern of scene zips.")
    objects_url = luigi.Parameter(default=OBJECTS_URL, significant=False,
                                  description="URL pattern of object zips.")
    max_gib = luigi.IntParameter(default=64, significant=False,
                                 description="Refuse a download larger than this many GiB.")
    keep_lmdb = luigi.BoolParameter(default=False, significant=False,
                                    description="Keep the extracted LMDB after the export (the zip "
                                                "is kept either way).")

    @classmethod
    def for_dataset(cls) -> "DownloadLSUN":
        """The task ``--dataset lsun`` means: ``--lsun-category``/``--lsun-split``
        where given, else this task's own configuration."""
        flags = lsun()
        return cls(**{k: getattr(flags, k) for k in ("category", "split") if getattr(flags, k)})

    def validate(self):
        super().validate()
        at_least(self, "shard_size", 1)
        at_least(self, "max_gib", 1)
        self.remote_file()

    def remote_file(self) -> RemoteFile:
        try:
            return lsun_remote_file(self.category, self.split, self.scenes_url, self.objects_url)
        except ValueError as exc:
            raise ConfigError(f"[DownloadLSUN] category = {self.category!r}: {exc}; set "
                              f"--lsun-category (with --dataset lsun), --DownloadLSUN-category, or "
                              f"category under [DownloadLSUN] in luigi.cfg") from None

    def folder(self) -> Path:
        stem = Path(self.remote_file().name).stem
        name = self.category if stem == self.category else f"{self.category}-{self.split}"
        return raw_dir("lsun", name)

    def output_dir(self) -> Path:
        return self.folder()

    def check(self) -> None:
        if _local(self.local_dir):
            self._local_input()

    def _local_input(self) -> tuple[str, Path]:
        """("zip", path) or ("lmdb", folder) found under ``local_dir``."""
        root, remote = _local(self.local_dir), self.remote_file()
        stem = Path(remote.name).stem
        if (root / remote.name).is_file():
            return "zip", root / remote.name
        if (root / "data.mdb").is_file():
            return "lmdb", root
        if (root / stem).is_dir() and any((root / stem).rglob("data.mdb")):
            return "lmdb", find_lmdb(root / stem)
        raise ConfigError(f"[DownloadLSUN] local_dir {root} holds neither {remote.name} nor an "
                          f"extracted LMDB ({stem}/data.mdb); download {remote.urls[0]} there or fix "
                          f"it")

    def run(self):
        remote = self.remote_file()
        extracted = None
        if _local(self.local_dir):
            kind, path = self._local_input()
            if kind == "zip":
                verify_zip(path)
        else:
            kind = "zip"
            report = Report(self, "MiB downloaded", unit=1 << 20)
            path = download(remote, raw_dir("lsun", "downloads"), **self.fetch_options(), check=verify_zip,
                            progress=report, max_bytes=self.max_gib << 30)
            report.close()
        if kind == "zip":
            lmdb_dir = extract_lmdb(path, raw_dir("lsun", "lmdb"))
            extracted = raw_dir("lsun", "lmdb", Path(remote.name).stem)
        else:
            lmdb_dir = path
        report = Report(self, "shards exported")
        stats = export_lmdb(lmdb_dir, self.folder(), self.shard_size, report)
        report.close()
        images = len(self.source())
        write_json(self.output().path, {
            "name": "lsun", "category": self.category, "split": self.split, "url": remote.urls[0],
            "from": str(path), "entries": stats.entries, "shards": stats.shards,
            "images": images, "rejected": stats.entries - images})
        if extracted is not None and not self.keep_lmdb:
            shutil.rmtree(extracted, ignore_errors=True)

    def source(self) -> Source:
        return _memo(("lsun", str(self.folder()), self.category),
                     partial(LSUNSource, self.folder(), category=self.category), Path(self.output().path))


# --- ImageNet -------------------------------------------------------------------

class ImportImageNet(_Marked, luigi.Task):
    """ILSVRC2012 train images imported from a copy the user has (it cannot be
    downloaded without an account) into ``raw/imagenet/train[-<hash>]/<synset>/``.
    """
    archive = luigi.Parameter(default="", significant=False, description="ILSVRC2012_img_train.tar, "
                              "or a folder of per-synset subfolders or per-class tars.")
    synsets = luigi.Parameter(default="", description="WordNet ids to keep, comma or space "
                              "separated (e.g. n01440764,n02085620); empty = all 1000 classes.")
    verify_md5 = luigi.BoolParameter(default=False, significant=False,
                                     description="Check ILSVRC2012_img_train.tar against its "
                                                 "published MD5 before importing (reads the "
                                                 "138 GB once more).")

    def validate(self):
        self.allow_list()

    def allow_list(self) -> frozenset[str] | None:
        with settings_of(self, "synsets"):
            return parse_synsets(self.synsets)

    def folder(self) -> Path:
        keep = self.allow_list()
        if keep is None:
            return raw_dir("imagenet", "train")
        return raw_dir("imagenet", f"train-{digest(','.join(sorted(keep)))}")

    def output_dir(self) -> Path:
        return self.folder()

    def check(self) -> None:
        archive = _local(self.archive)
        if archive is None:
            raise ConfigError(HOW_TO_GET)
        if not archive.exists():
            raise ConfigError(f"[ImportImageNet] archive: {archive} does not exist. {HOW_TO_GET}")

    def run(self):
        keep = self.allow_list()
        progress = Progress(self, len(keep) if keep else 1000, "synsets")
        done = [0]

        def report(synset: str, images: int) -> None:
            done[0] += 1
            progress(done[0])

        stats = import_imagenet(_local(self.archive), self.folder(), keep, report,
                                md5=TRAIN_TAR_MD5 if self.verify_md5 else None)
        progress.close()
        write_json(self.output().path, {
            "name": "imagenet", "archive": str(self.archive), "synsets": sorted(keep) if keep else None,
            "imported_now": len(stats.imported), "skipped": len(stats.skipped),
            "images": len(list_images(self.folder())), "ignored": stats.ignored[:100],
            "ignored_count": len(stats.ignored)})

    def source(self) -> Source:
        return _memo(("imagenet", str(self.folder())), partial(ImageNetSource, self.folder()),
                     Path(self.output().path))
