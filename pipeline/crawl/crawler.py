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

The pieces live beside it: :mod:`pipeline.crawl.links` (canonical URLs, links of a
page), :mod:`pipeline.crawl.robots` (robots.txt), :mod:`pipeline.crawl.frontier` (the
queue and its journal), :mod:`pipeline.net.httpclient` and
:mod:`pipeline.net.netguard` (fetching: public addresses only, every redirect hop
checked, byte caps, one deadline per request, retries with backoff) and
:mod:`pipeline.imaging` (the one decoder, with its pixel cap and formats).
Politeness: robots.txt per host (fractional Crawl-delay honoured), a minimum
delay between requests to one host, a User-Agent that names the project and a
contact URL.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from urllib.parse import urlsplit

import requests

from pipeline.atomic import atomic_file, locked, write_json
from pipeline.crawl.frontier import Entry, Frontier
from pipeline.crawl.links import clip, extract_links, normalize_url
from pipeline.crawl.robots import RobotsPolicy, RobotsRefusal, disallow_all, parse_robots
from pipeline.imaging import MAX_PIXELS, DecodeError, load_image
from pipeline.jsonl import JsonlLog, read_jsonl
from pipeline.net import httpclient, netguard
from pipeline.settings import require
from pipeline.sources.base import list_images

log = logging.getLogger(__name__)

INDEX = "index.jsonl"
REJECTED = "rejected.jsonl"
SUMMARY = "summary.json"
STATE_DIR = ".state"
JOURNAL = "frontier.jsonl"

#: The file extension a kept image is stored under, by the format Pillow
#: decoded (MPO: a multi-picture JPEG); all are in sources.IMAGE_SUFFIXES.
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp",
              "BMP": "bmp", "TIFF": "tif", "PPM": "ppm"}
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
HEADERS_KEPT = ("content-type", "content-length", "last-modified", "etag")


@dataclass(frozen=True)
class CrawlConfig:
    """Everything a crawl needs; defaults are polite for real sites.

    ``allowed_hosts`` (``host`` or ``host:port`` entries) empty means the
    seeds' hosts. ``allow_networks`` admits non-public addresses (networks or
    ``address:port`` entries) and exists for tests on loopback only.
    """
    seeds: Sequence[str]
    contact_url: str
    user_agent: str = field(default="facegan-pipeline/0.1", metadata={
        "help": "Product token 'name/version'; robots.txt groups match its name."})
    allowed_hosts: Sequence[str] = field(default=(), metadata={
        "help": "Hosts ('host' or 'host:port') that may be fetched, as a JSON list; [] = the seeds' hosts."})
    max_depth: int = field(default=2, metadata={"help": "Links followed from a seed page (0 = the seeds only)."})
    max_pages: int = field(default=200, metadata={"help": "HTML pages fetched per day, at most."})
    max_images: int | None = field(default=None, metadata={"help": "Images kept per day, at most (0 = no cap)."})
    min_delay: float = field(default=1.0, metadata={
        "help": "Seconds between two requests to one host, at least (robots.txt Crawl-delay wins when longer)."})
    max_crawl_delay: float = field(default=60.0, metadata={
        "help": "A host asking for a longer Crawl-delay is skipped."})
    max_image_bytes: int = field(default=20 * 2**20, metadata={"help": "Larger images are rejected (too_large)."})
    max_page_bytes: int = field(default=5 * 2**20, metadata={"help": "Larger pages are rejected (too_large)."})
    max_robots_bytes: int = field(default=512 * 2**10, metadata={
        "help": "robots.txt is read up to this many bytes."})
    max_pixels: int = field(default=MAX_PIXELS, metadata={
        "help": "Images over this many pixels are rejected before decoding (too_large); alignment's cap."})
    phash_threshold: int = field(default=6, metadata={
        "help": "Perceptual-hash distance (0-64) up to which an image is a near duplicate of one kept today "
                "or earlier."})
    #: How one URL is fetched (timeouts, deadline, redirects, retries): the one HTTP policy.
    fetch: httpclient.Policy = httpclient.CRAWL
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
        check_numbers({f.name: getattr(self, f.name) for f in fields(self) if f.name != "fetch"})
        netguard.parse_allow_list(self.allow_networks)
        self.host_rules  # noqa: B018  (a bad allowed_hosts entry fails here)

    @property
    def user_agent_header(self) -> str:
        """``name/1.0 (+contact)``: lets site owners see who crawls and reach them."""
        return f"{self.user_agent} (+{self.contact_url})"

    @property
    def robots_agent(self) -> str:
        """The product token robots.txt groups are matched against."""
        return self.user_agent.split("/")[0]

    @property
    def policy(self) -> httpclient.Policy:
        """How one URL is fetched: timeouts, deadline, redirects, retries (``fetch``)."""
        return self.fetch

    @property
    def host_rules(self) -> frozenset[tuple[str, int | None]]:
        """``(host, port or None)`` pairs that may be fetched: ``allowed_hosts``
        entries (``host`` admits every port), else the seeds' hosts."""
        if not self.allowed_hosts:
            return frozenset((netguard.parse_target(normalize_url(s)).host, None)
                             for s in self.seeds)
        rules = set()
        for entry in self.allowed_hosts:
            text = str(entry).strip().lower()
            try:
                target = netguard.parse_target(f"http://{text}/")
            except netguard.NetGuardError:
                raise ValueError(f"allowed_hosts entry {entry!r} is neither a host nor "
                                 f"host:port") from None
            has_port = urlsplit(f"http://{text}/").port is not None
            rules.add((target.host, target.port if has_port else None))
        return frozenset(rules)

    def allows(self, target: netguard.Target) -> bool:
        """Whether ``target``'s host (and port) is one the crawl may fetch."""
        rules = self.host_rules
        return (target.host, None) in rules or (target.host, target.port) in rules


