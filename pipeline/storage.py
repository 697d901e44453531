"""Object storage for ``[paths] raw`` and ``processed``: the bucket holds the data, each machine
works in a local mirror of it.

A root is a local folder (the default; then nothing here runs) or a URL that fsspec opens
(``s3://bucket/prefix``; ``gs://bucket/prefix`` with gcsfs installed). For a URL root every
stage still reads and writes local paths, under ``{cache}/mirror/{scheme}/{bucket}/{prefix}``
(:meth:`Store.local`), and a :class:`Store` moves files between the mirror and the bucket by
three rules:

* **Done means in the bucket.** A file output is done when its object exists; a folder output
  when its ``_MANIFEST.json`` object exists, which is uploaded after every file in it (Luigi's
  ``S3FlagTarget`` idea), so a half-uploaded folder never counts (:meth:`Store.done`).
* **Inputs come through a content-addressed cache.** Before a task runs, the files its
  requirements wrote are fetched from their manifests into ``{cache}/objects/{sha256}`` and hard
  linked into the mirror (:meth:`Store.pull`), so a second run, a second task or a second path
  to the same bytes (a record version links its shards' files) downloads nothing.
* **Outputs are uploaded whole, markers last.** After a task runs, every file under its output
  folders that the bucket lacks or that the task changed is uploaded from the local file (one PUT
  each; bytes already uploaded in the same push are copied server-side), then the folders'
  manifests, then the task's file outputs (:meth:`Store.push`).

A manifest (``{"files": {relative path: {"size", "sha256"}}}``) lists what a folder holds; a
folder written by several tasks (``aligned/{dataset}/{version}``: the shards, the plan, the
summaries) keeps one manifest that each push extends.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pipeline.net.download import file_hashes

MANIFEST = "_MANIFEST.json"
#: Seconds a manifest read from the bucket is reused within a process (another machine's push
#: to the same folder shows after at most this long).
MANIFEST_TTL = 30.0
#: Local files never uploaded: atomic writers' temporaries and lock files (pipeline/atomic.py).
_SKIP_PREFIX = ".tmp-"
_SKIP_SUFFIXES = (".lock",)


class StorageError(RuntimeError):
    """A storage setting a user has to fix; the message is one line naming the root and the setting."""


def is_url(root: str | os.PathLike) -> bool:
    """Whether a ``[paths]`` root names object storage (``scheme://...``) rather than a folder."""
    return "://" in str(root) and not str(root).startswith("file://")


@dataclass(frozen=True)
class Root:
    """One ``[paths]`` root in object storage: its setting, URL and local mirror folder."""
    setting: str  # "raw" or "processed": named in error messages
    url: str      # s3://bucket/prefix, no trailing slash
    local: Path   # the mirror folder


def mirror_folder(cache: str | os.PathLike, url: str) -> Path:
    """``{cache}/mirror/{scheme}/{bucket}/{prefix}``: readable, and two roots never collide."""
    scheme, rest = url.split("://", 1)
    return Path(cache, "mirror", scheme, *[p for p in rest.split("/") if p])


def _skipped(rel: str) -> bool:
    return any(part.startswith(_SKIP_PREFIX) or part == MANIFEST for part in rel.split("/")) \
        or rel.endswith(_SKIP_SUFFIXES)


def local_files(folder: Path) -> dict[str, os.stat_result]:
    """Files under ``folder`` (relative POSIX path -> stat), temporaries and locks left out."""
    out = {}
    if folder.is_file():
        return {"": folder.stat()}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            if not _skipped(rel):
                out[rel] = path.stat()
    return out


def _filesystem(protocol: str, endpoint_url: str | None):
    import fsspec

    options: dict = {"skip_instance_cache": True}
    if protocol == "s3":
        # Listings are not cached: other machines write the same bucket. Few retries and short
        # timeouts, so an unreachable endpoint is reported in seconds, not minutes.
        options.update(use_listings_cache=False,
                       config_kwargs={"connect_timeout": 5, "read_timeout": 60,
                                      "retries": {"max_attempts": 2}})
        if endpoint_url:
            options["client_kwargs"] = {"endpoint_url": endpoint_url}
    try:
        return fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as e:
        raise StorageError(f"no file system for {protocol}:// ({e}); install its fsspec package "
                           f"(s3fs for s3://, gcsfs for gs://)") from None


class Store:
    """The bucket side of the ``[paths]`` roots that are URLs, and the local mirror of them.

    ``roots``: the URL roots (local roots are not the store's business); ``cache``: the folder
    of the mirror and the content-addressed objects; ``endpoint_url``: the S3 endpoint
    (``[s3] endpoint_url``; empty for AWS itself).
    """

    def __init__(self, roots: list[Root], cache: Path, endpoint_url: str | None = None):
        self.roots, self.cache, self.endpoint_url = roots, Path(cache), endpoint_url or None
        protocols = {r.url.split("://", 1)[0] for r in roots}
        self.fs = {p: _filesystem(p, self.endpoint_url) for p in protocols}
        self.objects = self.cache / "objects"
        self.cache.mkdir(parents=True, exist_ok=True)
        # Requests cost tens of milliseconds and Luigi asks the same questions many times in a run:
        # a done output stays done; a manifest read in the last MANIFEST_TTL seconds is reused.
        self._done: set[str] = set()
        self._manifests: dict[str, tuple[float, dict | None]] = {}

    # -- where things are --------------------------------------------------------------------
    def root_of(self, path: str | os.PathLike) -> Root | None:
        path = Path(os.path.abspath(path))
        for root in self.roots:
            if path == root.local.absolute() or root.local.absolute() in path.parents:
                return root
        return None

    def url(self, path: str | os.PathLike) -> str:
        """The object URL of a mirror path."""
        root = self.root_of(path)
        if root is None:
            raise ValueError(f"{path} is not under a mirrored root")
        rel = Path(os.path.abspath(path)).relative_to(root.local.absolute()).as_posix()
        return root.url if rel == "." else f"{root.url}/{rel}"

    def _fs(self, url: str):
        return self.fs[url.split("://", 1)[0]]

    # -- checks before any work --------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`StorageError` (one line) unless every root's bucket can be read and
        written with the credentials at hand: an unreachable endpoint, missing credentials, a
        missing bucket and a denied write are told apart. Writes and deletes one probe object."""
        for root in self.roots:
            fs = self._fs(root.url)
            where = f"[paths] {root.setting} = {root.url}"
            endpoint = self.endpoint_url or "the provider's default endpoint"
            bucket = root.url.split("://", 1)[1].split("/", 1)[0]
            if root.url.startswith("s3://"):
                import botocore.session
                if botocore.session.get_session().get_credentials() is None:
                    raise StorageError(f"{where}: no credentials found; set AWS_ACCESS_KEY_ID and "
                                       f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment")
            try:
                fs.info(bucket)
                exists = True
            except FileNotFoundError:
                exists = False
            except PermissionError as e:
                raise StorageError(f"{where}: access to bucket {bucket!r} denied ({_short(e)}); use "
                                   f"credentials that may read and write it") from None
            except Exception as e:  # connection errors come wrapped differently by each fsspec backend
                raise StorageError(f"{where}: cannot reach {endpoint} ({_short(e)}); set endpoint_url "
                                   f"under [s3] in luigi.cfg (or --s3-endpoint-url) to a reachable "
                                   f"server") from None
            if not exists:
                raise StorageError(f"{where}: bucket {bucket!r} does not exist at {endpoint}; create "
                                   f"it or fix [paths] {root.setting}")
            probe = f"{root.url}/.facegan-write-check-{secrets.token_hex(4)}"
            try:
                fs.pipe_file(probe, b"")
                fs.rm_file(probe)
            except Exception as e:
                raise StorageError(f"{where}: cannot write {probe} ({_short(e)}); grant these "
                                   f"credentials write access (s3:PutObject, s3:DeleteObject) to "
                                   f"{root.url}/*") from None

    # -- done means in the bucket ------------------------------------------------------------
    def done(self, path: str | os.PathLike, folder: bool) -> bool:
        """Whether the output at mirror ``path`` is in the bucket: a folder's manifest, or the
        file itself (then fetched into the mirror, so what reads it while scheduling finds it)."""
        url = self.url(path)
        if url in self._done and (folder or Path(path).exists()):
            return True
        found = self._done_in_bucket(url, Path(path), folder)
        if found:
            self._done.add(url)
        return found

    def _done_in_bucket(self, url: str, path: Path, folder: bool) -> bool:
        fs = self._fs(url)
        if folder:
            return _has(fs, f"{url}/{MANIFEST}")
        try:
            info = fs.info(url)
        except FileNotFoundError:
            return False
        if info.get("type") == "directory":  # a folder output not declared as one
            return _has(fs, f"{url}/{MANIFEST}")
        if not path.is_file() or path.stat().st_size != info["size"] or not _same_etag(path, info):
            self._download([(url, path)])
        return True

    # -- inputs --------------------------------------------------------------------------------
    def manifest(self, folder: str | os.PathLike) -> dict | None:
        """The manifest of the folder at mirror path ``folder``, or None."""
        url = f"{self.url(folder)}/{MANIFEST}"
        cached = self._manifests.get(url)
        if cached is not None and time.monotonic() - cached[0] < MANIFEST_TTL:
            return cached[1]
        try:
            found = json.loads(self._fs(url).cat_file(url))
        except FileNotFoundError:
            found = None
        self._manifests[url] = (time.monotonic(), found)
        return found

    def pull(self, folders: Iterable[str | os.PathLike]) -> int:
        """Make the mirror hold every file the manifests of ``folders`` list (mirror paths; a
        folder without a manifest is skipped). Returns the bytes downloaded."""
        fetched = 0
        for folder in folders:
            folder = Path(folder)
            if self.root_of(folder) is None:
                continue
            manifest = self.manifest(folder)
            if manifest is None:
                continue
            fetched += self._materialize(folder, manifest["files"])
        return fetched

    def _object(self, sha: str) -> Path:
        return self.objects / sha[:2] / sha

    def _valid(self, obj: Path, size: int) -> bool:
        """A cached object is valid while nobody wrote it: its mtime stays the epoch that
        :meth:`_adopt` set (mirror files are hard links to it, and a task may append in place)."""
        try:
            st = obj.stat()
        except FileNotFoundError:
            return False
        return st.st_mtime_ns == 0 and st.st_size == size

    def _adopt(self, local: Path, sha: str) -> None:
        """Put the finished file ``local`` into the object cache under its content hash."""
        obj = self._object(sha)
        obj.parent.mkdir(parents=True, exist_ok=True)
        if self._valid(obj, local.stat().st_size):
            _link(obj, local)
            return
        tmp = obj.with_name(f".tmp-{obj.name}-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.link(local, tmp)
        os.utime(tmp, ns=(0, 0))
        if obj.exists() and os.path.samefile(tmp, obj):
            tmp.unlink()
        else:
            os.replace(tmp, obj)

    def _materialize(self, folder: Path, files: dict[str, dict]) -> int:
        wanted, downloads = [], []
        for rel, entry in files.items():
            local = folder / rel if rel else folder
            obj = self._object(entry["sha256"])
            if self._valid(obj, entry["size"]):
                _link(obj, local)
                continue
            wanted.append((rel, entry, local))
        if not wanted:
            return 0
        staging = Path(tempfile.mkdtemp(prefix=".tmp-pull-", dir=self.cache))
        try:
            for i, (rel, _, _) in enumerate(wanted):
                downloads.append((f"{self.url(folder)}/{rel}" if rel else self.url(folder), staging / str(i)))
            self._download(downloads)
            for (rel, entry, local), (_, got) in zip(wanted, downloads):
                sha = file_hashes(got)["sha256"]
                if sha != entry["sha256"]:
                    raise RuntimeError(f"{self.url(folder)}/{rel}: content changed since its manifest "
                                       f"was written (sha256 {sha[:12]} != {entry['sha256'][:12]}); "
                                       f"re-run the task that writes it")
                obj = self._object(sha)
                obj.parent.mkdir(parents=True, exist_ok=True)
                os.utime(got, ns=(0, 0))
                os.replace(got, obj)
                _link(obj, local)
                self._remember(sha, f"{self.url(folder)}/{rel}" if rel else self.url(folder))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return sum(entry["size"] for _, entry, _ in wanted)

    def _download(self, pairs: list[tuple[str, Path]]) -> None:
        """Fetch objects to local paths, each through a temporary beside it (concurrently where
        the backend can)."""
        if not pairs:
            return
        fs = self._fs(pairs[0][0])
        tmps = []
        for _, local in pairs:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmps.append(local.with_name(f".tmp-{local.name}-{os.getpid()}-{secrets.token_hex(3)}"))
        try:
            fs.get([u for u, _ in pairs], [str(t) for t in tmps])
            for tmp, (_, local) in zip(tmps, pairs):
                os.replace(tmp, local)
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)

    # -- outputs -------------------------------------------------------------------------------
    def snapshot(self, folders: Iterable[Path]) -> dict[str, tuple]:
        """(size, mtime, inode) of every file under ``folders``, keyed by absolute path: what
        :meth:`push` compares against to find what a task changed."""
        out = {}
        for folder in folders:
            folder = Path(folder)
            for rel, st in local_files(folder).items():
                out[str((folder / rel).absolute()) if rel else str(folder.absolute())] = \
                    (st.st_size, st.st_mtime_ns, st.st_ino)
        return out

    def push(self, areas: list[Path], folder_outputs: list[Path], file_outputs: list[Path],
             before: dict[str, tuple]) -> dict:
        """Upload what a task wrote: every file under ``areas`` (mirror folders) that changed
        since ``before`` (:meth:`snapshot`) or that the bucket lacks, then a manifest for each
        of ``folder_outputs`` (every file in it) and each area (its manifest extended), then
        ``file_outputs`` last. Returns counts: files (uploaded or copied), bytes sent, copies."""
        uploads: dict[Path, str] = {}  # local file -> sha256
        folder_outputs = [*folder_outputs, *[p for p in file_outputs if Path(p).is_dir()]]
        file_outputs = [p for p in file_outputs if not Path(p).is_dir()]
        last = {Path(p).absolute() for p in file_outputs}
        for area in areas:
            area = Path(area)
            if self.root_of(area) is None or not area.exists():
                continue
            files = local_files(area)
            # Only a file the task left unchanged can be missing from the bucket unnoticed; when
            # it found the folder empty, every file is new and no listing is needed.
            seen = any(str((area / rel).absolute()) in before for rel in files)
            remote = self._remote_sizes(area) if seen else {}
            for rel, st in files.items():
                path = (area / rel).absolute()
                key = (st.st_size, st.st_mtime_ns, st.st_ino)
                if before.get(str(path)) != key or remote.get(rel) != st.st_size:
                    uploads[path] = ""
        for path in uploads:
            uploads[path] = file_hashes(path)["sha256"]
        first = [p for p in uploads if p not in last]
        copies = set(self._upload(first, uploads))
        manifests = []
        for folder in [*map(Path, folder_outputs), *[Path(a) for a in areas]]:
            folder = folder.absolute()
            if self.root_of(folder) is None or not folder.is_dir() or folder in [m for m, _ in manifests]:
                continue
            full = folder in [Path(f).absolute() for f in folder_outputs]
            files = {} if full else dict((self.manifest(folder) or {"files": {}})["files"])
            for rel, st in local_files(folder).items():
                path = folder / rel
                if full or path in uploads:
                    sha = uploads.get(path) or file_hashes(path)["sha256"]
                    files[rel] = {"size": st.st_size, "sha256": sha}
            manifests.append((folder, files))
        # Inner folders first: an area's manifest is its folder outputs' marker too.
        for folder, files in sorted(manifests, key=lambda m: -len(m[0].parts)):
            url = f"{self.url(folder)}/{MANIFEST}"
            self._put_bytes(url, json.dumps({"files": files}, indent=1, sort_keys=True).encode())
            self._manifests[url] = (time.monotonic(), {"files": files})
        copies.update(self._upload([p for p in uploads if p in last], uploads))
        for path, sha in uploads.items():
            self._adopt(path, sha)
        sent = sum(p.stat().st_size for p in uploads if p not in copies)
        return {"files": len(uploads), "bytes": sent, "server_side_copies": len(copies)}

    def _remote_sizes(self, folder: Path) -> dict[str, int]:
        url = self.url(folder)
        fs = self._fs(url)
        try:
            found = fs.find(url, detail=True)
        except FileNotFoundError:
            return {}
        prefix = url.split("://", 1)[1].rstrip("/") + "/"
        return {name[len(prefix):]: info["size"] for name, info in found.items() if name.startswith(prefix)}

    def _upload(self, paths: list[Path], shas: dict[Path, str]) -> list[Path]:
        """Upload ``paths``; a file whose bytes the bucket already holds (uploaded in this batch,
        or pushed or pulled through this cache before: a record version links its shards' files)
        is copied server-side instead. Returns the files copied."""
        first: dict[str, str] = {}
        puts, copies = [], []
        for path in paths:
            url, sha = self.url(path), shas[path]
            source = first.get(sha) or self._known_url(sha)
            if source is not None and source != url:
                copies.append((source, url, path))
            else:
                first[sha] = url
                puts.append((path, url))
        if puts:
            fs = self._fs(puts[0][1])
            fs.put([str(p) for p, _ in puts], [u for _, u in puts])
            for path, url in puts:
                self._remember(shas[path], url)
        copied = []
        for source, url, path in copies:
            try:
                self._fs(url).copy(source, url)
                copied.append(path)
            except FileNotFoundError:  # the object we knew of is gone: upload the bytes
                self._fs(url).put_file(str(path), url)
            self._remember(shas[path], url)
        return copied

    def _known_url(self, sha: str) -> str | None:
        try:
            return self._object(sha).with_suffix(".url").read_text().strip() or None
        except FileNotFoundError:
            return None

    def _remember(self, sha: str, url: str) -> None:
        """Where the bucket holds these bytes (``objects/../{sha}.url``), for server-side copies."""
        where = self._object(sha).with_suffix(".url")
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = where.with_name(f".tmp-{where.name}-{os.getpid()}")
        tmp.write_text(url)
        os.replace(tmp, where)

    def _put_bytes(self, url: str, data: bytes) -> None:
        """A small object, written to a local temporary and uploaded whole."""
        with tempfile.NamedTemporaryFile(dir=self.cache, prefix=".tmp-put-", delete=False) as fh:
            fh.write(data)
        try:
            self._fs(url).put_file(fh.name, url)
        finally:
            os.unlink(fh.name)


def _same_etag(path: Path, info: dict) -> bool:
    """Whether a small local file holds the object's bytes, by the MD5 an S3 ETag is for a
    single-part upload (other stores: unknown, so no)."""
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if len(etag) != 32 or info["size"] > 1 << 20:
        return info["size"] > 1 << 20  # a large file of the right size is taken as it is
    return file_hashes(path, ("md5",))["md5"] == etag


def _has(fs, url: str) -> bool:
    """Whether the object exists; errors other than not-found propagate (fsspec's ``exists``
    answers False to an unreachable endpoint, which would make finished work run again)."""
    try:
        fs.info(url)
        return True
    except FileNotFoundError:
        return False


def _link(obj: Path, local: Path) -> None:
    """Make ``local`` a hard link to the cached object, replacing what was there atomically."""
    if local.exists() and os.path.samefile(obj, local):
        return  # rename(2) of two links to one file does nothing and would leave the temporary
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".tmp-{local.name}-{os.getpid()}-{secrets.token_hex(3)}")
    os.link(obj, tmp)
    os.replace(tmp, local)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
