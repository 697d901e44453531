"""Keep outbound HTTP on the public internet.

A crawler follows URLs that strangers wrote, so a page (or a redirect) can
point it at 127.0.0.1, the LAN, or a cloud metadata service such as
169.254.169.254. This module refuses those:

* :func:`check_url` resolves a URL's host and refuses it unless every address
  is globally routable (or inside an explicit test allow-list), before any
  connection is made;
* :func:`guarded_get` follows redirects itself (``allow_redirects=False``), so
  every hop is checked the same way, with a hop cap and loop detection;
* :func:`guarded_session` mounts an adapter that checks the peer address of
  every new connection again, which closes the gap between the check and the
  connect (DNS rebinding) and protects plain ``session.get`` calls too.

Proxies from the environment are ignored (``trust_env=False``): through a
proxy the address check would test the wrong machine.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urldefrag, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

SCHEMES = ("http", "https")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class NetGuardError(Exception):
    """A request refused by the guard; ``reason`` is a short machine-readable tag."""
    reason = "refused"


class UnsupportedScheme(NetGuardError):
    reason = "unsupported_scheme"


class NonPublicAddress(NetGuardError):
    reason = "non_public_address"


class UnresolvableHost(NetGuardError):
    reason = "dns_error"


class RedirectLoop(NetGuardError):
    reason = "redirect_loop"


class TooManyRedirects(NetGuardError):
    reason = "too_many_redirects"


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


def parse_networks(networks: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """``['127.0.0.0/8', ...]`` as network objects; a bad entry raises ValueError."""
    parsed = []
    for net in networks:
        try:
            parsed.append(ipaddress.ip_network(net, strict=False))
        except ValueError as exc:
            raise ValueError(f"allow_networks entry {net!r} is not a network: {exc}") from None
    return tuple(parsed)


def check_address(ip: IPAddress | str, allow_networks: Iterable[IPNetwork] = ()) -> None:
    """Raise :class:`NonPublicAddress` unless ``ip`` is public or allow-listed."""
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if is_public(ip):
        return
    for net in allow_networks:
        if ip.version == net.version and ip in net:
            return
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None and mapped in net:
            return
    raise NonPublicAddress(f"address {ip} is not globally routable")


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


def check_url(url: str, allow_networks: Iterable[IPNetwork] = (),
              resolver: Resolver = resolve) -> list[IPAddress]:
    """Refuse ``url`` unless it is http(s) and *all* its host's addresses pass.

    All, not any: a name that resolves to one public and one private address
    could otherwise be connected to the private one.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise UnsupportedScheme(f"scheme {parts.scheme or '(none)'!r} of {url} is not http/https")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise UnsupportedScheme(f"bad port in {url}") from None
    if not parts.hostname:
        raise UnsupportedScheme(f"no host in {url}")
    addresses = resolver(parts.hostname, port)
    if not addresses:
        raise UnresolvableHost(f"{parts.hostname!r} has no address")
    for ip in addresses:
        try:
            check_address(ip, allow_networks)
        except NonPublicAddress as exc:
            raise NonPublicAddress(f"{url}: {exc}") from None
    return addresses


class _PeerCheck:
    """Connection mixin: refuse a socket whose peer is not allowed, before any byte is sent."""
    allow_networks: tuple[IPNetwork, ...] = ()

    def _new_conn(self):
        sock = super()._new_conn()
        try:
            check_address(sock.getpeername()[0], self.allow_networks)
        except NonPublicAddress:
            sock.close()
            raise
        return sock


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections check their peer address at connect time."""

    def __init__(self, allow_networks: Iterable[str | IPNetwork] = (), **kwargs):
        self.allow_networks = parse_networks(allow_networks)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        nets = {"allow_networks": self.allow_networks}
        http_conn = type("GuardedHTTPConnection", (_PeerCheck, HTTPConnection), nets)
        https_conn = type("GuardedHTTPSConnection", (_PeerCheck, HTTPSConnection), nets)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,),
                         {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,),
                          {"ConnectionCls": https_conn}),
        }

    def __getstate__(self):
        state = super().__getstate__()
        state["allow_networks"] = self.allow_networks
        return state


def guarded_session(allow_networks: Iterable[str | IPNetwork] = (),
                    headers: dict[str, str] | None = None) -> requests.Session:
    """A session that can only reach public addresses (plus ``allow_networks``,
    meant for tests on loopback), ignores environment proxies, and does not
    retry on its own (callers own their retry policy)."""
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedAdapter(allow_networks, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(headers or {})
    return session


def _allow_networks_of(session: requests.Session, url: str) -> tuple[IPNetwork, ...]:
    adapter = session.get_adapter(url)
    if not isinstance(adapter, GuardedAdapter):
        raise TypeError("guarded_get needs a session made by netguard.guarded_session")
    return adapter.allow_networks


def guarded_get(session: requests.Session, url: str, *, timeout, max_hops: int = 5,
                before_hop: Callable[[str], None] | None = None,
                resolver: Resolver = resolve, headers: dict[str, str] | None = None
                ) -> requests.Response:
    """GET ``url`` with streaming, following up to ``max_hops`` redirects.

    Each hop is checked by :func:`check_url` before connecting, then passed to
    ``before_hop(url)`` (robots rules, rate limits: raise to refuse). Returns
    the final response, still streaming: the caller closes it. Its ``url`` is
    the final URL and ``history`` holds the (closed) redirect responses.
    """
    seen: set[str] = set()
    history: list[requests.Response] = []
    for _ in range(max_hops + 1):
        url = urldefrag(url).url
        if url in seen:
            raise RedirectLoop(f"redirect loop back to {url}")
        seen.add(url)
        check_url(url, _allow_networks_of(session, url), resolver)
        if before_hop is not None:
            before_hop(url)
        response = session.get(url, timeout=timeout, stream=True,
                               allow_redirects=False, headers=headers)
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            response.history = history
            return response
        response.close()
        history.append(response)
        url = urljoin(url, location.strip())
    raise TooManyRedirects(f"more than {max_hops} redirects, last to {url}")
