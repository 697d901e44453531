"""Resumable, verified, atomic HTTP downloads, Google Drive included.

A file is fetched into a hidden ``.<name>.part`` sibling, resumed with a
``Range`` request when the server proves (206 + matching ``Content-Range``)
that it honours it, and renamed to its final name only after its size and
SHA-256 (or the published MD5 where that is all there is) check out. So a
killed download leaves nothing under the final name, and the next run picks up
where the last one stopped.

URLs, sizes and checksums are data (luigi.cfg), not code: a :class:`RemoteFile`
is built from them with :meth:`RemoteFile.from_dict`. A mirror written as
``gdrive:<file id>`` goes through Google Drive's confirmation pages.

Requests go through :mod:`pipeline.net.httpclient` (public addresses only, every
redirect hop checked, retries with backoff and ``Retry-After``), the same
client the crawler uses.
"""
from __future__ import annotations

import hashlib
import html
import logging
import os
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Mapping
from urllib.parse import urljoin, urlsplit

import requests
from tqdm import tqdm

from pipeline.atomic import lock_file
from pipeline.net import httpclient
from pipeline.net.httpclient import Policy, Transient

log = logging.getLogger(__name__)

#: Mirror prefix that routes a download through the Google Drive flow.
GDRIVE_PREFIX = "gdrive:"
#: Bytes read per chunk while streaming to disk; small enough that a broken
#: connection loses little of what already arrived (a cut chunk is dropped).
CHUNK = 64 << 10
#: Most bytes of an HTML page read to explain why it came instead of the file.
HTML_SNIFF_BYTES = 64 << 10

ProgressFn = Callable[[int, "int | None"], None]


class DownloadError(OSError):
    """A file could not be fetched; the message names the file and the fix."""


class ChecksumError(DownloadError):
    """The bytes arrived but their hash is not the published one."""


class SizeError(DownloadError):
    """The server announced, or sent, a different number of bytes."""


class IntegrityError(DownloadError):
    """The bytes arrived but fail a structural check (e.g. a corrupt zip)."""


class HTMLPageError(DownloadError):
    """An HTML page (error, quota or sign-in page) came instead of the file."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its final ``name``, ``urls`` (mirrors, tried in
    order; ``gdrive:<id>`` for Google Drive) and what it must verify against.
    ``size``/``sha256``/``md5`` left ``None`` are not checked."""
    name: str
    urls: tuple[str, ...]
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"remote file name {self.name!r} must be a plain, non-hidden file name")
        if not self.urls:
            raise ValueError(f"{self.name}: no URL or gdrive:<id> mirror given")

    @classmethod
    def from_dict(cls, spec: Mapping) -> "RemoteFile":
        """Build from a config mapping ``{"name", "urls" (list or one string),
        "size", "sha256", "md5"}``, as luigi's ListParameter/DictParameter
        give it (frozen mappings and tuples are fine)."""
        urls = spec.get("urls", spec.get("url", ()))
        urls = tuple(urls.split()) if isinstance(urls, str) else tuple(urls)
        size = spec.get("size")
        return cls(name=spec["name"], urls=urls,
                   size=None if size in (None, "") else int(size),
                   sha256=str(spec["sha256"]).lower() if spec.get("sha256") else None,
                   md5=str(spec["md5"]).lower() if spec.get("md5") else None)


@dataclass(frozen=True)
class DriveEndpoints:
    """Google Drive URLs; a parameter so tests can point them at loopback.
    Confirmation forms are only followed to these hosts."""
    uc_url: str = "https://drive.google.com/uc"
    usercontent_url: str = "https://drive.usercontent.google.com/download"

    def allows(self, url: str) -> bool:
        allowed = {urlsplit(self.uc_url).netloc, urlsplit(self.usercontent_url).netloc}
        return urlsplit(url).netloc in allowed


def make_session(allow=()) -> requests.Session:
    """A :func:`pipeline.net.httpclient.session` for downloads: byte counts and
    hashes are of the file as published, so nothing is re-encoded in transit."""
    return httpclient.session(allow, headers={"Accept-Encoding": "identity"})


# --- verification -----------------------------------------------------------

