"""Polite, safe, resumable image crawler: one more raw source for alignment.

:func:`crawl` starts from seed pages, follows links on the allowed hosts up to
a depth and page budget, and keeps the images it finds under ``out_dir``
(e.g. ``raw/crawl/2026-11-22/``)::

    ab/abcdef....jpg    kept images, named by SHA-256, extension from the decoded format
    index.jsonl         one JSON object per kept image; ``key`` is its path (DirectorySource)
    rejected.jsonl      one line with a ``reason`` for every URL not kept
    summary.json        written last: counts, the completion marker
    .state/             frontier journal and lock (hidden: DirectorySource skips it)

Every processed URL is committed by appending exactly one line (to index,
rejected or the frontier journal), flushed at once, so a killed crawl loses
at most the URL in flight and a re-run continues from the journal without
fetching again what it already has.

Politeness: robots.txt per host (urllib.robotparser, fractional Crawl-delay
honoured), a minimum delay between requests to one host, a User-Agent that
names the project and a contact URL, retries with exponential backoff.
Safety: :mod:`pipeline.netguard` (public addresses only, every redirect hop
checked), byte caps enforced while streaming, a wall-clock deadline per
response, a pixel cap checked from the header before decoding, and only a
few raster formats handed to Pillow.
"""
from __future__ import annotations

import fcntl
import io
import json
import logging
import math
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from hashlib import sha256
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import imagehash
import requests
import urllib3
from PIL import Image, UnidentifiedImageError

from pipeline import netguard
from pipeline.atomic import atomic_file, write_json
from pipeline.sources import list_images

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
REJECTED = "rejected.jsonl"
SUMMARY = "summary.json"
STATE_DIR = ".state"
JOURNAL = "frontier.jsonl"

#: Pillow formats we decode (others, EPS/PSD/ICO..., are never opened) and the
#: file extension each is stored under; all are in sources.IMAGE_SUFFIXES.
IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp",
                 "TIFF": "tif"}
#: What Pillow may report for a file opened through one of those (multi-picture JPEG).
EXTENSIONS = {**IMAGE_FORMATS, "MPO": "jpg"}
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
HEADERS_KEPT = ("content-type", "content-length", "last-modified", "etag")
DEFAULT_PORTS = {"http": 80, "https": 443}
CHUNK = 64 * 1024


@dataclass(frozen=True)
class CrawlConfig:
    """Everything a crawl needs; defaults are polite for real sites.

    ``allowed_hosts`` empty means the seeds' hosts. ``allow_networks`` admits
    non-public addresses and exists for tests on loopback only.
    """
    seeds: Sequence[str]
    contact_url: str
    user_agent: str = "facegan-pipeline/0.1"
    allowed_hosts: Sequence[str] = ()
    max_depth: int = 2
    max_pages: int = 200
    max_images: int | None = None
    min_delay: float = 1.0
    max_crawl_delay: float = 60.0
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    deadline: float = 60.0
    max_image_bytes: int = 20 * 2**20
    max_page_bytes: int = 5 * 2**20
    max_robots_bytes: int = 512 * 2**10
    max_pixels: int = 40_000_000
    max_hops: int = 5
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 60.0
    phash_threshold: int = 6
    allow_networks: Sequence[str] = ()

    def __post_init__(self):
        for name in ("seeds", "allowed_hosts", "allow_networks"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not self.seeds:
            raise ValueError("CrawlConfig.seeds is empty: give at least one http(s) page URL")
        for seed in self.seeds:
            _require_http(seed, "seed")
        _require_http(self.contact_url, "contact_url (a page saying who runs this crawler)")
        if not self.user_agent or any(c.isspace() for c in self.user_agent):
            raise ValueError(f"user_agent {self.user_agent!r} must be one token like 'name/1.0'")
        self._check_numbers()
        netguard.parse_networks(self.allow_networks)

    def _check_numbers(self):
        positive = ("max_pages", "connect_timeout", "read_timeout", "deadline", "max_image_bytes",
                    "max_page_bytes", "max_robots_bytes", "max_pixels", "max_crawl_delay")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"CrawlConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_depth", "min_delay", "max_hops", "retries", "backoff", "max_backoff"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CrawlConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"CrawlConfig.max_images must be >= 1 or None, "
                             f"got {self.max_images!r}")
        if not 0 <= self.phash_threshold <= 64:
            raise ValueError(f"CrawlConfig.phash_threshold must be in 0..64, "
                             f"got {self.phash_threshold!r}")

    @property
    def user_agent_header(self) -> str:
        """``name/1.0 (+contact)``: lets site owners see who crawls and reach them."""
        return f"{self.user_agent} (+{self.contact_url})"

    @property
    def robots_agent(self) -> str:
        """The product token robots.txt groups are matched against."""
        return self.user_agent.split("/")[0]

    @property
    def hosts(self) -> frozenset[str]:
        hosts = self.allowed_hosts or [urlsplit(s).hostname for s in self.seeds]
        return frozenset(h.lower() for h in hosts)


