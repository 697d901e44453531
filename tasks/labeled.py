"""Labeled data sets as raw tasks: MNIST and CIFAR-10 (``--dataset mnist`` / ``cifar10``).

Each task downloads the official files (URLs and published checksums in
luigi.cfg) or checks a copy on disk (``local_dir``, used in place), verifies
them, and writes ``source.json`` last, saying which checksum each file
matched. ``source()`` is a :class:`pipeline.sources.labeled.LabeledSource`;
``layout = "labeled"`` tells BuildTFRecords to write labeled records straight
from it (no alignment).
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import luigi

from pipeline.atomic import write_json
from pipeline.net.download import RemoteFile, download
from pipeline.sources.base import checksums
from pipeline.sources.labeled import LabeledSource
from tasks.common import Report, raw_dir, version
from tasks.downloads import _FetchParams, _local, _memo
from tasks.errors import ConfigError

logger = logging.getLogger("luigi-interface")


class _LabeledDownload(_FetchParams):
    """What MNIST and CIFAR-10 share (a mixin, not a task): ``local_dir`` or a
    download of ``files`` into ``raw/{raw_name}/``; the marker of a local copy
    is ``raw/{raw_name}-local/{version}/source.json``."""
    #: Records layout of this source (BuildTFRecords writes it without alignment).
    layout = "labeled"
    raw_name = ""

    def remote_files(self) -> list:
        raise NotImplementedError

    def root(self) -> Path:
        """Where the data files are: ``local_dir``, or the download folder."""
        return _local(self.local_dir) or raw_dir(self.raw_name)

    def output_dir(self) -> Path:
        return raw_dir(f"{self.raw_name}-local", version(self)) if _local(self.local_dir) else raw_dir(self.raw_name)

    def check(self) -> None:
        """Raise a one-line error for a bad configuration or missing local files."""
        family = self.get_task_family()
        if not _local(self.local_dir):
            if not self.remote_files():
                raise ConfigError(f"[{family}] files is empty: set it (see luigi.cfg) or set "
                                  f"[{family}] local_dir to a copy on disk")
            return
        try:
            self.check_local(_local(self.local_dir))
        except FileNotFoundError as exc:
            raise type(exc)(f"{exc} ([{family}] local_dir)") from None

    def check_local(self, root: Path) -> None:
        raise NotImplementedError

    def _spec_error(self, exc: Exception) -> ValueError:
        family = self.get_task_family()
        return ConfigError(f"[{family}] files: bad entry ({exc}); each needs name, urls and "
                           f"optionally size, sha256, md5")

    def source_class(self) -> type[LabeledSource]:
        raise NotImplementedError

    def source(self) -> LabeledSource:
        """The data set as a :class:`LabeledSource` over :meth:`root` (one per process)."""
        root = self.root()
        return _memo((self.raw_name, str(root)), partial(self.source_class(), root), root,
                     Path(self.output().path))

    def finish(self, matched: dict[str, dict]) -> None:
        """Log what each file's checksum matched and write the marker (last)."""
        self._log_matches(matched)
        source = self.source()
        write_json(self.output().path, {
            "name": self.raw_name, "root": str(self.root().resolve()), "local_dir": self.local_dir,
            "files": matched, "examples": {p: len(images) for p, (images, _) in source.arrays.items()},
            "image_shape": list(source.image_shape), "class_names": source.class_names})

    def _log_matches(self, matched: dict[str, dict]) -> None:
        family = self.get_task_family()
        for name, result in matched.items():
            if result["matched"] == "unchecked":
                logger.warning("%s %s: not verified (no published checksum configured)", family, name)
            elif result["matched"] == "decompressed":
                logger.info("%s %s: decompressed checksum matched (the .gz, md5 %s, is not the published "
                            "file; its content, md5 %s, is)", family, name, result["md5"], result["content_md5"])
            else:
                logger.info("%s %s: %s checksum matched", family, name, result["matched"])


# --- MNIST --------------------------------------------------------------------

