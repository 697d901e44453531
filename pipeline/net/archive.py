"""Safe extraction of zip and tar archives from the internet.

Every member is checked before a byte of it is written: no absolute paths, no
``..``, no symlinks, hard links, devices or fifos, and every resolved path must
stay inside the target folder. Member count, total bytes and the compression
ratio (per member and in all) are capped so a zip bomb or a mislabelled file
fails fast. Tar extraction additionally runs through tarfile's
``filter="data"`` as a second line of defence.

Callers wrap the target in :func:`pipeline.atomic.atomic_dir`, so a refused
archive leaves nothing behind.
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

#: Default cap on the bytes one archive may extract to (CelebA's zip holds
#: 1.4 GB, an LSUN scene LMDB up to ~43 GB).
DEFAULT_MAX_BYTES = 64 << 30
#: Default cap on the members of one archive (CelebA's zip has 202,600).
DEFAULT_MAX_MEMBERS = 1_000_000
#: Default cap on the compression ratio (bytes out per byte in), per member and
#: in all. Photos and LMDBs of photos compress about 1:1, label text about 5:1;
#: a zip bomb 1000:1 (deflate's limit) or far more when nested.
DEFAULT_MAX_RATIO = 100
#: Members, and archives, expanding to no more than this may have any ratio:
#: a small file of repeated text compresses far better than 100:1 and is no bomb.
RATIO_FLOOR = 1 << 20

Select = Callable[[str], bool]


class UnsafeArchiveError(ValueError):
    """A member would escape the target, is a link/device, or breaks a cap."""


def _refuse(archive: str, name: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: refusing member {name!r}: {reason}")


def check_name(archive: str, name: str) -> PurePosixPath:
    """The member name as a relative POSIX path, or an error naming it.

    Refuses empty and absolute names, drive letters, backslashes, NUL bytes
    and any ``..`` component rather than silently rewriting them. The root
    entry ``./`` many tars start with comes back as an empty path.
    """
    if not name or "\x00" in name:
        raise _refuse(archive, name, "empty name or NUL byte")
    if "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, name, "Windows-style path")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise _refuse(archive, name, "absolute path")
    if ".." in path.parts:
        raise _refuse(archive, name, "'..' in path")
    return PurePosixPath(*(p for p in path.parts if p != "."))


def resolve_inside(archive: str, name: str, target: Path) -> Path:
    """``target/name`` resolved, after checking it stays inside ``target``
    (which also catches symlinks already present under the target)."""
    rel = check_name(archive, name)
    root = target.resolve()
    dest = (root / rel).resolve()
    if dest != root and root not in dest.parents:
        raise _refuse(archive, name, f"resolves to {dest}, outside {root}")
    return dest


def check_tar_member(archive: str, member: tarfile.TarInfo) -> None:
    """Only regular files and folders may be extracted from a tar."""
    check_name(archive, member.name)
    if member.issym():
        raise _refuse(archive, member.name, f"symlink to {member.linkname!r}")
    if member.islnk():
        raise _refuse(archive, member.name, f"hard link to {member.linkname!r}")
    if member.ischr() or member.isblk():
        raise _refuse(archive, member.name, "device file")
    if member.isfifo():
        raise _refuse(archive, member.name, "fifo")
    if not (member.isreg() or member.isdir()):
        raise _refuse(archive, member.name, f"unsupported tar member type {member.type!r}")


def check_zip_member(archive: str, info: zipfile.ZipInfo) -> None:
    """Zip entries carry a Unix mode in ``external_attr``; refuse anything
    that is not a regular file or folder (zipfile would write a symlink's
    target as file content, other tools would follow it)."""
    check_name(archive, info.filename)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        what = "symlink" if stat.S_ISLNK(mode) else "device file or fifo"
        raise _refuse(archive, info.filename, what)
    if info.flag_bits & 0x1:
        raise _refuse(archive, info.filename, "encrypted entry")


@dataclass
class Budget:
    """Running member, byte and compressed-byte counts against the caps of one archive.

    ``packed`` is how many compressed bytes the member took where the archive
    says so (zip); for tars, :class:`_Position` reports how far the compressed
    stream has been read, and a member's share is known when the next one starts.
    """
    archive: str
    max_bytes: int = DEFAULT_MAX_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS
    max_ratio: float = DEFAULT_MAX_RATIO
    members: int = 0
    bytes: int = 0
    packed: int = 0

    def add(self, name: str, size: int, packed: int | None = None) -> None:
        self.members += 1
        self.bytes += size
        if self.members > self.max_members:
            raise _refuse(self.archive, name, f"more than {self.max_members} members "
                                              f"(raise max_members if the archive is genuine)")
        if self.bytes > self.max_bytes:
            raise _refuse(self.archive, name, f"more than {self.max_bytes} bytes in all "
                                              f"(raise max_bytes if the archive is genuine)")
        if packed is not None:
            self.packed += packed
            self.check_ratio(name, size, packed)
            self.check_ratio(name, self.bytes, self.packed, " in all")

    def check_ratio(self, name: str, size: int, packed: int, what: str = "") -> None:
        """Refuse ``size`` bytes from ``packed`` compressed ones over ``max_ratio``."""
        if size > RATIO_FLOOR and size > self.max_ratio * max(packed, 1):
            raise _refuse(self.archive, name, f"compression ratio {size / max(packed, 1):.0f}{what} "
                                              f"is over the cap of {self.max_ratio:g} (raise "
                                              f"max_ratio if the archive is genuine)")


class _Position(io.RawIOBase):
    """A readable archive file that knows how many of its (compressed) bytes
    were consumed: its position where it can tell, else the bytes read."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.read_count = raw, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.raw.seekable()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.read_count += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def consumed(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, AttributeError, ValueError):
            return self.read_count