def _require_http(url: str, what: str) -> None:
    try:
        ok = urlsplit(normalize_url(url or "")).scheme in netguard.SCHEMES
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{what} {url!r} is not an http(s) URL")


def read_seeds(path) -> tuple[str, ...]:
    """Seed URLs from a text file: one per line, blank lines and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"seeds file {path} does not exist: give one URL per line")
    seeds = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seeds.append(line)
    if not seeds:
        raise ValueError(f"seeds file {path} lists no URL")
    return tuple(seeds)


class Rejected(Exception):
    """A URL not kept; ``reason`` is the tag written to rejected.jsonl."""

    def __init__(self, reason: str, detail: str = "", **extra):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.extra = reason, detail, extra


class _Transient(Exception):
    """A failure worth retrying; ``reason`` is recorded once retries run out."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(detail or reason)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


# --- URLs and links ---------------------------------------------------------

def normalize_url(url: str) -> str:
    """Canonical form for the seen-set: fragment and credentials dropped,
    scheme and host lower-cased, default port removed, empty path as ``/``.

    Non-http(s) URLs come back without their fragment only. Raises ValueError
    for an http(s) URL without a host or with a bad port.
    """
    url = urldefrag(url.strip()).url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in netguard.SCHEMES:
        return url
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    port = parts.port
    host = f"[{host}]" if ":" in host else host
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


class _LinkParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = {k: v for k, v in attrs if v}
        if tag == "base" and "href" in attrs and self.base is None:
            self.base = attrs["href"]
        elif tag == "a" and "href" in attrs:
            self.links.append(("page", attrs["href"]))
        elif tag == "img":
            if "src" in attrs:
                self.links.append(("image", attrs["src"]))
            for candidate in attrs.get("srcset", "").split(","):
                if candidate.split():
                    self.links.append(("image", candidate.split()[0]))


def extract_links(html: str, page_url: str) -> list[tuple[str, str]]:
    """``(kind, absolute_url)`` in document order: ``a/href`` as "page",
    ``img/src`` and ``img/srcset`` as "image", resolved against ``<base>``."""
    parser = _LinkParser()
    parser.feed(html)
    parser.close()
    base = _join(page_url, parser.base) if parser.base else page_url
    return [(kind, _join(base, link)) for kind, link in parser.links]


def _join(base: str, link: str) -> str:
    """urljoin, or the bare link when it cannot be parsed (normalize_url then refuses it)."""
    try:
        return urljoin(base, link.strip())
    except ValueError:
        return link.strip()


def _clip(text: str, limit: int = 300) -> str:
    """data: URLs can be megabytes; records keep a recognisable prefix."""
    return text if len(text) <= limit else text[:limit] + "..."


# --- robots.txt ---------------------------------------------------------------

