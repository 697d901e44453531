"""The one HTTP client of the project: downloads (:mod:`pipeline.net.download`) and
the crawler (:mod:`pipeline.crawl.crawler`) both fetch through it.

* :func:`session`: a requests session that reaches public addresses only
  (plus a test allow-list), ignores environment proxies and never retries on
  its own (:mod:`pipeline.net.netguard`);
* :func:`open_url`: one GET (or POST) that follows redirects itself, so every
  hop is checked by the guard before connecting (scheme, URL, address) and by
  the caller's ``before_hop`` (robots rules, rate limits); inside a
  :class:`~pipeline.net.netguard.Deadline` the whole of it, body included, ends
  in time;
* :class:`Policy`: timeouts, deadline, retries, backoff; :class:`Retrier`
  waits between attempts (exponential backoff, ``Retry-After`` honoured, and
  given up at once when a server asks for longer than ``max_backoff``);
* :func:`iter_body` / :func:`read_capped`: the body in chunks, with a byte cap,
  network failures turned into :class:`Transient` errors.

requests' own redirect handling is not used: even with
``allow_redirects=False`` it reads the whole body of a redirect answer and
prepares the next request, so a ``Location: file:///`` fails there as a
connection error and an endless redirect body is read in full.
"""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Callable, Iterator
from urllib.parse import urldefrag, urljoin

import requests
import urllib3
from requests.cookies import extract_cookies_to_jar

from pipeline.net import netguard
from pipeline.net.netguard import Deadline, GuardedAdapter, NetGuardError
from pipeline.settings import require

log = logging.getLogger(__name__)

#: Bytes read per chunk while streaming a body.
CHUNK = 64 << 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Failures of the network stack (the guard's refusals are NetGuardError).
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


class RedirectLoop(NetGuardError):
    reason = "redirect_loop"


class TooManyRedirects(NetGuardError):
    reason = "too_many_redirects"


class Transient(Exception):
    """A failure worth retrying (timeout, connection error, 429, 5xx, a body
    cut off); ``reason`` is what is recorded once retries run out."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


class TooLarge(Exception):
    """A body over its byte cap."""


@dataclass(frozen=True)
class Policy:
    """Timeouts, deadline, redirects and retries of requests.

    ``read_timeout`` bounds one socket read, ``deadline`` (None: no bound) a
    whole request: connect, headers, every redirect hop and the body.
    ``retries`` more attempts follow a :class:`Transient` failure after
    ``backoff * 2**n`` seconds, at most ``max_backoff``; a ``Retry-After``
    longer than ``max_backoff`` gives up at once.
    """
    connect_timeout: float = field(default=10.0, metadata={"help": "Seconds to connect."})
    read_timeout: float = field(default=60.0, metadata={"help": "Seconds one socket read may wait."})
    deadline: float | None = field(default=None, metadata={"help": "Seconds one response may take in all."})
    max_hops: int = field(default=5, metadata={"help": "Redirects followed per URL, at most."})
    retries: int = field(default=5, metadata={"help": "Retries of a timeout, connection error, 429 or 5xx."})
    backoff: float = field(default=1.0, metadata={"help": "First retry wait in seconds; doubles each retry."})
    max_backoff: float = field(default=60.0, metadata={"help": "Longest retry wait; a longer Retry-After "
                                                              "gives up."})

    def __post_init__(self):
        for name in ("connect_timeout", "read_timeout"):
            require(getattr(self, name) > 0, name, getattr(self, name), "> 0 (seconds)")
        require(self.deadline is None or self.deadline > 0, "deadline", self.deadline, "> 0 or None")
        for name in ("max_hops", "retries", "backoff", "max_backoff"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` seconds, as requests takes them."""
        read = self.read_timeout if self.deadline is None else min(self.read_timeout, self.deadline)
        return self.connect_timeout, read

    def deadline_context(self) -> Deadline | nullcontext:
        """A :class:`~pipeline.net.netguard.Deadline` of ``deadline`` seconds, or a no-op."""
        return Deadline(self.deadline) if self.deadline else nullcontext()


#: The crawler's policy (``CrawlConfig.fetch``): a crawl meets strangers' pages, many slow or
#: gone, one at a time per host, so it gives up sooner than a data-set download (whose files
#: are large and whose servers are known) and bounds each whole response.
CRAWL = Policy(connect_timeout=5.0, read_timeout=15.0, deadline=60.0, retries=3)


def session(allow=(), headers: dict[str, str] | None = None) -> requests.Session:
    """A session that can only reach public addresses (plus ``allow``: networks
    or ``address:port`` entries, meant for tests on loopback), ignores
    environment proxies, and does not retry on its own (:class:`Retrier` does)."""
    s = requests.Session()
    s.trust_env = False
    adapter = GuardedAdapter(allow, max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers.update(headers or {})
    return s


def _allow_of(s: requests.Session, url: str) -> netguard.AllowList:
    adapter = s.get_adapter(url)
    if not isinstance(adapter, GuardedAdapter):
        raise TypeError("open_url needs a session made by pipeline.net.httpclient.session")
    return adapter.allow


def _send(s: requests.Session, method: str, url: str, policy: Policy, headers, params, data):
    """One request through the guarded adapter, without requests' redirect logic."""
    prepared = s.prepare_request(requests.Request(method, url, headers=headers, params=params,
                                                  data=data))
    response = s.get_adapter(prepared.url).send(prepared, stream=True, timeout=policy.timeout,
                                                verify=True, proxies={})
    extract_cookies_to_jar(s.cookies, prepared, response.raw)
    return response


def open_url(s: requests.Session, url: str, policy: Policy = Policy(), *, method: str = "GET",
             headers: dict[str, str] | None = None, params: dict | None = None,
             data: dict | None = None, before_hop: Callable[[str], None] | None = None,
             resolver: netguard.Resolver = netguard.resolve) -> requests.Response:
    """The final response to ``url`` after up to ``policy.max_hops`` redirects,
    still streaming (the caller closes it; ``history`` holds the redirects).

    Each hop is checked by :func:`pipeline.net.netguard.check_url` before
    connecting, then passed to ``before_hop(url)``. A 303 (and a 301/302 to a
    POST) continues as a GET without body. Raises the guard's
    :class:`~pipeline.net.netguard.NetGuardError` for refused hops and
    :class:`Transient` for network failures and timeouts.
    """
    seen: set[str] = set()
    history: list[requests.Response] = []
    for _ in range(policy.max_hops + 1):
        url = urldefrag(url).url
        if url in seen:
            raise RedirectLoop(f"redirect loop back to {url}")
        seen.add(url)
        netguard.parse_target(url)  # other schemes and ambiguous URLs, before the adapter lookup
        netguard.check_url(url, _allow_of(s, url), resolver)
        if before_hop is not None:
            before_hop(url)
        try:
            _check_deadline()
            response = _send(s, method, url, policy, headers, params, data)
            _check_deadline()  # headers cut short by the deadline look complete to http.client
        except NETWORK_ERRORS as exc:
            raise transient(exc) from None
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            response.history = history
            return response
        response.close()
        history.append(response)
        if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
            method, data = "GET", None
        params = None  # they are part of the first URL only
        url = urljoin(url, location.strip())
    raise TooManyRedirects(f"more than {policy.max_hops} redirects, last to {url}")


def _check_deadline() -> None:
    deadline = Deadline.current()
    if deadline is not None:
        deadline.check()


def transient(exc: BaseException) -> Transient:
    """The :class:`Transient` failure for a network error: ``timeout`` (read or
    connect timeout, or the deadline passed) or ``connection_error``."""
    deadline = Deadline.current()
    if deadline is not None and (deadline.expired or deadline.remaining() <= 0):
        return Transient("timeout", f"the deadline of {deadline.seconds:g} s passed")
    timeout = isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError))
    return Transient("timeout" if timeout else "connection_error", f"{type(exc).__name__}: {exc}")


