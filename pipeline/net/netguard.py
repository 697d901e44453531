"""Keep outbound HTTP on the public internet, and within its time.

A crawler follows URLs that strangers wrote, so a page (or a redirect) can
point it at 127.0.0.1, the LAN, or a cloud metadata service such as
169.254.169.254, or hold it for ever with a server that drips bytes. This
module refuses those; :mod:`pipeline.net.httpclient` is the client built on it.

* :func:`parse_target` reads a URL's scheme, host and port exactly as urllib3
  (which makes the connection) reads them, and refuses a URL that Python's
  ``urlsplit`` reads differently, or that holds credentials or a backslash:
  ``http://127.0.0.2:8080\\@127.0.0.1/`` is 127.0.0.1 to ``urlsplit`` but
  127.0.0.2:8080 to urllib3;
* :func:`check_url` resolves the host and refuses it unless every address is
  globally routable (or admitted by an explicit test allow-list), before any
  connection is made;
* :class:`GuardedAdapter` checks the peer address and port of every new
  connection again with the same rule, which closes the gap between the check
  and the connect (DNS rebinding, a parser the URL check did not foresee);
* :class:`Deadline` bounds a whole request in wall-clock time: connect,
  headers, body and every redirect hop. A server that sends a byte just
  before each read timeout is cut off when the deadline passes.

Proxies from the environment are ignored (``trust_env=False``): through a
proxy the address check would test the wrong machine.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}


class NetGuardError(Exception):
    """A request refused by the guard; ``reason`` is a short machine-readable tag."""
    reason = "refused"


class UnsupportedScheme(NetGuardError):
    reason = "unsupported_scheme"


class InvalidURL(NetGuardError):
    reason = "invalid_url"


class NonPublicAddress(NetGuardError):
    reason = "non_public_address"


class UnresolvableHost(NetGuardError):
    reason = "dns_error"


class DeadlineExceeded(TimeoutError):
    """The request's :class:`Deadline` passed."""