class _TarRatio:
    """The ratio checks of one tar: each member's compressed share is what
    the stream advanced between its header and the next one (or the end)."""

    def __init__(self, budget: Budget, position: _Position):
        self.budget, self.position = budget, position
        self.last: tuple[str, int, int] | None = None  # name, size, position at its header
        self.done = 0  # bytes of the members whose data has been passed

    def member(self, name: str, size: int) -> None:
        self.finish()
        self.last = (name, size, self.position.consumed())

    def finish(self) -> None:
        if self.last is None:
            return
        name, size, start = self.last
        now = self.position.consumed()
        self.budget.check_ratio(name, size, now - start)
        self.done += size
        self.budget.check_ratio(name, self.done, now, " in all")
        self.last = None

    def reading(self, name: str, size_so_far: int) -> None:
        """While a member is read: refuse as soon as its ratio is over the cap."""
        _, _, start = self.last
        self.budget.check_ratio(name, size_so_far, self.position.consumed() - start)


class _CheckedReader(io.RawIOBase):
    """A tar member's data, refused mid-read when it expands past the ratio cap."""

    def __init__(self, data: IO[bytes], ratio: _TarRatio, name: str):
        self.data, self.ratio, self.name, self.count = data, ratio, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.data.read(len(buffer))
        buffer[:len(data)] = data
        self.count += len(data)
        self.ratio.reading(self.name, self.count)
        return len(data)


def _strip(archive: str, name: str, components: int) -> PurePosixPath | None:
    rel = check_name(archive, name)
    return PurePosixPath(*rel.parts[components:]) if len(rel.parts) > components else None


def _check_free_space(archive: str, target: Path, needed: int) -> None:
    free = shutil.disk_usage(target).free
    if needed > free:
        raise OSError(f"{archive}: extracting needs {needed} bytes but {target} has {free} free; "
                      f"free some space or extract elsewhere")


def _copy_capped(src: IO[bytes], dest: Path, archive: str, name: str, declared: int) -> None:
    """Copy a member, trusting no more bytes than its header declared."""
    written = 0
    with open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > declared:
                raise _refuse(archive, name, f"holds more than its declared {declared} bytes")
            out.write(chunk)


def extract_zip(path: str | os.PathLike, target: str | os.PathLike, *,
                max_bytes: int = DEFAULT_MAX_BYTES, max_members: int = DEFAULT_MAX_MEMBERS,
                max_ratio: float = DEFAULT_MAX_RATIO, strip_components: int = 0,
                select: Select | None = None) -> list[str]:
    """Extract the zip at ``path`` into ``target`` and return the written
    POSIX paths (relative to ``target``). All members are checked first (the
    zip's directory gives each one's compressed size), so a refused archive
    writes nothing. ``select`` filters on the stripped name."""
    archive, target = str(path), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path) as zf:
        budget = Budget(archive, max_bytes, max_members, max_ratio)
        plan = []
        for info in zf.infolist():
            check_zip_member(archive, info)
            rel = _strip(archive, info.filename, strip_components)
            if rel is None or (select is not None and not select(rel.as_posix())):
                continue
            budget.add(info.filename, info.file_size, info.compress_size)
            plan.append((info, rel, resolve_inside(archive, rel.as_posix(), target)))
        _check_free_space(archive, target, budget.bytes)
        written = []
        for info, rel, dest in plan:
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src:
                _copy_capped(src, dest, archive, info.filename, info.file_size)
            written.append(rel.as_posix())
    return written