def retry_after(response: requests.Response) -> float | None:
    """Seconds asked for by ``Retry-After`` (delta-seconds or HTTP date), or None."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError, IndexError):
        return None


def raise_for_retry(response: requests.Response) -> None:
    """Raise :class:`Transient` (``http_<status>``, with its Retry-After) for a
    429 or 5xx answer worth retrying."""
    if response.status_code in RETRY_STATUSES:
        raise Transient(f"http_{response.status_code}", response.reason or "", retry_after(response))


def iter_body(response: requests.Response, chunk: int = CHUNK) -> Iterator[bytes]:
    """The body, decoded, as each socket read brings it (so the deadline is
    checked often); network failures become :class:`Transient`."""
    while True:
        try:
            _check_deadline()
            data = response.raw.read1(chunk, decode_content=True)
            if not data:
                _check_deadline()  # a body cut by the deadline ends like a whole one
                return
        except NETWORK_ERRORS as exc:
            raise transient(exc) from None
        yield data


def read_capped(response: requests.Response, cap: int, truncate: bool = False) -> bytes:
    """The whole body, at most ``cap`` bytes: :class:`TooLarge` over it (also
    when ``Content-Length`` announces more), or the first ``cap`` bytes when
    ``truncate``."""
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > cap and not truncate:
        raise TooLarge(f"Content-Length {declared} is over the {cap} byte cap")
    body = bytearray()
    for data in iter_body(response):
        body += data
        if len(body) > cap:
            if truncate:
                return bytes(body[:cap])
            raise TooLarge(f"body is over the {cap} byte cap")
    return bytes(body)


class Retrier:
    """Counts consecutive failures and waits between attempts.

    ``failed(exc)`` sleeps ``backoff * 2**(n-1)`` seconds after the n-th
    failure in a row (at least the server's ``Retry-After``, at most
    ``max_backoff``) or re-raises ``exc`` when ``retries`` are used up or the
    server asks to wait longer than ``max_backoff``. ``progressed=True``
    (a resumed download moved forward) restarts the count.
    """

    def __init__(self, policy: Policy, sleep: Callable[[float], None] = time.sleep):
        self.policy, self.sleep = policy, sleep
        self.failures = 0

    def failed(self, exc: Transient, progressed: bool = False) -> None:
        policy = self.policy
        self.failures = 1 if progressed else self.failures + 1
        asked = exc.retry_after or 0.0
        if asked > policy.max_backoff:
            exc.detail = (f"{exc.detail}; " if exc.detail else "") + \
                f"the server asks to retry after {asked:g} s (more than max_backoff {policy.max_backoff:g} s)"
            raise exc
        if self.failures > policy.retries:
            raise exc
        wait = min(max(policy.backoff * 2 ** (self.failures - 1), asked), policy.max_backoff)
        log.debug("%s; retrying in %.2f s", exc, wait)
        self.sleep(wait)


def retrying(attempt: Callable[[], object], policy: Policy) -> object:
    """``attempt()`` until it returns, retrying :class:`Transient` failures
    as :class:`Retrier` says; the last failure is raised."""
    retrier = Retrier(policy)
    while True:
        try:
            return attempt()
        except Transient as exc:
            retrier.failed(exc)

