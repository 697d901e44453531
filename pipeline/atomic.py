"""Atomic outputs: write under a hidden temporary name, then rename; and locks.

A killed task leaves only a ``.tmp-*`` sibling behind, never a file or folder
under the final name, so Luigi never mistakes a partial output for a finished
one. Temporaries carry the writer's PID; the next writer of the same output
removes those whose process is gone, never a live writer's (two workers may
write the same small file at once, e.g. a shard's key list).

Three ways in, one rule: :func:`atomic_file` (an open file), :func:`atomic_dir`
(an empty folder) and :func:`atomic_path` (a path, for libraries that write by
path themselves: Keras ``model.save``, ``tf.saved_model.save``, matplotlib
``savefig``, PIL ``Image.save``). :func:`locked` and :func:`lock_file` keep a
second writer out of an output that is appended to in place.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _prefix(final: Path) -> str:
    return f".tmp-{final.name}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _clean_stale(final: Path) -> None:
    """Remove temporaries of ``final`` left by processes that no longer exist."""
    start = len(f".tmp-{final.name}-")
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        pid = stale.name[start:].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        _remove(stale)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``path`` on success.

    An existing ``path`` is replaced. On an exception the temporary folder is
    removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(final), dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs are shared data
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of ``path`` for writing; rename it on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(final)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(final), dir=final.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path (not yet existing) that becomes ``path``.

    For libraries that write by path: the temporary keeps ``path``'s
    suffixes (``.tmp-generator.keras-<pid>-<token>.keras``), since Keras,
    matplotlib and PIL choose the format by the suffix. Whatever the library
    made there, a file or a folder (a SavedModel), replaces ``path`` when the
    block ends without an exception; otherwise it is removed and ``path`` is
    left as it was. Files are fsynced before the rename.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(final)
    tmp = final.parent / f"{_prefix(final)}{secrets.token_hex(4)}{''.join(final.suffixes)}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} (the temporary of {final})")
        if tmp.is_dir():
            if final.exists():
                _remove(final)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def lock_file(fh: IO, busy: str) -> None:
    """Take an exclusive lock on the open file ``fh`` without waiting; raise
    :class:`Busy` with the message ``busy`` when another process holds it."""
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Busy(busy) from None


@contextmanager
def locked(path: str | os.PathLike, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if needed) for the
    block: one writer at a time for an output written in place. With ``busy``
    set, raise :class:`Busy` with that message instead of waiting."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        if busy is None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        else:
            lock_file(fh, busy)
        yield


class Busy(RuntimeError):
    """Another process is writing the same output."""


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
