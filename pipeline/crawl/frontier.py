"""The crawl frontier: a breadth-first queue of URLs, rebuilt from its journal on a re-run."""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from pipeline.jsonl import JsonlLog, read_jsonl


class Entry(NamedTuple):
    url: str
    kind: str            # "page" or "image" (what the link said; the response decides)
    depth: int
    referrer: str | None


class Frontier:
    """FIFO of entries to fetch, rebuilt from its journal on a re-run.

    Journal lines: ``{"add": [...]}`` for seeds, ``{"page": url, "add": [...]}``
    for a fetched page with the entries it discovered. An entry is done when
    a page line, an index row or a rejection names its URL (``done``).
    Breadth-first order makes the first sighting of a URL its shallowest.
    """

    def __init__(self, journal: Path, done: set[str]):
        self.seen: set[str] = set(done)
        self.queue: deque[Entry] = deque()
        self.deferred: list[Entry] = []
        self.pages_fetched = 0
        self._log = JsonlLog(journal)
        added: list[Entry] = []
        for row in read_jsonl(journal):
            added += [Entry(*e) for e in row["add"]]
            if "page" in row:
                done.add(row["page"])
                self.pages_fetched += 1
        self.seen.update(e.url for e in added)
        self.queue.extend(e for e in added if e.url not in done)

    def add_seeds(self, urls: Sequence[str]) -> None:
        new = [Entry(u, "page", 0, None) for u in dict.fromkeys(urls) if u not in self.seen]
        if new:
            self._log.append({"add": [list(e) for e in new]})
            self.seen.update(e.url for e in new)
            self.queue.extend(new)

    def page_done(self, url: str, added: list[Entry]) -> None:
        """Commit a fetched page and what it discovered, in one journal line."""
        self._log.append({"page": url, "add": [list(e) for e in added]})
        self.pages_fetched += 1
        self.queue.extend(added)

    def pop(self, pages_allowed: bool) -> Entry | None:
        """Next entry; pages over the budget are set aside (they stay in the
        journal, so a re-run with a larger budget fetches them)."""
        while self.queue:
            entry = self.queue.popleft()
            if entry.kind == "page" and not pages_allowed:
                self.deferred.append(entry)
                continue
            return entry
        return None

    def __len__(self) -> int:
        return len(self.queue) + len(self.deferred)

    def close(self) -> None:
        self._log.close()