def file_hashes(path: str | os.PathLike, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, in one pass over the file."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def verify_file(path: str | os.PathLike, remote: RemoteFile) -> None:
    """Raise :class:`SizeError`/:class:`ChecksumError` unless ``path`` has the
    published size and hashes; prefers SHA-256 and falls back to MD5."""
    path = Path(path)
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise SizeError(f"{remote.name}: got {size} bytes, expected {remote.size}")
    wanted = {k: v for k, v in (("sha256", remote.sha256), ("md5", remote.md5)) if v}
    if "sha256" in wanted:
        wanted.pop("md5", None)
    for algo, actual in file_hashes(path, wanted).items():
        if actual != wanted[algo]:
            raise ChecksumError(f"{remote.name}: {algo} mismatch: expected {wanted[algo]}, "
                                f"actual {actual}; the download was discarded, re-run to fetch it "
                                f"again or correct the checksum in the config")


# --- HTML / Google Drive pages ----------------------------------------------

def looks_like_html(head: bytes) -> bool:
    """True when the first bytes of a body are an HTML document."""
    text = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<!doctype html", b"<html")) or (
        text.startswith(b"<") and (b"<head" in text or b"<body" in text or b"<title" in text))


def is_quota_page(page: str) -> bool:
    """Google Drive's answer once a shared file exceeded its download quota."""
    low = page.lower()
    return "quota exceeded" in low or "too many users have viewed or downloaded" in low


def _page_title(page: str) -> str:
    m = re.search(r"<title[^>]*>(.*?)</title>", page, re.S | re.I)
    return " ".join(html.unescape(m.group(1)).split()) if m else "untitled page"


def html_page_error(name: str, url: str, page: str) -> HTMLPageError:
    """The error for an HTML page served instead of ``name``, with the fix."""
    hint = f"download {name} by hand and set local_dir to the folder that holds it"
    if is_quota_page(page):
        return HTMLPageError(f"{name}: Google Drive quota exceeded for {url} (too many downloads of "
                             f"this file recently); try again in 24 h, or {hint}")
    return HTMLPageError(f"{name}: {url} served an HTML page ({_page_title(page)!r}) instead of "
                         f"the file; {hint}")


class _DownloadForm(HTMLParser):
    """Collects the action, method and inputs of ``<form id="download-form">``."""

    def __init__(self):
        super().__init__()
        self.found = False
        self._inside = False
        self.action = ""
        self.method = "GET"
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form" and a.get("id") == "download-form":
            self.found, self._inside = True, True
            self.action, self.method = a.get("action", ""), (a.get("method") or "GET").upper()
        elif tag == "input" and self._inside and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._inside = False


def drive_confirmation(page: str, page_url: str, file_id: str, cookies: Mapping[str, str],
                       drive: DriveEndpoints = DriveEndpoints()) -> tuple[str, str, dict] | None:
    """The request that gets past Drive's "can't scan for viruses" page.

    Returns ``(method, url, params)`` or ``None`` when ``page`` is no
    confirmation page. Handles the current form (``confirm=t`` + ``uuid``
    sent to drive.usercontent.google.com), the ``download_warning`` cookie and
    the older ``confirm=<token>`` link.
    """
    form = _DownloadForm()
    form.feed(page)
    if form.found:
        return form.method, urljoin(page_url, form.action or drive.usercontent_url), form.fields
    token = next((v for k, v in cookies.items() if k.startswith("download_warning")), None)
    if token is None:
        m = re.search(r"confirm=([0-9A-Za-z_-]+)", html.unescape(page))
        token = m.group(1) if m else None
    if token is None:
        return None
    return "GET", drive.uc_url, {"export": "download", "id": file_id, "confirm": token}


# --- transfer ---------------------------------------------------------------

def parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``"bytes 5-9/10"`` -> (5, 9, 10); ``"bytes */10"`` -> (None, None, 10)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    start, end, total = m.groups()
    return (None if start is None else int(start), None if end is None else int(end),
            None if total == "*" else int(total))


def _is_html_response(resp: requests.Response) -> bool:
    return resp.headers.get("Content-Type", "").split(";")[0].strip().lower() in (
        "text/html", "application/xhtml+xml")


def _read_text(resp: requests.Response, limit: int = HTML_SNIFF_BYTES) -> str:
    data = httpclient.read_capped(resp, limit, truncate=True)
    resp.close()
    return data.decode(resp.encoding or "utf-8", errors="replace")