@dataclass(frozen=True)
class RobotsPolicy:
    """What one origin's robots.txt allows. ``refusal`` set: every URL of the
    origin is refused with that reason (robots.txt unavailable, delay too long)."""
    parser: RobotFileParser | None = None
    delay: float = 0.0
    refusal: str | None = None

    def check(self, url: str, agent: str) -> None:
        """Raise :class:`Rejected` when ``url`` may not be fetched."""
        if self.refusal:
            raise Rejected(self.refusal, url)
        if self.parser is not None and not self.parser.can_fetch(agent, url):
            raise Rejected("robots_disallowed", f"robots.txt disallows {url}")


def parse_robots(text: str, agent: str) -> RobotsPolicy:
    """Parse robots.txt with urllib.robotparser, keeping fractional Crawl-delay.

    robotparser only accepts integer delays, so each Crawl-delay value is
    replaced by its index in a side list before parsing: robotparser still does
    the user-agent group matching, and the index leads back to the real value.
    Request-rate, when stricter, wins.
    """
    delays: list[float] = []
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "crawl-delay":
            try:
                delay = float(value.split("#")[0].strip())
            except ValueError:
                continue
            if not (math.isfinite(delay) and delay >= 0):
                continue
            line = f"Crawl-delay: {len(delays)}"
            delays.append(delay)
        lines.append(line)
    parser = RobotFileParser()
    parser.parse(lines)
    index = parser.crawl_delay(agent)
    delay = delays[int(index)] if index is not None else 0.0
    rate = parser.request_rate(agent)
    if rate and rate.requests > 0:
        delay = max(delay, rate.seconds / rate.requests)
    return RobotsPolicy(parser=parser, delay=delay)


def _disallow_all() -> RobotFileParser:
    parser = RobotFileParser()
    parser.disallow_all = True
    return parser


# --- images -------------------------------------------------------------------

def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Fully decoded image, or :class:`Rejected` (``decompression_bomb`` or
    ``undecodable``).

    The size comes from the header and is checked against ``max_pixels``
    before any pixel is decoded; Pillow's own DecompressionBombWarning is
    turned into a rejection too. ``verify()`` checks the structure (it leaves
    the image unusable), then a fresh open decodes every pixel.
    """
    formats = list(IMAGE_FORMATS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=formats) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise Rejected("decompression_bomb",
                                   f"{width}x{height} is over the {max_pixels} pixel cap")
                probe.verify()
            image = Image.open(io.BytesIO(data), formats=formats)
            image.load()
        except Rejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise Rejected("decompression_bomb", str(exc)) from None
        except UnidentifiedImageError:
            raise Rejected("undecodable", f"not a {'/'.join(IMAGE_FORMATS)} image") from None
        except Exception as exc:  # Pillow signals bad bytes with many exception types
            raise Rejected("undecodable", f"{type(exc).__name__}: {exc}") from None
    return image


class SeenImages:
    """SHA-256 and perceptual hashes of kept images (this day and earlier ones),
    answering "is this a copy or a near copy of something we have?"."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self._by_sha: dict[str, str] = {}
        self._phashes: list[tuple[int, str]] = []

    def add(self, sha: str, phash: str, where: str) -> None:
        self._by_sha.setdefault(sha, where)
        self._phashes.append((int(phash, 16), where))

    def duplicate(self, sha: str, phash: str) -> Rejected | None:
        """The rejection for a copy (same bytes) or near copy (phash distance
        within the threshold, nearest reported), else None."""
        if sha in self._by_sha:
            return Rejected("duplicate_sha256", sha, duplicate_of=self._by_sha[sha])
        value = int(phash, 16)
        best = min(((value ^ h).bit_count(), where) for h, where in self._phashes) \
            if self._phashes else None
        if best is not None and best[0] <= self.threshold:
            return Rejected("near_duplicate", f"phash distance {best[0]}",
                            duplicate_of=best[1], distance=best[0])
        return None


def earlier_outputs(out_dir) -> list[Path]:
    """Sibling day folders sorting before ``out_dir`` that hold an index:
    the crawl of a day de-duplicates against them."""
    out = Path(out_dir)
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name < out.name
                  and (p / INDEX).is_file())


