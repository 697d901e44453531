"""JSON lines: one reader, one writer, one appender, one rule for a torn last line.

Logs such as ``rejected.jsonl``, ``index.jsonl`` and the crawl journal are
appended to one line at a time, so a process killed mid-append leaves a last
line without its newline. That line was never committed: readers skip it and
:class:`JsonlLog` cuts it off before appending again. Any other line that is
not a JSON object is damage, reported with the file and line number.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.atomic import atomic_file

log = logging.getLogger(__name__)

_SCAN = 64 << 10


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """The committed rows of a JSON-lines file (none when it does not exist).

    A last line without its newline (a killed append) is skipped; a bad line
    before it raises ValueError naming ``path:line``.
    """
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                log.warning("%s:%d: skipping a torn last line left by a killed run", path, number)
                return
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not JSON ({exc}); the file is damaged: "
                                 f"delete it (or its folder) to redo that stage") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number} is not a JSON object; the file is damaged: "
                                 f"delete it (or its folder) to redo that stage")
            yield row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All committed rows of a JSON-lines file ([] when absent); see :func:`iter_jsonl`."""
    return list(iter_jsonl(path))


def dumps(row: dict) -> str:
    """One JSON line, keys sorted (so equal rows are equal text)."""
    return json.dumps(row, sort_keys=True) + "\n"


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write ``rows`` as a new JSON-lines file, atomically."""
    with atomic_file(path, "w") as fh:
        for row in rows:
            fh.write(dumps(row))


def cut_torn_line(path: str | os.PathLike) -> None:
    """Drop a last line without its newline: what a killed append leaves."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        end = pos = fh.seek(0, os.SEEK_END)
        keep = 0
        while pos > 0:
            step = min(_SCAN, pos)
            pos -= step
            fh.seek(pos)
            newline = fh.read(step).rfind(b"\n")
            if newline >= 0:
                keep = pos + newline + 1
                break
        if keep != end:
            log.warning("%s: dropping a torn last line left by a killed run", path)
            fh.truncate(keep)


class JsonlLog:
    """Append-only JSON lines: one flush per line, torn last line cut on open.

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut_torn_line(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._fh.write(dumps(row))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
