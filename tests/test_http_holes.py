"""Holes found by probing the crawler with hostile servers (issue 19), each
against real HTTP servers on loopback addresses.

* a redirect whose authority the URL parsers read differently
  (``http://127.0.0.2:Q\\@127.0.0.1:P/x``) must not reach 127.0.0.2;
* ``host:port`` allow-list entries admit exactly one server;
* the deadline covers the response headers and every redirect hop;
* a redirect to ``file:``/``gopher:``/``ftp:`` is refused once as ``unsupported_scheme``.
"""
from __future__ import annotations

import dataclasses
import time

import pytest

from pipeline.crawl.crawler import REJECTED, CrawlConfig, crawl, read_jsonl
from pipeline.net import httpclient, netguard

pytest_plugins = ["conftest_http"]

CONTACT = "https://example.org/face-pipeline-crawler"
PAGE = b"<!doctype html><html><body>hello</body></html>"


def config(server, path="/", **kw) -> CrawlConfig:
    settings = dict(contact_url=CONTACT, allow_networks=["127.0.0.0/8"], min_delay=0.0,
                    connect_timeout=2.0, read_timeout=0.4, deadline=1.0, retries=0,
                    backoff=0.02, max_backoff=0.5)
    settings.update(kw)
    fetch = httpclient.Policy(**{k: settings.pop(k) for k in list(settings)
                                 if k in {f.name for f in dataclasses.fields(httpclient.Policy)}})
    return CrawlConfig(seeds=[server.url(path)], fetch=fetch, **settings)


def reasons(out) -> dict[str, str]:
    return {row["url"]: row["reason"] for row in read_jsonl(out / REJECTED)}


def page(h):
    h.send_bytes(PAGE, ctype="text/html")


@pytest.fixture
def other_server(start_http_server):
    """A second server, on 127.0.0.2: what a crawl of 127.0.0.1 must not reach."""
    return start_http_server("127.0.0.2")


def test_redirect_the_parsers_read_differently_does_not_reach_another_address(
        http_server, other_server, tmp_path):
    other_server.routes["/x"] = page
    sneaky = f"http://{other_server.netloc}\\@{http_server.netloc}/x"
    http_server.routes["/"] = lambda h: h.send_bytes(b"", 302, headers={"Location": sneaky})
    summary = crawl(config(http_server), tmp_path / "day")
    assert other_server.log == []
    assert summary["pages_fetched"] == 0
    assert reasons(tmp_path / "day") == {http_server.url("/"): "invalid_url"}
    # past the URL check (a plain session.get), the connect-time check refuses the same peer
    with pytest.raises(netguard.NonPublicAddress):
        httpclient.session([http_server.netloc]).get(sneaky, timeout=2)
    assert other_server.log == []


@pytest.mark.parametrize("url", [
    "http://127.0.0.2:8080\\@127.0.0.1:9090/x",    # urllib3: 127.0.0.2:8080; urlsplit: 127.0.0.1:9090
    "http://127.0.0.1:9090\\@127.0.0.2/",
    "http://user:pw@127.0.0.1:9090/x",              # credentials from a stranger's page
])
def test_guard_refuses_urls_with_backslash_or_userinfo(url):
    with pytest.raises(netguard.InvalidURL):
        netguard.check_url(url, netguard.parse_allow_list(["127.0.0.0/8"]))


def test_host_port_allow_list_admits_exactly_one_server(http_server, start_http_server, tmp_path):
    second = start_http_server()
    second.routes["/x"] = page
    allow = [http_server.netloc]
    session = httpclient.session(allow)
    http_server.routes["/"] = page
    with session.get(http_server.url("/"), timeout=2) as response:
        assert response.content == PAGE
    with pytest.raises(netguard.NonPublicAddress):
        session.get(second.url("/x"), timeout=2)
    assert second.log == []
    # the crawler: the second server's page is linked, allowed as a host, refused as an address
    http_server.routes["/"] = lambda h: h.send_bytes(
        f'<a href="{second.url("/x")}">x</a>'.encode(), ctype="text/html")
    summary = crawl(config(http_server, allow_networks=allow,
                           allowed_hosts=[http_server.netloc, second.netloc]), tmp_path / "a")
    assert summary["pages_fetched"] == 1 and second.log == []
    assert reasons(tmp_path / "a") == {second.url("/x"): "non_public_address"}
    # ... and as a host: a host:port entry does not admit the same host on another port
    summary = crawl(config(http_server, allowed_hosts=[http_server.netloc]), tmp_path / "b")
    assert reasons(tmp_path / "b") == {second.url("/x"): "off_site"} and second.log == []


def drip_headers(h):
    """A status line, then header lines a byte every 0.05 s (each read is quick)."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    h.wfile.flush()
    for byte in b"Content-Type: text/html\r\nX-Slow: " + b"y" * 80 + b"\r\n\r\n":
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        time.sleep(0.05)
    h.close_connection = True


def test_deadline_covers_the_response_headers(http_server, tmp_path):
    http_server.routes["/"] = drip_headers
    start = time.monotonic()
    summary = crawl(config(http_server, deadline=1.0, read_timeout=0.4), tmp_path / "day")
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, f"a 5 s header drip held the fetch {elapsed:.1f} s past a 1 s deadline"
    assert summary["pages_fetched"] == 0
    assert reasons(tmp_path / "day") == {http_server.url("/"): "timeout"}


def test_deadline_covers_every_redirect_hop(http_server, tmp_path):
    def slow_redirect(i):
        def route(h):
            time.sleep(0.3)  # each hop well within the read timeout
            h.send_bytes(b"", 302, headers={"Location": f"/h{i + 1}"})
        return route

    http_server.routes.update({f"/h{i}": slow_redirect(i) for i in range(8)})
    http_server.routes["/h8"] = page
    start = time.monotonic()
    crawl(config(http_server, "/h0", deadline=1.0, read_timeout=0.4, max_hops=10), tmp_path / "d")
    assert time.monotonic() - start < 2.0
    assert reasons(tmp_path / "d") == {http_server.url("/h0"): "timeout"}
    assert len(http_server.requests_to("/h8")) == 0


@pytest.mark.parametrize("location", ["file:///etc/passwd", "gopher://127.0.0.1:70/_x",
                                      "ftp://127.0.0.1/pub/x.jpg"])
def test_redirect_to_another_scheme_is_refused_once(http_server, tmp_path, location):
    http_server.routes["/"] = lambda h: h.send_bytes(b"", 302, headers={"Location": location})
    crawl(config(http_server, retries=3), tmp_path / "day")
    assert reasons(tmp_path / "day") == {http_server.url("/"): "unsupported_scheme"}
    assert len(http_server.requests_to("/")) == 1