def _open_drive(session, file_id, headers, policy, drive, name) -> requests.Response:
    """Follow Drive's confirmation pages until the file itself answers."""
    method, url, params = "GET", drive.uc_url, {"export": "download", "id": file_id}
    for _ in range(4):
        resp = httpclient.open_url(session, url, policy, method=method,
                                   params=params if method == "GET" else None,
                                   data=params if method != "GET" else None, headers=headers)
        if not _is_html_response(resp) or name.lower().endswith((".html", ".htm")):
            return resp
        page = _read_text(resp)
        cookies = {c.name: c.value for c in session.cookies}
        step = drive_confirmation(page, resp.url, file_id, cookies, drive)
        if step is None or is_quota_page(page):
            raise html_page_error(name, resp.url, page)
        method, url, params = step
        if not drive.allows(url):
            raise HTMLPageError(f"{name}: Google Drive confirmation page points at {url}, outside "
                                f"{drive.uc_url} / {drive.usercontent_url}; refusing to follow it")
    raise HTMLPageError(f"{name}: Google Drive kept answering gdrive:{file_id} with confirmation "
                        f"pages; download {name} by hand and set local_dir to its folder")


def _open(session, url, offset, policy, drive, name) -> requests.Response:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if url.startswith(GDRIVE_PREFIX):
        return _open_drive(session, url[len(GDRIVE_PREFIX):], headers, policy, drive, name)
    return httpclient.open_url(session, url, policy, headers=headers)


def _start(session, url, fh, policy, drive, name) -> tuple[requests.Response, int]:
    """Open ``url`` resuming after the bytes already in ``fh``.

    Returns the response and the offset its body starts at; ``fh`` is
    truncated whenever the server does not prove it resumes at our offset.
    """
    offset = fh.seek(0, os.SEEK_END)
    resp = _open(session, url, offset, policy, drive, name)
    if not offset:
        return resp, 0
    if resp.status_code == 206:
        start, _, _ = parse_content_range(resp.headers.get("Content-Range"))
        if start == offset:
            return resp, offset
        log.info("%s: %s answered Range with Content-Range %r; restarting", name, url,
                 resp.headers.get("Content-Range"))
    elif resp.status_code == 416:
        _, _, total = parse_content_range(resp.headers.get("Content-Range"))
        if total == offset:  # the partial file is already complete
            resp.close()
            return resp, offset
    elif resp.status_code == 200:  # Range ignored: this body is the whole file
        log.info("%s: %s ignores Range; restarting from byte 0", name, url)
        fh.truncate(0)
        return resp, 0
    else:  # an error status: keep the partial file for a later resume
        return resp, offset
    resp.close()
    fh.truncate(0)
    return _open(session, url, 0, policy, drive, name), 0


def _expected_total(resp: requests.Response, offset: int) -> int | None:
    if resp.status_code == 206:
        return parse_content_range(resp.headers.get("Content-Range"))[2]
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _transfer(session, url, fh, remote, policy, drive, max_bytes, report) -> None:
    """One attempt: stream ``url`` into ``fh`` from where it stopped."""
    resp, offset = _start(session, url, fh, policy, drive, remote.name)
    with resp:
        if resp.status_code == 416:
            return
        httpclient.raise_for_retry(resp)
        if resp.status_code not in (200, 206):
            raise DownloadError(f"{remote.name}: HTTP {resp.status_code} from {resp.url}")
        if _is_html_response(resp) and not remote.name.lower().endswith((".html", ".htm")):
            raise html_page_error(remote.name, resp.url, _read_text(resp))
        total = _expected_total(resp, offset)
        if remote.size is not None and total is not None and total != remote.size:
            raise SizeError(f"{remote.name}: {resp.url} announces {total} bytes, expected "
                            f"{remote.size}")
        cap = remote.size if remote.size is not None else max_bytes
        done = offset
        report(done, total or remote.size, reset=True)
        for chunk in httpclient.iter_body(resp, CHUNK):
            if done == 0 and looks_like_html(chunk[:1024]):
                raise html_page_error(remote.name, resp.url, chunk[:HTML_SNIFF_BYTES].decode(
                    "utf-8", errors="replace"))
            done += len(chunk)
            if cap is not None and done > cap:
                raise SizeError(f"{remote.name}: {resp.url} sent more than {cap} bytes")
            fh.write(chunk)
            report(done, total or remote.size)
        fh.flush()
        os.fsync(fh.fileno())


#: Failures that mean the partial file holds wrong bytes (not just too few).
_BAD_CONTENT = (ChecksumError, SizeError, HTMLPageError, IntegrityError)