# --- files ------------------------------------------------------------------

def _cut_torn_line(path: Path) -> None:
    """Drop a last line without its newline: what a killed append leaves."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        end = pos = fh.seek(0, 2)
        keep = 0
        while pos > 0:
            step = min(CHUNK, pos)
            pos -= step
            fh.seek(pos)
            newline = fh.read(step).rfind(b"\n")
            if newline >= 0:
                keep = pos + newline + 1
                break
        if keep != end:
            log.warning("%s: dropping a torn last line left by a killed run", path)
            fh.truncate(keep)


def read_jsonl(path) -> list[dict]:
    """All rows of a JSON-lines file ([] when absent)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number} is not JSON ({exc}); "
                                     "delete the folder to crawl the day again") from None
    return rows


class JsonlLog:
    """Append-only JSON lines, one flush per line, torn last line repaired on open."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_line(path)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One crawler per output folder: two would interleave their journals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another crawl is writing {path.parent.parent}; "
                               "wait for it or stop it") from None
        yield


# --- frontier -----------------------------------------------------------------

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


# --- fetching ---------------------------------------------------------------

@dataclass
class Download:
    url: str
    media_type: str
    charset: str | None
    headers: dict[str, str]
    body: bytes
    fetched_at: str = field(default_factory=lambda: datetime.now(UTC)
                            .isoformat(timespec="seconds"))

    @property
    def is_image(self) -> bool:
        return self.media_type.startswith("image/")


def _media_type(response: requests.Response) -> tuple[str, str | None]:
    """``("image/jpeg", charset or None)`` from Content-Type."""
    raw = response.headers.get("Content-Type", "")
    media, _, params = raw.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return media.strip().lower(), charset


def _retry_after(response: requests.Response) -> float | None:
    """Seconds asked for by Retry-After (delta-seconds or HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError, IndexError):
        return None


def _read_capped(response: requests.Response, cap: int, deadline_at: float,
                 truncate: bool = False) -> bytes:
    """The body, at most ``cap`` bytes, read before ``deadline_at`` (monotonic).

    read1 returns whatever one socket read brings, so a server dripping bytes
    is caught by the deadline check and a stalled one by the read timeout.
    Over the cap: :class:`Rejected` ``too_large``, or the first ``cap`` bytes
    when ``truncate``.
    """
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > cap and not truncate:
        raise Rejected("too_large", f"Content-Length {declared} is over the {cap} byte cap")
    body = bytearray()
    while True:
        if time.monotonic() > deadline_at:
            raise _Transient("timeout", "response deadline passed")
        chunk = response.raw.read1(CHUNK, decode_content=True)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > cap:
            if truncate:
                return bytes(body[:cap])
            raise Rejected("too_large", f"body is over the {cap} byte cap")


def _transient_from(exc: Exception) -> _Transient:
    timeout = isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError))
    return _Transient("timeout" if timeout else "connection_error", f"{type(exc).__name__}: {exc}")


NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


# --- the crawler --------------------------------------------------------------