def check_numbers(values: dict) -> None:
    """The numeric settings of a crawl in ``values`` (by field name) are in range,
    else :class:`pipeline.settings.BadSetting` names the first that is not."""
    positive = ("max_pages", "max_image_bytes", "max_page_bytes", "max_robots_bytes", "max_pixels",
                "max_crawl_delay")
    for name in positive:
        if name in values:
            require(values[name] > 0, name, values[name], "> 0")
    for name in ("max_depth", "min_delay"):
        if name in values:
            require(values[name] >= 0, name, values[name], ">= 0")
    if values.get("max_images") is not None:
        require(values["max_images"] >= 1, "max_images", values["max_images"], ">= 1 or None")
    if "phash_threshold" in values:
        require(0 <= values["phash_threshold"] <= 64, "phash_threshold", values["phash_threshold"],
                "in 0..64")


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


# --- images ---------------------------------------------------------------------

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


# --- the crawler --------------------------------------------------------------

class Crawler:
    """One crawl of one output folder; use :func:`crawl`."""

    def __init__(self, config: CrawlConfig, out_dir: Path, prior_dirs: Sequence[Path],
                 session: requests.Session | None = None,
                 progress: Callable[[dict], None] | None = None):
        self.config, self.out = config, out_dir
        self.policy = config.policy
        self.session = session or httpclient.session(
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
        self.robots: dict[str, RobotsPolicy] = {}
        self._last_request: dict[str, float] = {}

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
        download = self._fetch(entry)
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
        child = Entry(clip(link), kind, parent.depth + 1, parent.url)
        try:
            url = normalize_url(link)
        except ValueError as exc:
            return child, Rejected("invalid_url", str(exc))
        scheme = urlsplit(url).scheme
        if scheme not in netguard.SCHEMES:
            return child._replace(url=clip(url)), Rejected(
                "unsupported_scheme", f"{scheme or '(none)'}: links are not fetched")
        child = child._replace(url=url)
        target = netguard.parse_target(url)
        if not self.config.allows(target):
            return child, Rejected("off_site", f"host {target.netloc} is not in allowed_hosts")
        if kind == "page" and child.depth > self.config.max_depth:
            return child, Rejected("max_depth", f"depth {child.depth} > {self.config.max_depth}")
        return child, None

    # -- images

    def _keep_image(self, entry: Entry, download: Download) -> None:
        """Decode, de-duplicate, then write the file and its index row."""
        try:
            image = load_image(download.body, self.config.max_pixels)
        except DecodeError as exc:
            raise Rejected(exc.reason, exc.detail) from None
        import imagehash  # scipy underneath: loaded when the first image arrives
        with image:
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

    def _fetch(self, entry: Entry) -> Download:
        """One URL, retried on transient failures (timeouts, connection errors,
        429 and 5xx) with backoff (:class:`pipeline.net.httpclient.Retrier`)."""
        try:
            return httpclient.retrying(lambda: self._attempt(entry), self.policy)
        except httpclient.Transient as exc:
            raise Rejected(exc.reason, exc.detail) from None

    def _attempt(self, entry: Entry) -> Download:
        """One attempt, within one deadline: every hop, the headers and the body."""
        cfg = self.config
        with self.policy.deadline_context():
            try:
                response = httpclient.open_url(self.session, entry.url, self.policy,
                                               before_hop=self._before_hop)
            except netguard.NetGuardError as exc:
                raise Rejected(exc.reason, str(exc)) from None
            with response:
                media, charset = self._check_response(entry, response)
                cap = cfg.max_image_bytes if media.startswith("image/") else cfg.max_page_bytes
                try:
                    body = httpclient.read_capped(response, cap)
                except httpclient.TooLarge as exc:
                    raise Rejected("too_large", str(exc)) from None
                headers = {h: response.headers[h] for h in HEADERS_KEPT if h in response.headers}
                return Download(response.url, media, charset, headers, body)

    def _check_response(self, entry: Entry, response: requests.Response) -> tuple[str, str | None]:
        """Status and Content-Type checks, before any body byte is read."""
        httpclient.raise_for_retry(response)
        if response.status_code != 200:
            raise Rejected(f"http_{response.status_code}", response.reason or "")
        media, charset = _media_type(response)
        if media.startswith("image/"):
            return media, charset
        if entry.kind == "image":
            raise Rejected("not_an_image_content_type", media or "(no Content-Type)")
        if media not in HTML_TYPES:
            raise Rejected("not_html", media or "(no Content-Type)")
        return media, charset

    def _before_hop(self, url: str) -> None:
        """Every request hop: allowed host, robots rules, then the host's turn.
        The waits are not counted against the request's deadline."""
        target = netguard.parse_target(url)
        if not self.config.allows(target):
            raise Rejected("off_site", f"redirect to {url}")
        deadline = netguard.Deadline.current()
        with deadline.paused() if deadline is not None else nullcontext():
            policy = self._robots_for(target)
            try:
                policy.check(url, self.config.robots_agent)
            except RobotsRefusal as exc:
                raise Rejected(exc.reason, exc.detail) from None
            self._wait_turn(target.host, policy.delay)

    def _wait_turn(self, host: str, delay: float) -> None:
        """Space requests to one host by max(min_delay, robots delay)."""
        delay = max(self.config.min_delay, delay)
        wait = self._last_request.get(host, -math.inf) + delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request[host] = time.monotonic()

    def _robots_for(self, target: netguard.Target) -> RobotsPolicy:
        origin = f"{target.scheme}://{target.netloc}"
        if origin not in self.robots:
            self.robots[origin] = self._fetch_robots(origin)
        return self.robots[origin]

    def _fetch_robots(self, origin: str) -> RobotsPolicy:
        """robots.txt of ``origin``: 2xx parsed, 401/403 disallow all, other
        4xx allow all; 5xx or a network failure refuse the host for this run."""
        cfg = self.config
        try:
            with self.policy.deadline_context():
                response = httpclient.open_url(
                    self.session, origin + "/robots.txt", self.policy,
                    before_hop=lambda url: self._wait_turn(netguard.parse_target(url).host, 0.0))
                with response:
                    status = response.status_code
                    if 200 <= status < 300:
                        body = httpclient.read_capped(response, cfg.max_robots_bytes, truncate=True)
                        policy = parse_robots(_decode_text(body, "utf-8"), cfg.robots_agent)
                    elif status in (401, 403):
                        policy = disallow_all()
                    elif 400 <= status < 500:
                        policy = RobotsPolicy()
                    else:
                        policy = RobotsPolicy(refusal="robots_unavailable")
        except (netguard.NetGuardError, httpclient.Transient) as exc:
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
    with locked(out / STATE_DIR / "lock", f"another crawl is writing {out}; wait for it or stop it"):
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