# --- URLs -----------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where a request goes: ``scheme``, ``host`` (lower case, IPv6 without
    brackets) and ``port`` (the scheme's default when the URL has none)."""
    scheme: str
    host: str
    port: int

    @property
    def netloc(self) -> str:
        """``host`` or ``host:port`` (default port left out), IPv6 in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def _idna(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidURL(f"host {host!r} is not a valid international domain name") from None


def parse_target(url: str) -> Target:
    """The :class:`Target` of an http(s) URL, as the HTTP client will connect.

    Raises :class:`UnsupportedScheme` for other schemes, :class:`InvalidURL`
    for a URL with credentials, a backslash or a control character, no host,
    a bad port, or one that ``urlsplit`` and urllib3 read as different hosts
    or ports (whitespace in the authority among them).
    """
    if any(c == "\\" or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidURL(f"{url!r} holds a backslash or a control character")
    try:
        split = urlsplit(url)
    except ValueError as exc:
        raise InvalidURL(f"{url}: {exc}") from None
    scheme = split.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsupportedScheme(f"scheme {split.scheme or '(none)'!r} of {url} is not http/https")
    if any(c.isspace() for c in split.netloc):
        raise InvalidURL(f"{url!r} holds whitespace in its host part")
    try:
        ours, theirs = split.port, parse_url(url)
    except (ValueError, LocationParseError) as exc:
        raise InvalidURL(f"{url}: {exc}") from None
    if split.username is not None or split.password is not None or theirs.auth:
        raise InvalidURL(f"{url} carries credentials (user:password@)")
    if not split.hostname or not theirs.host:
        raise InvalidURL(f"no host in {url}")
    host = theirs.host.strip("[]").lower()
    port = theirs.port or DEFAULT_PORTS[scheme]
    if _idna(split.hostname) != host or (ours or DEFAULT_PORTS[scheme]) != port:
        raise InvalidURL(f"{url} names {split.hostname}:{ours} to one parser and {host}:{port} "
                         f"to another")
    return Target(scheme, host, port)


# --- addresses ----------------------------------------------------------------------

def is_public(ip: IPAddress) -> bool:
    """True when ``ip`` is globally routable unicast.

    IPv6 forms that embed an IPv4 address (``::ffff:a.b.c.d``, 6to4) are judged
    by the embedded address; Python's ``is_global`` alone admits multicast and
    6to4-wrapped loopback, hence the explicit flags.
    """
    if ip.version == 6:
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return is_public(embedded)
    special = (ip.is_private, ip.is_loopback, ip.is_link_local, ip.is_multicast,
               ip.is_reserved, ip.is_unspecified)
    return ip.is_global and not any(special)


@dataclass(frozen=True)
class Allowed:
    """One allow-list entry: every address of ``network``, on ``port`` only when set."""
    network: IPNetwork
    port: int | None = None

    def admits(self, ip: IPAddress, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        if ip.version == self.network.version and ip in self.network:
            return True
        mapped = getattr(ip, "ipv4_mapped", None)
        return mapped is not None and mapped in self.network


AllowList = tuple[Allowed, ...]


def _allowed(entry: str | Allowed) -> Allowed:
    if isinstance(entry, Allowed):
        return entry
    text = str(entry).strip()
    try:
        return Allowed(ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    host, sep, port = text.rpartition(":")
    try:
        if sep and port.isdigit() and 0 < int(port) < 65536:
            return Allowed(ipaddress.ip_network(host.strip("[]")), int(port))
    except ValueError:
        pass
    raise ValueError(f"allow_networks entry {entry!r} is neither a network (127.0.0.0/8) nor "
                     f"an address:port (127.0.0.1:8080)")


def parse_allow_list(entries: Iterable[str | Allowed]) -> AllowList:
    """``['127.0.0.0/8', '127.0.0.1:8080', '[::1]:8080']`` as :class:`Allowed`
    entries (networks, or one address on one port); a bad entry raises ValueError."""
    return tuple(_allowed(entry) for entry in entries)


def check_address(ip: IPAddress | str, allow: AllowList = (), port: int | None = None) -> None:
    """Raise :class:`NonPublicAddress` unless ``ip`` is public or ``allow`` admits
    it (on ``port``, for entries that name one)."""
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if is_public(ip) or any(entry.admits(ip, port) for entry in allow):
        return
    where = f"{ip}" if port is None else f"{ip} port {port}"
    raise NonPublicAddress(f"address {where} is not globally routable")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (a literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"cannot resolve {host!r}: {exc}") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def check_url(url: str, allow: AllowList = (), resolver: Resolver = resolve) -> Target:
    """Refuse ``url`` unless :func:`parse_target` accepts it and *all* its
    host's addresses pass :func:`check_address`; returns its target.

    All, not any: a name that resolves to one public and one private address
    could otherwise be connected to the private one.
    """
    target = parse_target(url)
    addresses = resolver(target.host, target.port)
    if not addresses:
        raise UnresolvableHost(f"{target.host!r} has no address")
    for ip in addresses:
        try:
            check_address(ip, allow, target.port)
        except NonPublicAddress as exc:
            raise NonPublicAddress(f"{url}: {exc}") from None
    return target


# --- the deadline ---------------------------------------------------------------------

class Deadline:
    """``with Deadline(seconds):`` every request made in the block, in this
    thread, ends by then.

    Connections opened in the block get at most the time left to connect;
    every connection used in it (new or pooled) is shut down when the time is
    up, so a blocked read returns at once whatever the read timeout. The
    client then reports a timeout (:attr:`expired` says why the read failed).
    """
    _local = threading.local()

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._watched: list = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._outer: Deadline | None = None

    @classmethod
    def current(cls) -> Deadline | None:
        """The innermost active deadline of this thread, or None."""
        return getattr(cls._local, "deadline", None)

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def check(self) -> None:
        """Raise :class:`DeadlineExceeded` once the time is up."""
        if self.expired or self.remaining() <= 0:
            self.expired = True
            raise DeadlineExceeded(f"the deadline of {self.seconds:g} s passed")

    def watch(self, conn_or_sock) -> None:
        """Shut ``conn_or_sock`` (a socket, or a connection whose ``sock`` is
        looked up then) down when the deadline passes."""
        with self._lock:
            self._watched.append(conn_or_sock)
            expired = self.expired
        if expired:
            _shut(conn_or_sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            watched = list(self._watched)
        for item in watched:
            _shut(item)

    def _arm(self) -> None:
        self._timer = threading.Timer(max(0.0, self.remaining()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent in the block is not counted (a politeness wait between
        hops is the client's choice, not the server's slowness)."""
        self._timer.cancel()
        start = time.monotonic()
        try:
            yield
        finally:
            self.ends += time.monotonic() - start
            self._arm()

    def __enter__(self) -> Deadline:
        self._outer = Deadline.current()
        Deadline._local.deadline = self
        self._arm()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        Deadline._local.deadline = self._outer


def _shut(conn_or_sock) -> None:
    sock = getattr(conn_or_sock, "sock", conn_or_sock)
    if sock is None:
        return
    try:
        # The plain socket's shutdown, also for TLS sockets: SSLSocket.shutdown
        # would drop its TLS state under a thread still reading from it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass


# --- connections ----------------------------------------------------------------------

class _Guarded:
    """Connection mixin: refuse a socket whose peer the allow rules refuse,
    before any byte is sent; keep within the thread's :class:`Deadline`."""
    allow: AllowList = ()

    def _new_conn(self):
        deadline = Deadline.current()
        if deadline is not None:
            deadline.check()
            if self.timeout is None or self.timeout > deadline.remaining():
                self.timeout = max(deadline.remaining(), 0.001)
        sock = super()._new_conn()
        host, port = sock.getpeername()[:2]
        try:
            check_address(host.split("%")[0], self.allow, port)
        except NonPublicAddress:
            sock.close()
            raise
        if deadline is not None:
            deadline.watch(sock)
        return sock

    def request(self, *args, **kwargs):
        deadline = Deadline.current()
        if deadline is not None:
            deadline.check()
            deadline.watch(self)  # a pooled connection made under an earlier deadline
        return super().request(*args, **kwargs)


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections check their peer and keep the deadline."""

    def __init__(self, allow: Iterable[str | Allowed] = (), **kwargs):
        self.allow = parse_allow_list(allow)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        rules = {"allow": self.allow}
        http_conn = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), rules)
        https_conn = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), rules)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }

    def __getstate__(self):
        state = super().__getstate__()
        state["allow"] = self.allow
        return state