class DownloadMNIST(_LabeledDownload, luigi.Task):
    """MNIST's four IDX ``.gz`` files, downloaded and verified into ``raw/mnist/``,
    or a folder holding them (``local_dir``), verified and used in place.

    A file passes when its ``.gz`` has the published checksums, or its
    decompressed content the published content MD5 (a re-compressed copy);
    ``source.json`` records which, per file (``files.<name>.matched``).
    """
    raw_name = "mnist"
    local_dir = luigi.Parameter(default="", description="Folder holding train-images-idx3-ubyte.gz, "
                                "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                                "t10k-labels-idx1-ubyte.gz, used in place; empty = download.")
    files = luigi.ListParameter(default=checksums("mnist")["files"], significant=False,
                                description="The official files as a JSON list of {name, urls, size, md5, "
                                "sha256, content_md5 (MD5 after gunzip)} (default: "
                                "pipeline/sources/checksums/mnist.json).")

    def published(self) -> dict:
        from pipeline.sources.mnist import FILE_NAMES, GzipFile
        try:
            specs = {spec["name"]: GzipFile.from_dict(spec) for spec in self.files}
        except (KeyError, TypeError, ValueError) as exc:
            raise self._spec_error(exc) from None
        if specs and sorted(specs) != sorted(FILE_NAMES):
            raise ValueError(f"[DownloadMNIST] files: expected entries for {', '.join(FILE_NAMES)}, "
                             f"got {', '.join(sorted(specs))}")
        return specs

    def remote_files(self) -> list:
        return [f.remote for f in self.published().values()]

    def check_local(self, root: Path) -> None:
        from pipeline.sources.mnist import check_folder
        self.published()
        check_folder(root)

    def run(self):
        from pipeline.sources.mnist import FILE_NAMES, MAX_GZ_BYTES, GzipFile, verify_gz

        self.check()
        published, root = self.published(), self.root()
        matched: dict[str, dict] = {}
        if _local(self.local_dir):
            for name in FILE_NAMES:
                matched[name] = verify_gz(root / name, published.get(name, GzipFile(RemoteFile(name, ("-",)))))
        else:
            report = Report(self, "MiB downloaded", unit=1 << 20)
            for name in FILE_NAMES:
                spec = published[name]
                # The transfer is checked by verify_gz (either checksum), not by the
                # .gz's size and hashes alone, which a re-compressed mirror fails.
                bare = RemoteFile(name, spec.remote.urls)

                def check(path, spec=spec):
                    matched[spec.name] = verify_gz(path, spec)

                download(bare, root, **self.fetch_options(), check=check, progress=report,
                         max_bytes=MAX_GZ_BYTES)
            report.close()
        self.finish(matched)

    def source_class(self) -> type[LabeledSource]:
        from pipeline.sources.mnist import MNISTSource
        return MNISTSource


# --- CIFAR-10 -----------------------------------------------------------------

class DownloadCIFAR10(_LabeledDownload, luigi.Task):
    """CIFAR-10's python batches: ``cifar-10-python.tar.gz`` downloaded into
    ``raw/cifar10/``, verified and extracted to ``cifar-10-batches-py/``; or a
    ``local_dir`` holding the extracted batches (used in place) or the archive
    (verified, extracted under ``raw/cifar10-local/``). The batch files are
    checked against their published MD5s (``batches``) either way;
    ``source.json`` says what matched (``archive`` and ``batches``).
    """
    raw_name = "cifar10"
    local_dir = luigi.Parameter(default="", description="Folder holding cifar-10-batches-py/ "
                                "(data_batch_1..5, test_batch, batches.meta), those files themselves, "
                                "or cifar-10-python.tar.gz; empty = download.")
    files = luigi.ListParameter(default=checksums("cifar10")["files"], significant=False,
                                description="The archive as a JSON list of one {name, urls, size, md5, sha256} "
                                "(default: pipeline/sources/checksums/cifar10.json).")
    batches = luigi.DictParameter(default=checksums("cifar10")["batches"], significant=False,
                                  description="Published MD5 of each batch file, as a JSON object {file name: "
                                  "md5} (default: pipeline/sources/checksums/cifar10.json).")

    def remote_files(self) -> list[RemoteFile]:
        try:
            return [RemoteFile.from_dict(spec) for spec in self.files]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._spec_error(exc) from None

    def _archive(self) -> RemoteFile:
        from pipeline.sources.cifar import ARCHIVE
        remote = next((f for f in self.remote_files() if f.name == ARCHIVE), None)
        return remote or RemoteFile(ARCHIVE, ("-",))

    def check_local(self, root: Path) -> None:
        from pipeline.sources.cifar import ARCHIVE, check_folder
        if not (root / ARCHIVE).is_file():
            check_folder(root)

    def root(self) -> Path:
        """The folder holding ``cifar-10-batches-py/`` (or the batches)."""
        from pipeline.sources.cifar import batch_dir
        local = _local(self.local_dir)
        if local is None or batch_dir(local) is None:
            return self.output_dir()  # a download, or a local archive extracted into raw/
        return local

    def run(self):
        from pipeline.net.download import verify_file
        from pipeline.sources.cifar import ARCHIVE, check_folder, extract_batches, verify_batches

        self.check()
        local, root = _local(self.local_dir), self.root()
        archive = None
        if local is None:
            report = Report(self, "MiB downloaded", unit=1 << 20)
            archive = download(self._archive(), root, **self.fetch_options(), progress=report)
            report.close()
        elif root != local:
            archive = local / ARCHIVE
            verify_file(archive, self._archive())
        matched = {}
        if archive is not None:
            checked = self._archive().md5 or self._archive().sha256
            matched[ARCHIVE] = {"matched": "archive" if checked else "unchecked", "path": str(archive)}
            extract_batches(archive, root)
        md5s = verify_batches(check_folder(root), dict(self.batches))
        matched["batches"] = {"matched": "batches" if self.batches else "unchecked", "md5": md5s}
        self.finish(matched)

    def source_class(self) -> type[LabeledSource]:
        from pipeline.sources.cifar import CIFAR10Source
        return CIFAR10Source