class Crawler:
    """One crawl of one output folder; use :func:`crawl`."""

    def __init__(self, config: CrawlConfig, out_dir: Path, prior_dirs: Sequence[Path],
                 session: requests.Session | None = None,
                 progress: Callable[[dict], None] | None = None):
        self.config, self.out = config, out_dir
        self.session = session or netguard.guarded_session(
            config.allow_networks, headers={"User-Agent": config.user_agent_header})
        self.progress = progress
        self.index = JsonlLog(out_dir / INDEX)
        self.rejected = JsonlLog(out_dir / REJECTED)
        kept, rejected = read_jsonl(out_dir / INDEX), read_jsonl(out_dir / REJECTED)
        _remove_orphans(out_dir, {row["key"] for row in kept})
        self.frontier = Frontier(out_dir / STATE_DIR / JOURNAL,
                                 {r["url"] for r in kept} | {r["url"] for r in rejected})
        self.frontier.add_seeds([normalize_url(s) for s in config.seeds])
        self.images_kept = len(kept)
        self.seen_images = SeenImages(config.phash_threshold)
        for folder in prior_dirs:
            self._remember(read_jsonl(folder / INDEX), folder.name)
        self._remember(kept, out_dir.name)
        self.hosts = config.hosts
        self.robots: dict[str, RobotsPolicy] = {}
        self._last_request: dict[str, float] = {}
        self._hop_started = 0.0

    def _remember(self, rows: list[dict], folder: str) -> None:
        for row in rows:
            self.seen_images.add(row["sha256"], row["phash"], f"{folder}/{row['key']}")

    def run(self) -> None:
        """Process the frontier until it is empty or a budget is spent."""
        cfg = self.config
        while cfg.max_images is None or self.images_kept < cfg.max_images:
            entry = self.frontier.pop(self.frontier.pages_fetched < cfg.max_pages)
            if entry is None:
                break
            try:
                self._process(entry)
            except Rejected as exc:
                self._reject(entry, exc)
            if self.progress is not None:
                self.progress({"pages_fetched": self.frontier.pages_fetched,
                               "images_kept": self.images_kept, "frontier": len(self.frontier)})

    def close(self) -> None:
        for log_ in (self.index, self.rejected, self.frontier):
            log_.close()

    def _process(self, entry: Entry) -> None:
        download = self._download(entry)
        if download.is_image:
            self._keep_image(entry, download)
        else:
            self._take_page(entry, download)

    # -- pages

    def _take_page(self, entry: Entry, download: Download) -> None:
        """Queue the page's new links and refuse the bad ones now, once each;
        one journal line commits the page and everything it added."""
        html = _decode_text(download.body, download.charset)
        added = []
        for kind, link in extract_links(html, download.url):
            child, refusal = self._child(kind, link, entry)
            if child.url in self.frontier.seen:
                continue
            self.frontier.seen.add(child.url)
            if refusal is None:
                added.append(child)
            else:
                self._reject(child, refusal)
        self.frontier.page_done(entry.url, added)

    def _child(self, kind: str, link: str, parent: Entry) -> tuple[Entry, Rejected | None]:
        """The frontier entry for a link and, when it is not to be followed, why."""
        child = Entry(_clip(link), kind, parent.depth + 1, parent.url)
        try:
            url = normalize_url(link)
        except ValueError as exc:
            return child, Rejected("invalid_url", str(exc))
        parts = urlsplit(url)
        if parts.scheme not in netguard.SCHEMES:
            return child._replace(url=_clip(url)), Rejected(
                "unsupported_scheme", f"{parts.scheme or '(none)'}: links are not fetched")
        child = child._replace(url=url)
        if parts.hostname not in self.hosts:
            return child, Rejected("off_site", f"host {parts.hostname} is not in allowed_hosts")
        if kind == "page" and child.depth > self.config.max_depth:
            return child, Rejected("max_depth", f"depth {child.depth} > {self.config.max_depth}")
        return child, None

    # -- images

    def _keep_image(self, entry: Entry, download: Download) -> None:
        """Decode, de-duplicate, then write the file and its index row."""
        with decode_image(download.body, self.config.max_pixels) as image:
            phash = str(imagehash.phash(image))
        sha = sha256(download.body).hexdigest()
        duplicate = self.seen_images.duplicate(sha, phash)
        if duplicate is not None:
            duplicate.extra.update(final_url=download.url, sha256=sha, phash=phash)
            raise duplicate
        key = f"{sha[:2]}/{sha}.{EXTENSIONS[image.format]}"
        with atomic_file(self.out / key) as fh:
            fh.write(download.body)
        self.index.append({
            "key": key, "url": entry.url, "final_url": download.url, "page_url": entry.referrer,
            "depth": entry.depth, "fetched_at": download.fetched_at, "headers": download.headers,
            "sha256": sha, "phash": phash, "bytes": len(download.body),
            "width": image.width, "height": image.height, "format": image.format,
        })
        self.seen_images.add(sha, phash, f"{self.out.name}/{key}")
        self.images_kept += 1

    def _reject(self, entry: Entry, exc: Rejected) -> None:
        row = {"url": entry.url, "kind": entry.kind, "page_url": entry.referrer,
               "reason": exc.reason, "detail": exc.detail,
               "time": datetime.now(UTC).isoformat(timespec="seconds"), **exc.extra}
        log.debug("rejected %s: %s %s", entry.url, exc.reason, exc.detail)
        self.rejected.append(row)

    # -- network

    def _download(self, entry: Entry) -> Download:
        """One URL with retries and exponential backoff on transient failures
        (timeouts, connection errors, 429 and 5xx); Retry-After is honoured,
        and a 429 asking for more than ``max_backoff`` is given up at once."""
        cfg = self.config
        for attempt in range(cfg.retries + 1):
            try:
                return self._attempt(entry)
            except _Transient as exc:
                wait = max(cfg.backoff * 2 ** attempt, exc.retry_after or 0.0)
                if attempt == cfg.retries or (exc.retry_after or 0.0) > cfg.max_backoff:
                    raise Rejected(exc.reason, exc.detail) from None
                time.sleep(min(wait, cfg.max_backoff))
        raise AssertionError("unreachable")

    def _attempt(self, entry: Entry) -> Download:
        cfg = self.config
        try:
            response = netguard.guarded_get(
                self.session, entry.url, timeout=self._timeout(), max_hops=cfg.max_hops,
                before_hop=self._before_hop)
        except netguard.NetGuardError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        except NETWORK_ERRORS as exc:
            raise _transient_from(exc) from None
        with response:
            media, charset = self._check_response(entry, response)
            cap = cfg.max_image_bytes if media.startswith("image/") else cfg.max_page_bytes
            try:
                body = _read_capped(response, cap, self._hop_started + cfg.deadline)
            except NETWORK_ERRORS as exc:
                raise _transient_from(exc) from None
            headers = {h: response.headers[h] for h in HEADERS_KEPT if h in response.headers}
            return Download(response.url, media, charset, headers, body)

    def _check_response(self, entry: Entry, response: requests.Response) -> tuple[str, str | None]:
        """Status and Content-Type checks, before any body byte is read."""
        status = response.status_code
        if status == 429:
            raise _Transient("http_429_exhausted", "too many requests", _retry_after(response))
        if status in RETRY_STATUSES:
            raise _Transient(f"http_{status}", response.reason or "", _retry_after(response))
        if status != 200:
            raise Rejected(f"http_{status}", response.reason or "")
        media, charset = _media_type(response)
        if media.startswith("image/"):
            return media, charset
        if entry.kind == "image":
            raise Rejected("not_an_image_content_type", media or "(no Content-Type)")
        if media not in HTML_TYPES:
            raise Rejected("not_html", media or "(no Content-Type)")
        return media, charset

    def _timeout(self) -> tuple[float, float]:
        cfg = self.config
        return cfg.connect_timeout, min(cfg.read_timeout, cfg.deadline)

    def _before_hop(self, url: str) -> None:
        """Every request hop: allowed host, robots rules, then the host's turn."""
        host = urlsplit(url).hostname
        if host not in self.hosts:
            raise Rejected("off_site", f"redirect to {url}")
        policy = self._robots_for(url)
        policy.check(url, self.config.robots_agent)
        self._wait_turn(host, policy.delay)

    def _wait_turn(self, host: str, delay: float) -> None:
        """Space requests to one host by max(min_delay, robots delay)."""
        delay = max(self.config.min_delay, delay)
        wait = self._last_request.get(host, -math.inf) + delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._hop_started = self._last_request[host] = time.monotonic()

    def _robots_for(self, url: str) -> RobotsPolicy:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.robots:
            self.robots[origin] = self._fetch_robots(origin)
        return self.robots[origin]

    def _fetch_robots(self, origin: str) -> RobotsPolicy:
        """robots.txt of ``origin``: 2xx parsed, 401/403 disallow all, other
        4xx allow all; 5xx or a network failure refuse the host for this run."""
        cfg = self.config
        try:
            response = netguard.guarded_get(
                self.session, origin + "/robots.txt", timeout=self._timeout(),
                max_hops=cfg.max_hops,
                before_hop=lambda url: self._wait_turn(urlsplit(url).hostname, 0.0))
            with response:
                status = response.status_code
                if 200 <= status < 300:
                    body = _read_capped(response, cfg.max_robots_bytes,
                                        self._hop_started + cfg.deadline, truncate=True)
                    policy = parse_robots(_decode_text(body, "utf-8"), cfg.robots_agent)
                elif status in (401, 403):
                    policy = RobotsPolicy(parser=_disallow_all())
                elif 400 <= status < 500:
                    policy = RobotsPolicy()
                else:
                    policy = RobotsPolicy(refusal="robots_unavailable")
        except (netguard.NetGuardError, _Transient, *NETWORK_ERRORS) as exc:
            log.warning("robots.txt of %s unavailable (%s): skipping the host", origin, exc)
            return RobotsPolicy(refusal="robots_unavailable")
        if policy.delay > cfg.max_crawl_delay:
            log.warning("%s asks for Crawl-delay %.1f s > max_crawl_delay: skipping the host",
                        origin, policy.delay)
            return RobotsPolicy(refusal="crawl_delay_too_long")
        return policy