def _fetch_mirror(session, url, fh, remote, policy, drive, max_bytes, report) -> None:
    """Transfer from one mirror, resuming after transient failures (network
    errors, timeouts, 429 and 5xx answers) as :class:`pipeline.net.httpclient.Retrier`
    says; an attempt that moved the file forward restarts the count."""
    retrier = httpclient.Retrier(policy)
    while True:
        before = fh.seek(0, os.SEEK_END)
        try:
            return _transfer(session, url, fh, remote, policy, drive, max_bytes, report)
        except Transient as exc:
            try:
                retrier.failed(exc, progressed=fh.seek(0, os.SEEK_END) > before)
            except Transient:
                if exc.reason.startswith("http_"):
                    raise DownloadError(f"{remote.name}: HTTP {exc.reason[5:]} from {url} after "
                                        f"retries{'; ' + exc.detail if exc.detail else ''}") from None
                raise DownloadError(f"{remote.name}: {url} failed {retrier.failures} times in a "
                                    f"row: {exc}") from None
            log.warning("%s: transfer from %s broke off (%s); resuming", remote.name, url, exc)
        except httpclient.NetGuardError as exc:
            raise DownloadError(f"{remote.name}: {url}: refused: {exc}") from exc


def _verify(path: Path, remote: RemoteFile, check: Callable[[Path], None] | None) -> None:
    verify_file(path, remote)
    if check is not None:
        try:
            check(path)
        except (ValueError, OSError) as exc:
            raise IntegrityError(f"{remote.name}: {exc}") from exc


def _fetch_verified(session, url, fh, part, remote, policy, drive, max_bytes, report, check) -> None:
    """Fetch from one mirror and verify; a resumed file that fails is fetched
    once more from byte 0, since its old part may come from another file."""
    resumed = fh.seek(0, os.SEEK_END) > 0
    for last in ((False, True) if resumed else (True,)):
        _fetch_mirror(session, url, fh, remote, policy, drive, max_bytes, report)
        try:
            return _verify(part, remote, check)
        except _BAD_CONTENT:
            if last:
                raise
            log.warning("%s: resumed file does not verify; fetching it whole", remote.name)
            fh.truncate(0)


@dataclass
class _Progress:
    """A tqdm bar (shown on terminals only) plus an optional callback, so the
    Luigi task can forward progress to the scheduler."""
    name: str
    callback: ProgressFn | None
    bar: tqdm = field(init=False)

    def __post_init__(self):
        self.bar = tqdm(desc=self.name, unit="B", unit_scale=True, unit_divisor=1024,
                        disable=None, leave=False)

    def __call__(self, done: int, total: int | None, reset: bool = False) -> None:
        if reset:
            self.bar.reset(total=total)
        self.bar.update(done - self.bar.n)
        if self.callback is not None:
            self.callback(done, total)

    def close(self) -> None:
        self.bar.close()


def download(remote: RemoteFile, dest_dir: str | os.PathLike, *,
             session: requests.Session | None = None, policy: Policy | None = None,
             allow=(), drive: DriveEndpoints = DriveEndpoints(),
             check: Callable[[Path], None] | None = None,
             progress: ProgressFn | None = None, max_bytes: int | None = None) -> Path:
    """Fetch ``remote`` into ``dest_dir/remote.name`` and return that path.

    Mirrors are tried in order. The file appears under its final name only
    once it verifies (size, hashes, then ``check``, e.g. zip integrity where no
    checksum is published); a file already there that verifies is kept as is.
    ``max_bytes`` caps files of unknown size. ``allow`` admits non-public
    addresses (tests on loopback) when no ``session`` is given.
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / remote.name
    if final.is_file():
        try:
            _verify(final, remote, check)
            return final
        except OSError as exc:
            log.warning("%s exists but does not verify (%s); downloading it again", final, exc)
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest_dir / f".{remote.name}.part"
    policy = policy or Policy()
    session = session or make_session(allow)
    report = _Progress(remote.name, progress)
    errors: list[DownloadError] = []
    with open(part, "a+b") as fh:
        lock_file(fh, f"{part} is being written by another process; wait for it or stop it")
        try:
            for url in remote.urls:
                try:
                    _fetch_verified(session, url, fh, part, remote, policy, drive, max_bytes,
                                    report, check)
                    os.replace(part, final)
                    return final
                except DownloadError as exc:
                    if isinstance(exc, _BAD_CONTENT):
                        fh.truncate(0)  # bad bytes must not be resumed from
                    log.warning("%s", exc)
                    errors.append(exc)
        finally:
            report.close()
            if fh.seek(0, os.SEEK_END) == 0:
                part.unlink(missing_ok=True)
    if len(errors) == 1:
        raise errors[0]
    raise DownloadError(f"{remote.name}: every mirror failed: "
                        + "; ".join(str(e) for e in errors)) from errors[-1]
