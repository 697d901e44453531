"""Crawler and network guard against a real HTTP site on 127.0.0.1.

Every test site is an ``http.server`` in a thread with handlers defined here.
A module-wide guard refuses any socket connect to a non-loopback address, so
nothing here can reach the outside (and the redirect to 169.254.169.254 is
shown to be refused by netguard before any connect is attempted).
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import ipaddress
import json
import math
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import imagehash
import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from pipeline.crawl.crawler import INDEX, REJECTED, SUMMARY, CrawlConfig, crawl, earlier_outputs, read_seeds
from pipeline.crawl.links import extract_links, normalize_url
from pipeline.crawl.robots import parse_robots
from pipeline.imaging import DecodeError, load_image
from pipeline.jsonl import read_jsonl
from pipeline.net import httpclient, netguard
from pipeline.sources.base import DirectorySource, list_images

CONTACT = "https://example.org/face-pipeline-crawler"
LOOPBACK = ["127.0.0.0/8"]
THRESHOLD = 6


# --- no traffic off this machine -----------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def connects():
    """Every (host) a socket of this process tried to connect to; non-loopback ones fail."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0].split("%")[0]
            attempts.append(host)
            if not ipaddress.ip_address(host).is_loopback:
                raise OSError(f"test guard: refused connect to non-loopback {host}")
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        yield attempts


# --- test images ------------------------------------------------------------------

S = 128


def _canvas() -> Image.Image:
    return Image.new("RGB", (S, S), (240, 240, 240))


def _circle():
    im = _canvas()
    ImageDraw.Draw(im).ellipse((20, 20, 108, 108), fill=(200, 30, 30))
    return im


def _star():
    im = _canvas()
    points = [(64 + r * 50 * math.cos(math.pi / 2 + i * math.pi / 5),
               64 - r * 50 * math.sin(math.pi / 2 + i * math.pi / 5))
              for i, r in enumerate([1, .4] * 5)]
    ImageDraw.Draw(im).polygon(points, fill=(30, 30, 200))
    return im


def _triangle():
    im = _canvas()
    ImageDraw.Draw(im).polygon([(10, 118), (64, 10), (118, 118)], fill=(20, 150, 40))
    return im