def _decode_text(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _remove_orphans(out_dir: Path, keys: set[str]) -> None:
    """Delete images without an index row: a run killed between writing an
    image and appending its row; the re-run fetches that URL again."""
    for key in list_images(out_dir):
        if key not in keys:
            log.warning("%s: removing %s, written by a killed run but never indexed", out_dir, key)
            (out_dir / key).unlink()


# --- public entry points ------------------------------------------------------

def summarize(out_dir) -> dict:
    """Counts of a crawl folder, from its files alone (so a resumed crawl
    reports the same as an uninterrupted one)."""
    out = Path(out_dir)
    kept, rejected = read_jsonl(out / INDEX), read_jsonl(out / REJECTED)
    journal = read_jsonl(out / STATE_DIR / JOURNAL)
    done = {r["url"] for r in kept} | {r["url"] for r in rejected} | \
        {r["page"] for r in journal if "page" in r}
    queued = {e[0] for r in journal for e in r["add"]}
    reasons = Counter(r["reason"] for r in rejected)
    return {
        "pages_fetched": sum(1 for r in journal if "page" in r),
        "images_kept": len(kept),
        "bytes_kept": sum(r["bytes"] for r in kept),
        "rejected": dict(sorted(reasons.items())),
        "rejected_total": len(rejected),
        "frontier_left": len(queued - done),
    }


def crawl(config: CrawlConfig, out_dir, *, prior_dirs: Sequence[Path] | None = None,
          progress: Callable[[dict], None] | None = None,
          session: requests.Session | None = None) -> dict:
    """Crawl into ``out_dir`` (resuming what is there) and return the summary.

    ``prior_dirs`` are earlier outputs to de-duplicate against (default:
    :func:`earlier_outputs`). ``progress`` is called after every URL with
    running counts (for Luigi's status; raising from it stops the crawl, as a
    kill would). ``summary.json`` is removed at the start and written last, so
    it marks a finished crawl. Re-running a finished crawl fetches nothing.
    """
    out = Path(out_dir)
    prior = earlier_outputs(out) if prior_dirs is None else [Path(p) for p in prior_dirs]
    with _locked(out / STATE_DIR / "lock"):
        (out / SUMMARY).unlink(missing_ok=True)
        crawler = Crawler(config, out, prior, session=session, progress=progress)
        try:
            crawler.run()
        finally:
            crawler.close()
        summary = summarize(out)
        write_json(out / SUMMARY, summary)
    log.info("crawl of %s: %s", out, summary)
    return summary