def _open_tar(source: str | os.PathLike | IO[bytes]) -> tuple[tarfile.TarFile, str, bool, _Position]:
    """Random access for files on disk (cheap skips), streaming otherwise;
    the returned :class:`_Position` tells how much of the source was consumed."""
    if isinstance(source, (str, os.PathLike)):
        position = _Position(open(source, "rb"))
        try:
            return tarfile.open(fileobj=position, mode="r:*"), str(source), True, position
        except BaseException:
            position.raw.close()
            raise
    position = _Position(source)
    name = str(getattr(source, "name", "<tar stream>"))
    return tarfile.open(fileobj=position, mode="r|*"), name, False, position


def iter_tar_files(source: str | os.PathLike | IO[bytes], *, archive: str | None = None,
                   max_bytes: int = DEFAULT_MAX_BYTES, max_members: int = DEFAULT_MAX_MEMBERS,
                   max_ratio: float = DEFAULT_MAX_RATIO,
                   ) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    """Stream the regular files of a tar as ``(member, readable)`` pairs,
    checking each member (and the caps) before it is handed out; folders are
    skipped. The readable refuses to go past the ratio cap while it is read.
    Works on non-seekable streams, e.g. a tar inside a tar."""
    tar, name, _, position = _open_tar(source)
    archive = archive or name
    budget = Budget(archive, max_bytes, max_members, max_ratio)
    ratio = _TarRatio(budget, position)
    try:
        with tar:
            for member in tar:
                check_tar_member(archive, member)
                budget.add(member.name, member.size)
                ratio.member(member.name, member.size)
                if member.isreg():
                    data = tar.extractfile(member)
                    yield member, io.BufferedReader(_CheckedReader(data, ratio, member.name), 1 << 20)
            ratio.finish()
    finally:
        if position.raw is not source:
            position.raw.close()


def extract_tar(source: str | os.PathLike | IO[bytes], target: str | os.PathLike, *,
                max_bytes: int = DEFAULT_MAX_BYTES, max_members: int = DEFAULT_MAX_MEMBERS,
                max_ratio: float = DEFAULT_MAX_RATIO, strip_components: int = 0,
                select: Select | None = None, archive: str | None = None) -> list[str]:
    """Extract a tar (any compression) into ``target``; return the written
    POSIX paths. A tar on disk is checked whole before anything is written
    (reading its members decompresses it once, which measures the ratios);
    a stream is checked member by member (wrap ``target`` in atomic_dir)."""
    tar, name, seekable, position = _open_tar(source)
    archive, target = archive or name, Path(target)
    target.mkdir(parents=True, exist_ok=True)
    budget = Budget(archive, max_bytes, max_members, max_ratio)
    ratio = _TarRatio(budget, position)

    def accept(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        check_tar_member(archive, member)
        ratio.member(member.name, member.size)
        rel = _strip(archive, member.name, strip_components)
        if rel is None or (select is not None and not select(rel.as_posix())):
            return None
        budget.add(member.name, member.size)
        resolve_inside(archive, rel.as_posix(), target)
        return member.replace(name=rel.as_posix(), deep=False)

    written = []
    try:
        with tar:
            if seekable:
                plan = [(m, r) for m in tar if (r := accept(m)) is not None]  # lazily: ratios
                ratio.finish()
                _check_free_space(archive, target, budget.bytes)
            else:
                plan = ((m, r) for m in tar if (r := accept(m)) is not None)
            for member, renamed in plan:
                try:
                    tar.extract(renamed, target, filter="data")
                except tarfile.FilterError as exc:
                    raise _refuse(archive, member.name, str(exc)) from exc
                if renamed.isreg():
                    written.append(renamed.name)
            ratio.finish()
    finally:
        if position.raw is not source:
            position.raw.close()
    return written


def extract(path: str | os.PathLike, target: str | os.PathLike, **limits) -> list[str]:
    """Extract a zip or tar file, chosen by content rather than suffix."""
    if zipfile.is_zipfile(path):
        return extract_zip(path, target, **limits)
    if tarfile.is_tarfile(path):
        return extract_tar(path, target, **limits)
    raise UnsafeArchiveError(f"{path}: neither a zip nor a tar archive; re-download it")
