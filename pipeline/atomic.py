"""Atomic outputs: write under a hidden temporary name, then rename.

A killed task leaves only a ``.tmp-*`` sibling behind, never a file or folder
under the final name, so Luigi never mistakes a partial output for a finished
one. Temporaries carry the writer's PID; the next writer of the same output
removes those whose process is gone, never a live writer's (two workers may
write the same small file at once, e.g. a shard's key list).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


def _clean_stale(final: Path) -> None:
    """Remove temporaries of ``final`` left by processes that no longer exist."""
    start = len(f".tmp-{final.name}-")
    for stale in final.parent.glob(f".tmp-{final.name}-*"):
        pid = stale.name[start:].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


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


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