def _scene():
    y, x = np.mgrid[0:S, 0:S]
    im = Image.fromarray(np.stack([x * 2, y * 2, x + y], -1).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    draw.rectangle((15, 60, 60, 115), fill=(250, 220, 40))
    draw.ellipse((70, 15, 115, 60), fill=(20, 20, 90))
    return im


def _rings():
    y, x = np.mgrid[0:S, 0:S]
    a = ((np.cos(np.hypot(x - 40, y - 90) / 5) + 1) * 127).astype(np.uint8)
    return Image.fromarray(np.stack([a, 255 - a, a], -1))


def _checker():
    y, x = np.mgrid[0:S, 0:S]
    a = ((x // 32 + y // 32) % 2 * 200 + 30).astype(np.uint8)
    return Image.fromarray(np.stack([a, a, a], -1))


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: a huge canvas in a few kilobytes."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    row = b"\x00" + bytes((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


IMAGES = {
    "circle": _encode(_circle(), "PNG"),
    "star": _encode(_star(), "PNG"),
    "triangle": _encode(_triangle(), "PNG"),
    "scene": _encode(_scene(), "JPEG", quality=90),
    "rings": _encode(_rings(), "PNG"),
    "checker": _encode(_checker(), "PNG"),
}
SCENE_Q35 = _encode(_scene(), "JPEG", quality=35)
NOISE = _encode(Image.fromarray(
    np.random.default_rng(0).integers(0, 256, (300, 300, 3), np.uint8)), "PNG")
BOMB = bilevel_png(20000, 20000)
EXT = {"PNG": "png", "JPEG": "jpg"}


def key_of(data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    return f"{sha[:2]}/{sha}.{EXT[Image.open(io.BytesIO(data)).format]}"


def _phash(data: bytes):
    return imagehash.phash(Image.open(io.BytesIO(data)))


def test_test_images_are_distinct_and_near_duplicate_is_near():
    hashes = {name: _phash(data) for name, data in IMAGES.items()}
    for a in hashes:
        for b in hashes:
            if a < b:
                assert hashes[a] - hashes[b] > 3 * THRESHOLD, (a, b)
    assert SCENE_Q35 != IMAGES["scene"]
    assert _phash(SCENE_Q35) - hashes["scene"] <= THRESHOLD
    assert len(BOMB) < 100_000 and struct.unpack(">II", BOMB[16:24]) == (20000, 20000)
    assert len(NOISE) > 200_000


# --- a real site on loopback ---------------------------------------------------

class Site:
    """ThreadingHTTPServer on 127.0.0.1 serving ``routes`` (path -> handler(req));
    ``log`` records (path, monotonic time, User-Agent) of every request."""

    def __init__(self):
        self.routes: dict = {}
        self.log: list[tuple[str, float, str]] = []
        self.release = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                site.log.append((self.path, time.monotonic(), self.headers.get("User-Agent", "")))
                route = site.routes.get(self.path, respond(b"no such page", "text/plain", 404))
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.log if p == path)

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.stop()


def respond(body: bytes, ctype: str | None, status: int = 200, headers=None, length=True):
    def route(req):
        req.send_response(status)
        if ctype:
            req.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            req.send_header(name, value)
        if length:
            req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)
    return route


def html(body: str):
    page = f"<!doctype html><html><body>{body}</body></html>".encode()
    return respond(page, "text/html; charset=utf-8")


def redirect(location: str, status: int = 302):
    return respond(b"", None, status, {"Location": location})


def stall(site: Site, body: bytes, ctype: str):
    """Send the headers and half the body, then go silent."""
    def route(req):
        respond(b"", ctype, headers={"Content-Length": str(len(body))}, length=False)(req)
        req.wfile.write(body[:len(body) // 2])
        req.wfile.flush()
        site.release.wait(10)
    return route


def drip(site: Site, body: bytes, ctype: str, piece: int = 200, every: float = 0.1):
    """Send the body a little at a time: each read is quick, the whole is slow."""
    def route(req):
        respond(b"", ctype, headers={"Content-Length": str(len(body))}, length=False)(req)
        for start in range(0, len(body), piece):
            req.wfile.write(body[start:start + piece])
            req.wfile.flush()
            if site.release.wait(every):
                return
    return route


def in_turn(*routes):
    """First request gets the first route, and so on; the last one repeats."""
    calls = iter(routes)
    last = [routes[-1]]

    def route(req):
        last[0] = next(calls, last[0])
        last[0](req)
    return route


POLICY_FIELDS = {f.name for f in dataclasses.fields(httpclient.Policy)}


def config_for(site: Site, *seeds: str, **kw) -> CrawlConfig:
    # read_timeout 0.8, not 0.4: a loaded fresh-clone make test held "/" back longer than 0.4 s, and
    # the retry counted it twice; the stalled page (silent 10 s) and the drip (15 s) still time out
    defaults = dict(contact_url=CONTACT, allow_networks=LOOPBACK, min_delay=0.0,
                    connect_timeout=2.0, read_timeout=0.8, deadline=1.0,
                    max_image_bytes=200_000, retries=1, backoff=0.02, max_backoff=0.5,
                    phash_threshold=THRESHOLD)
    defaults.update(kw)
    fetch = httpclient.Policy(**{k: defaults.pop(k) for k in list(defaults) if k in POLICY_FIELDS})
    return CrawlConfig(seeds=[site.url(s) for s in seeds or ["/"]], fetch=fetch, **defaults)


def by_url(rows: list[dict]) -> dict[str, dict]:
    return {row["url"]: row for row in rows}


# --- the full site: every kind of trouble in one polite crawl -----------------------

CRAWL_DELAY = 0.2


def build_full_site(site: Site) -> None:
    u = site.url
    site.routes.update({
        "/robots.txt": respond(f"User-agent: *\nDisallow: /private/\nCrawl-delay: {CRAWL_DELAY}\n"
                               .encode(), "text/plain"),
        "/": html(
            '<a href="/gallery.html">gallery</a> <a href="cycle-a.html">cycle</a>'
            '<a href="/private/secret.html">secret</a> <a href="/missing.html">gone</a>'
            '<a href="/notes.txt">notes</a> <a href="/img/rings.png">a linked image</a>'
            '<a href="ftp://example.org/x.jpg">ftp</a> <a href="javascript:alert(1)">js</a>'
            '<img src="data:image/png;base64,iVBORw0KGgo="> <a href="http://other.example/page.html">x</a>'
            '<a href="mailto:someone@example.org">mail</a> <a href="http://[::1">bad</a>'),
        "/gallery.html": html(
            "".join(f'<img src="{p}">' for p in [
                "/img/circle.png", "/img/scene.jpg", "/img/circle-copy.png", "/img/scene-q35.jpg",
                "/img/huge.png", "/img/huge-stream.png", "/img/bomb.png", "/img/fake.jpg",
                "/img/page.jpg", "/img/missing.png", "/img/error.png", "/img/busy.png",
                "/img/stall.jpg", "/img/drip.jpg", "/img/flaky.png", "/img/redirect-private.png",
                "/img/redirect-metadata.png", "/img/redirect-loop.png", "/img/moved.png",
                "/img/truncated.png", "/private/hidden.png"])
            + '<img src="/img/circle.png#again" '
              'srcset="/img/triangle.png 1x, /img/circle.png 2x">'),
        "/cycle-a.html": html('<a href="/cycle-b.html">b</a>'),
        "/cycle-b.html": html(f'<a href="/cycle-a.html#top">a</a> '
                              f'<a href="HTTP://127.0.0.1:{site.server.server_port}/">home</a> '
                              '<a href="/deep.html">deep</a>'),
        "/deep.html": html("too deep"),
        "/private/secret.html": html("secret"),
        "/private/hidden.png": respond(IMAGES["star"], "image/png"),
        "/private/target.png": respond(IMAGES["star"], "image/png"),
        "/notes.txt": respond(b"just text", "text/plain"),
        "/img/circle.png": respond(IMAGES["circle"], "image/png"),
        "/img/circle-copy.png": respond(IMAGES["circle"], "image/png"),
        "/img/scene.jpg": respond(IMAGES["scene"], "image/jpeg",
                                  headers={"ETag": '"scene-v1"',
                                           "Last-Modified": "Sat, 21 Nov 2026 10:00:00 GMT"}),
        "/img/scene-q35.jpg": respond(SCENE_Q35, "image/jpeg"),
        "/img/triangle.png": respond(IMAGES["triangle"], "image/png"),
        "/img/rings.png": respond(IMAGES["rings"], "image/png"),
        "/img/huge.png": respond(NOISE, "image/png"),
        "/img/huge-stream.png": respond(NOISE, "image/png", length=False),
        "/img/bomb.png": respond(BOMB, "image/png"),
        "/img/fake.jpg": respond(b"<html><body>not a picture</body></html>", "image/jpeg"),
        "/img/page.jpg": respond(b"<html><body>a page</body></html>", "text/html"),
        "/img/error.png": respond(b"boom", "text/plain", 500),
        "/img/busy.png": respond(b"slow down", "text/plain", 429, {"Retry-After": "0"}),
        "/img/stall.jpg": stall(site, IMAGES["scene"], "image/jpeg"),
        "/img/drip.jpg": drip(site, NOISE[:30_000], "image/jpeg"),
        "/img/flaky.png": in_turn(respond(b"busy", "text/plain", 503),
                                  respond(IMAGES["checker"], "image/png")),
        "/img/redirect-private.png": redirect("/private/target.png"),
        "/img/redirect-metadata.png": redirect("http://169.254.169.254/latest/meta-data/"),
        "/img/redirect-loop.png": redirect("/img/redirect-loop2.png"),
        "/img/redirect-loop2.png": redirect(u("/img/redirect-loop.png")),
        "/img/moved.png": redirect("/files/star.png", 301),
        "/files/star.png": respond(IMAGES["star"], "image/png"),
        "/img/truncated.png": respond(IMAGES["rings"][:len(IMAGES["rings"]) // 2], "image/png"),
    })


@pytest.fixture(scope="module")
def full(connects, tmp_path_factory):
    site = Site()
    build_full_site(site)
    out = tmp_path_factory.mktemp("crawl") / "2026-11-22"
    summary = crawl(config_for(site, "/", max_depth=2), out)
    yield site, out, summary
    site.stop()


def test_full_crawl_keeps_exactly_the_good_distinct_images(full):
    site, out, summary = full
    expected = {name: key_of(IMAGES[name])
                for name in ("circle", "scene", "triangle", "rings", "checker", "star")}
    index = read_jsonl(out / INDEX)
    assert sorted(row["key"] for row in index) == sorted(expected.values())
    assert list_images(out) == sorted(expected.values())
    for row in index:
        data = (out / row["key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["bytes"]
        assert (row["width"], row["height"]) == (S, S)
        assert row["phash"] == str(_phash(data))
    rows = by_url(index)
    moved = rows[site.url("/img/moved.png")]
    assert moved["key"] == expected["star"] and moved["final_url"] == site.url("/files/star.png")
    assert moved["page_url"] == site.url("/gallery.html")
    scene = rows[site.url("/img/scene.jpg")]
    assert scene["headers"] == {
        "content-type": "image/jpeg", "content-length": str(len(IMAGES["scene"])),
        "etag": '"scene-v1"', "last-modified": "Sat, 21 Nov 2026 10:00:00 GMT"}
    assert rows[site.url("/img/rings.png")]["page_url"] == site.url("/")
    assert rows[site.url("/img/triangle.png")]["key"] == expected["triangle"]
    assert rows[site.url("/img/flaky.png")]["key"] == expected["checker"]


def test_full_crawl_records_a_reason_for_everything_else(full):
    site, out, _ = full
    u = site.url
    expected = {
        u("/img/circle-copy.png"): "duplicate_sha256",
        u("/img/scene-q35.jpg"): "near_duplicate",
        u("/img/huge.png"): "too_large",
        u("/img/huge-stream.png"): "too_large",
        u("/img/bomb.png"): "too_large",
        u("/img/fake.jpg"): "undecodable",
        u("/img/truncated.png"): "truncated",
        u("/img/page.jpg"): "not_an_image_content_type",
        u("/img/missing.png"): "http_404",
        u("/img/error.png"): "http_500",
        u("/img/busy.png"): "http_429",
        u("/img/stall.jpg"): "timeout",
        u("/img/drip.jpg"): "timeout",
        u("/img/redirect-private.png"): "robots_disallowed",
        u("/img/redirect-metadata.png"): "non_public_address",
        u("/img/redirect-loop.png"): "redirect_loop",
        u("/private/hidden.png"): "robots_disallowed",
        u("/private/secret.html"): "robots_disallowed",
        u("/missing.html"): "http_404",
        u("/notes.txt"): "not_html",
        u("/deep.html"): "max_depth",
        "ftp://example.org/x.jpg": "unsupported_scheme",
        "javascript:alert(1)": "unsupported_scheme",
        "data:image/png;base64,iVBORw0KGgo=": "unsupported_scheme",
        "mailto:someone@example.org": "unsupported_scheme",
        "http://other.example/page.html": "off_site",
        "http://[::1": "invalid_url",
    }
    rejected = read_jsonl(out / REJECTED)
    assert {row["url"]: row["reason"] for row in rejected} == expected
    assert len(rejected) == len(expected)
    rows = by_url(rejected)
    circle_key = key_of(IMAGES["circle"])
    assert rows[u("/img/circle-copy.png")]["duplicate_of"] == f"{out.name}/{circle_key}"
    near = rows[u("/img/scene-q35.jpg")]
    assert near["duplicate_of"] == f"{out.name}/{key_of(IMAGES['scene'])}"
    assert near["distance"] <= THRESHOLD
    assert "Content-Length" in rows[u("/img/huge.png")]["detail"]
    assert "byte cap" in rows[u("/img/huge-stream.png")]["detail"]
    assert rows[u("/img/drip.jpg")]["detail"] == "the deadline of 1 s passed"
    assert "169.254.169.254" in rows[u("/img/redirect-metadata.png")]["detail"]
    assert rows[u("/deep.html")]["page_url"] == u("/cycle-b.html")


def test_full_crawl_summary_matches_the_files(full):
    _, out, summary = full
    assert json.loads((out / SUMMARY).read_text()) == summary
    rejected = Counter(row["reason"] for row in read_jsonl(out / REJECTED))
    assert summary == {
        "pages_fetched": 4,   # /, gallery, cycle-a, cycle-b
        "images_kept": 6,
        "bytes_kept": sum(len(IMAGES[n]) for n in ("circle", "scene", "triangle", "rings",
                                                   "checker", "star")),
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": 27,
        "frontier_left": 0,
    }


def test_full_crawl_requests_what_it_should_and_only_once(full):
    site, _, _ = full
    counts = Counter(path for path, _, _ in site.log)
    assert not [p for p in counts if p.startswith("/private/")]     # robots obeyed, redirects too
    for path in ("/robots.txt", "/", "/gallery.html", "/cycle-a.html", "/cycle-b.html",
                 "/img/circle.png", "/img/circle-copy.png", "/img/huge.png", "/img/moved.png",
                 "/files/star.png", "/img/redirect-metadata.png", "/img/triangle.png"):
        assert counts[path] == 1, path
    for path in ("/img/error.png", "/img/busy.png", "/img/stall.jpg", "/img/drip.jpg",
                 "/img/flaky.png"):
        assert counts[path] == 2, path                                # retries=1
    assert counts["/img/redirect-loop.png"] == counts["/img/redirect-loop2.png"] == 1
    assert "/deep.html" not in counts
    assert all(ua == f"{CrawlConfig.user_agent} (+{CONTACT})" for _, _, ua in site.log)


def short_spans(times: list[float], delay: float, jitter: float) -> list[tuple[int, int]]:
    """The spans (i, j) of server arrival ``times`` shorter than ``j - i`` delays less ``jitter``.

    The crawler spaces its sends; the server sees arrivals, and on a loaded machine one late
    arrival shortens the gaps after it (0.09 s for a 0.2 s delay seen at load 11; a fresh
    clone's suite once held one request back more than 0.15 s). So a span counts only if the
    span from the arrival before is short too: otherwise its first arrival was late, not the
    crawler early. A crawler that ignores or truncates the delay shortens both."""
    def too_short(i, j):
        return times[j] - times[i] < (j - i) * delay - jitter

    return [(i, j) for i in range(len(times)) for j in range(i + 1, len(times))
            if too_short(i, j) and (i == 0 or too_short(i - 1, j))]


def test_full_crawl_honours_fractional_crawl_delay(full):
    site, _, _ = full
    times = sorted(t for _, t, _ in site.log)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) > 30
    short = short_spans(times, CRAWL_DELAY, jitter=0.15)
    assert short == [], short[:5]
    assert sorted(gaps)[len(gaps) // 2] >= CRAWL_DELAY, gaps


def test_metadata_address_is_refused_before_any_connect(full, connects):
    assert connects and all(ipaddress.ip_address(host).is_loopback for host in connects)


def test_full_crawl_is_a_directory_source(full):
    site, out, _ = full
    source = DirectorySource(out, name="crawl")
    assert source.keys() == sorted(row["key"] for row in read_jsonl(out / INDEX))
    item = source.read(key_of(IMAGES["circle"]))
    assert item.data == IMAGES["circle"] and item.meta["url"] == site.url("/img/circle.png")


def test_rerun_of_finished_crawl_fetches_nothing(full):
    site, out, summary = full
    before = len(site.log)
    index = (out / INDEX).read_bytes()
    assert crawl(config_for(site, "/", max_depth=2), out) == summary
    assert len(site.log) == before
    assert (out / INDEX).read_bytes() == index


# --- resume -------------------------------------------------------------------------

def build_small_site(site: Site) -> list[str]:
    """Two pages, six distinct images, a copy and a 404; returns the image paths."""
    images = ["circle", "scene", "star", "triangle", "rings", "checker"]
    site.routes.update({f"/img/{n}.img": respond(IMAGES[n], "image/png") for n in images})
    site.routes.update({
        "/robots.txt": respond(b"User-agent: *\nDisallow:\n", "text/plain"),
        "/": html('<img src="/img/circle.img"><img src="/img/scene.img"><a href="/p2.html">2</a>'
                  '<img src="/img/star.img">'),
        "/p2.html": html('<img src="/img/triangle.img"><img src="/img/copy.img">'
                         '<img src="/img/gone.img"><img src="/img/rings.img">'
                         '<img src="/img/checker.img">'),
        "/img/copy.img": respond(IMAGES["star"], "image/png"),
    })
    return [f"/img/{n}.img" for n in images + ["copy", "gone"]]


class Stop(Exception):
    pass


def stop_after(n: int):
    def progress(stats):
        if stats["images_kept"] >= n:
            raise Stop
    return progress


def snapshot(out: Path) -> dict:
    """Everything a crawl leaves, minus timestamps."""
    drop = {"fetched_at", "time"}
    return {
        "files": {k: hashlib.sha256((out / k).read_bytes()).hexdigest() for k in list_images(out)},
        "index": [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(out / INDEX)],
        "rejected": [{k: v for k, v in r.items() if k not in drop}
                     for r in read_jsonl(out / REJECTED)],
        "summary": json.loads((out / SUMMARY).read_text()),
    }


@pytest.fixture
def small(site, tmp_path):
    paths = build_small_site(site)
    reference = tmp_path / "reference" / "2026-11-22"
    crawl(config_for(site, "/"), reference)
    site.log.clear()
    return site, paths, snapshot(reference), tmp_path / "resumed" / "2026-11-22"


def test_small_reference_crawl(small):
    _, _, reference, _ = small
    assert reference["summary"]["images_kept"] == 6
    assert [r["reason"] for r in reference["rejected"]] == ["duplicate_sha256", "http_404"]


def test_killed_crawl_resumes_without_refetching(small):
    site, paths, reference, out = small
    with pytest.raises(Stop):
        crawl(config_for(site, "/"), out, progress=stop_after(3))
    assert len(read_jsonl(out / INDEX)) == 3 and not (out / SUMMARY).exists()
    crawl(config_for(site, "/"), out)
    counts = Counter(path for path, _, _ in site.log)
    once = paths + ["/", "/p2.html"]
    assert {p: counts[p] for p in once} == dict.fromkeys(once, 1)
    assert counts["/robots.txt"] == 2
    assert snapshot(out) == reference


def test_torn_write_loses_only_the_image_in_flight(small):
    site, paths, reference, out = small
    with pytest.raises(Stop):
        crawl(config_for(site, "/"), out, progress=stop_after(3))
    index = (out / INDEX).read_text().splitlines(keepends=True)
    torn = json.loads(index[-1])
    (out / INDEX).write_text("".join(index[:-1]) + index[-1][:len(index[-1]) // 2])
    assert (out / torn["key"]).exists()       # the image file made it, its row did not
    crawl(config_for(site, "/"), out)
    counts = Counter(path for path, _, _ in site.log)
    torn_path = torn["url"].split(str(site.server.server_port), 1)[1]
    assert counts[torn_path] == 2
    assert all(counts[p] == 1 for p in paths if p != torn_path)
    assert snapshot(out) == reference


def test_image_budget_stops_and_a_bigger_budget_continues(small):
    site, paths, reference, out = small
    summary = crawl(config_for(site, "/", max_images=2), out)
    assert summary["images_kept"] == 2 and summary["frontier_left"] > 0
    assert json.loads((out / SUMMARY).read_text()) == summary
    with pytest.raises(Stop):
        crawl(config_for(site, "/"), out, progress=stop_after(4))
    assert not (out / SUMMARY).exists()       # a killed re-run does not look finished
    crawl(config_for(site, "/"), out)
    assert all(Counter(p for p, _, _ in site.log)[p] == 1 for p in paths)
    assert snapshot(out) == reference


def test_one_crawler_per_folder(site, tmp_path):
    out = tmp_path / "day"
    (out / ".state").mkdir(parents=True)
    with open(out / ".state" / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another crawl is writing"):
            crawl(config_for(site, "/"), out)
    assert site.log == []


def test_page_budget_leaves_pages_in_the_frontier(site, tmp_path):
    build_small_site(site)
    summary = crawl(config_for(site, "/", max_pages=1), tmp_path / "day")
    assert summary["pages_fetched"] == 1 and summary["images_kept"] == 3
    assert summary["frontier_left"] == 1 and site.count("/p2.html") == 0


# --- across days -------------------------------------------------------------------

def test_duplicates_of_earlier_days_are_rejected(site, tmp_path):
    site.routes.update({
        "/robots.txt": respond(b"", "text/plain", 404),
        "/day1.html": html('<img src="/a/circle.png"><img src="/a/scene.jpg">'),
        "/day2.html": html('<img src="/b/circle.png"><img src="/b/scene.jpg">'
                           '<img src="/b/star.png">'),
        "/a/circle.png": respond(IMAGES["circle"], "image/png"),
        "/a/scene.jpg": respond(IMAGES["scene"], "image/jpeg"),
        "/b/circle.png": respond(IMAGES["circle"], "image/png"),
        "/b/scene.jpg": respond(SCENE_Q35, "image/jpeg"),
        "/b/star.png": respond(IMAGES["star"], "image/png"),
    })
    root = tmp_path / "crawl"
    assert crawl(config_for(site, "/day1.html"), root / "2026-11-21")["images_kept"] == 2
    day2 = root / "2026-11-22"
    assert earlier_outputs(day2) == [root / "2026-11-21"]
    summary = crawl(config_for(site, "/day2.html"), day2)
    assert summary["images_kept"] == 1 and list_images(day2) == [key_of(IMAGES["star"])]
    rows = by_url(read_jsonl(day2 / REJECTED))
    assert rows[site.url("/b/circle.png")]["reason"] == "duplicate_sha256"
    circle = f"2026-11-21/{key_of(IMAGES['circle'])}"
    assert rows[site.url("/b/circle.png")]["duplicate_of"] == circle
    assert rows[site.url("/b/scene.jpg")]["reason"] == "near_duplicate"
    # a day sorting before both sees neither
    assert crawl(config_for(site, "/day2.html"), root / "2026-11-20")["images_kept"] == 3


# --- politeness ---------------------------------------------------------------------

def test_min_delay_spaces_requests_without_robots_delay(site, tmp_path):
    site.routes.update({
        "/robots.txt": respond(b"", "text/plain", 404),
        "/": html('<img src="/1.png"><img src="/2.png"><img src="/3.png">'),
        "/1.png": respond(IMAGES["circle"], "image/png"),
        "/2.png": respond(IMAGES["star"], "image/png"),
        "/3.png": respond(IMAGES["rings"], "image/png"),
    })
    assert crawl(config_for(site, "/", min_delay=0.15), tmp_path / "d")["images_kept"] == 3
    times = [t for _, t, _ in site.log]
    assert len(times) == 5
    # (0.018 s for a 0.15 s gap after one late arrival was seen in a full make test)
    short = short_spans(times, 0.15, jitter=0.12)
    assert short == [], short[:5]


@pytest.mark.parametrize("robots, reason", [
    (respond(b"oops", "text/plain", 500), "robots_unavailable"),
    (respond(b"no", "text/plain", 403), "robots_disallowed"),
    (respond(b"User-agent: facegan-pipeline\nDisallow: /\n\nUser-agent: *\nDisallow:\n",
             "text/plain"), "robots_disallowed"),
    (respond(b"User-agent: *\nCrawl-delay: 3600\n", "text/plain"), "crawl_delay_too_long"),
])
def test_robots_refusals(site, tmp_path, robots, reason):
    site.routes.update({"/robots.txt": robots, "/": html("hello")})
    summary = crawl(config_for(site, "/"), tmp_path / "d")
    assert summary["rejected"] == {reason: 1} and summary["pages_fetched"] == 0
    assert [p for p, _, _ in site.log] == ["/robots.txt"]


# --- pieces -------------------------------------------------------------------------

def test_parse_robots_keeps_fractional_delay_and_agent_groups():
    text = ("User-agent: facegan-pipeline\nDisallow: /nofaces/\nCrawl-delay: 0.5\n\n"
            "User-agent: *\nDisallow: /\nCrawl-delay: 7\n")
    ours = parse_robots(text, "facegan-pipeline")
    assert ours.delay == 0.5
    assert ours.parser.can_fetch("facegan-pipeline", "http://h/faces/1.jpg")
    assert not ours.parser.can_fetch("facegan-pipeline", "http://h/nofaces/1.jpg")
    assert parse_robots(text, "otherbot").delay == 7.0
    assert parse_robots("User-agent: *\nRequest-rate: 1/4\n", "x").delay == 4.0


def test_normalize_url():
    assert normalize_url("HTTP://Example.ORG:80/a?b=1#frag") == "http://example.org/a?b=1"
    assert normalize_url("https://user:pw@example.org:443") == "https://example.org/"
    assert normalize_url("http://[::1]:8080/x") == "http://[::1]:8080/x"
    assert normalize_url("javascript:alert(1)#x") == "javascript:alert(1)"
    for bad in ("http://example.org:notaport/", "http://[::1", "http:///nohost"):
        with pytest.raises(ValueError):
            normalize_url(bad)


def test_extract_links_reads_a_img_srcset_and_base():
    page = ('<base href="/sub/"><a href="p.html">p</a><img src="i.png" '
            'srcset="s1.png 1x, /s2.png 2x"><a name="anchor">no href</a>')
    assert extract_links(page, "http://h/dir/index.html") == [
        ("page", "http://h/sub/p.html"), ("image", "http://h/sub/i.png"),
        ("image", "http://h/sub/s1.png"), ("image", "http://h/s2.png")]


def test_decode_image_pixel_cap_is_ours_not_pillows():
    limit = Image.MAX_IMAGE_PIXELS
    under_pillow = bilevel_png(8000, 8000)                   # 64 MP: Pillow alone would load it
    with pytest.raises(DecodeError) as err:
        load_image(under_pillow, 40_000_000)
    assert err.value.reason == "too_large" and "pixel cap" in err.value.detail
    with pytest.raises(DecodeError) as err:
        load_image(IMAGES["circle"], max_pixels=S * S - 1)
    assert err.value.reason == "too_large"
    assert load_image(IMAGES["circle"], max_pixels=S * S).size == (S, S)
    assert Image.MAX_IMAGE_PIXELS == limit


def test_decode_image_refuses_formats_outside_the_list():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    ico = _encode(_circle().resize((32, 32)), "ICO")
    for data, reason in ((eps, "undecodable"), (ico, "undecodable"), (b"", "empty")):
        with pytest.raises(DecodeError) as err:
            load_image(data, 40_000_000)
        assert err.value.reason == reason


def test_config_errors_are_one_line_and_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="contact_url"):
        CrawlConfig(seeds=["http://h/"], contact_url="")
    with pytest.raises(ValueError, match="seed 'ftp://h/'"):
        CrawlConfig(seeds=["ftp://h/"], contact_url=CONTACT)
    with pytest.raises(ValueError, match="seed 'http://h:port/'"):
        CrawlConfig(seeds=["http://h:port/"], contact_url=CONTACT)
    with pytest.raises(ValueError, match="max_pixels"):
        CrawlConfig(seeds=["http://h/"], contact_url=CONTACT, max_pixels=0)
    with pytest.raises(ValueError, match="allow_networks"):
        CrawlConfig(seeds=["http://h/"], contact_url=CONTACT, allow_networks=["nonsense"])
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# nightly seeds\n\nhttp://h/a\n  http://h/b  \n")
    assert read_seeds(seeds) == ("http://h/a", "http://h/b")
    with pytest.raises(FileNotFoundError, match="seeds file"):
        read_seeds(tmp_path / "missing.txt")


# --- netguard -----------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.5.4", "192.168.1.1", "169.254.169.254", "::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "224.0.0.1", "0.0.0.0", "::", "fe80::1",
    "fc00::1", "ff02::1", "100.64.0.1", "255.255.255.255", "240.0.0.1", "2002:7f00:1::",
])
def test_non_public_addresses_are_refused(address):
    with pytest.raises(netguard.NonPublicAddress):
        netguard.check_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_pass(address):
    netguard.check_address(address)


def test_allow_list_admits_only_its_networks():
    nets = netguard.parse_allow_list(LOOPBACK)
    netguard.check_address("127.0.0.1", nets)
    netguard.check_address("::ffff:127.0.0.1", nets)
    for address in ("169.254.169.254", "10.0.0.1", "::1"):
        with pytest.raises(netguard.NonPublicAddress):
            netguard.check_address(address, nets)
    one = netguard.parse_allow_list(["127.0.0.1:8080", "[::1]:8081"])
    netguard.check_address("127.0.0.1", one, 8080)
    netguard.check_address("::1", one, 8081)
    for address, port in (("127.0.0.1", 8081), ("127.0.0.2", 8080), ("127.0.0.1", None)):
        with pytest.raises(netguard.NonPublicAddress):
            netguard.check_address(address, one, port)
    for bad in ("nonsense", "127.0.0.1:http", "127.0.0.1:70000", "example.org:80"):
        with pytest.raises(ValueError, match="allow_networks entry"):
            netguard.parse_allow_list([bad])


def test_check_url_needs_every_resolved_address_public(connects):
    before = len(connects)
    assert netguard.check_url("http://93.184.216.34/x") == netguard.Target("http", "93.184.216.34", 80)

    def mixed(host, port):
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.5")]

    with pytest.raises(netguard.NonPublicAddress):
        netguard.check_url("https://looks-public.example/", resolver=mixed)
    with pytest.raises(netguard.UnsupportedScheme):
        netguard.check_url("ftp://93.184.216.34/")
    with pytest.raises(netguard.UnsupportedScheme):
        netguard.check_url("file:///etc/passwd")
    assert len(connects) == before


def test_guarded_get_follows_checked_redirects(site, connects):
    site.routes.update({
        "/start": redirect("/next", 301), "/next": redirect("/end", 307),
        "/end": respond(b"ok", "text/plain"),
        "/meta": redirect("http://169.254.169.254/latest/meta-data/"),
        "/loop": redirect("/loop#again"),
        **{f"/h{i}": redirect(f"/h{i + 1}") for i in range(10)},
    })
    session = httpclient.session(LOOPBACK)
    policy = httpclient.Policy(connect_timeout=2, read_timeout=2)
    hops: list[str] = []
    with httpclient.open_url(session, site.url("/start"), policy, before_hop=hops.append) as r:
        assert (r.status_code, r.content, r.url) == (200, b"ok", site.url("/end"))
        assert [h.status_code for h in r.history] == [301, 307]
    assert hops == [site.url(p) for p in ("/start", "/next", "/end")]
    before = len(connects)
    with pytest.raises(netguard.NonPublicAddress, match="169.254.169.254"):
        httpclient.open_url(session, site.url("/meta"), policy)
    assert connects[before:] and all(h == "127.0.0.1" for h in connects[before:])
    with pytest.raises(httpclient.RedirectLoop):
        httpclient.open_url(session, site.url("/loop"), policy)
    with pytest.raises(httpclient.TooManyRedirects):
        httpclient.open_url(session, site.url("/h0"), httpclient.Policy(max_hops=3))
    assert site.count("/h4") == 0


def test_guarded_session_checks_the_peer_at_connect_time(site):
    site.routes["/"] = respond(b"ok", "text/plain")
    with pytest.raises(netguard.NonPublicAddress):
        httpclient.session().get(site.url("/"), timeout=2)
    assert site.log == []                        # refused before a byte was sent
    with pytest.raises(TypeError, match="httpclient.session"):
        httpclient.open_url(requests.Session(), site.url("/"))
