"""CrawlImages, the nightly RangeDaily command and ``DetectAlignFaces --dataset crawl``,
through a real Luigi scheduler against a real HTTP site on 127.0.0.1.

The site serves two public-domain portraits (and a mirrored one on day 2), a
pattern without a face, a copy, a text file posing as an image and a 404.
A module-wide guard refuses any socket connect to a non-loopback address, in
this process and in the ``luigi`` subprocess (through a sitecustomize).
"""
from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import hashlib
import inspect
import io
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import luigi
import numpy as np
import pytest
from conftest_http import http_server  # noqa: F401  (fixture)
from luigi.execution_summary import LuigiStatusCode
from PIL import Image, ImageOps

import tasks
import tasks.common
from pipeline.crawl.crawler import INDEX, REJECTED, SUMMARY, CrawlConfig, crawl, read_jsonl
from pipeline.sources.sample_photos import portrait

ROOT = Path(__file__).resolve().parents[1]
CONTACT = "https://example.org/face-pipeline-crawler"
LOOPBACK = ("127.0.0.0/8",)
DAY1, DAY2 = dt.date(2026, 11, 21), dt.date(2026, 11, 22)
#: Settings that keep a loopback crawl fast (no politeness delay, short timeouts).
FAST = {"min_delay": 0, "connect_timeout": 2, "read_timeout": 2, "deadline": 5, "retries": 0}


# --- no traffic off this machine ---------------------------------------------------

def _loopback_only(real_connect):
    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0].split("%")[0]
            if not ipaddress.ip_address(host).is_loopback:
                raise OSError(f"test guard: refused connect to non-loopback {host}")
        return real_connect(sock, address)
    return connect


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _loopback_only(socket.socket.connect))
        yield


#: Installed in the ``luigi`` subprocess: the same guard, and the loopback hook.
SITECUSTOMIZE = f"""import ipaddress
import socket

{inspect.getsource(_loopback_only)}
socket.socket.connect = _loopback_only(socket.socket.connect)

import tasks.common

tasks.common.ALLOW_NETWORKS = {LOOPBACK!r}
"""


# --- the site ------------------------------------------------------------------------

def _jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _pattern() -> Image.Image:
    y, x = np.mgrid[0:160, 0:160]
    a = ((x // 20 + y // 20) % 2 * 180 + 40).astype(np.uint8)
    return Image.fromarray(np.stack([a, 255 - a, a // 2], -1))


ASTRONAUT = portrait("astronaut").resize((256, 256))
HOPPER = portrait("grace_hopper").resize((256, 300))
IMAGES = {
    "astronaut": _jpeg(ASTRONAUT),
    "hopper": _jpeg(HOPPER),
    "pattern": _png(_pattern()),
    "astronaut-small": _jpeg(ASTRONAUT.resize((200, 200)), 50),  # a near copy
    "hopper-mirrored": _jpeg(ImageOps.mirror(HOPPER)),            # a new face
}
CTYPES = {"astronaut": "image/jpeg", "hopper": "image/jpeg", "pattern": "image/png",
          "astronaut-small": "image/jpeg", "hopper-mirrored": "image/jpeg"}


def key_of(data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    ext = "png" if data.startswith(b"\x89PNG") else "jpg"
    return f"{sha[:2]}/{sha}.{ext}"


def _page(*imgs: str, links: str = "") -> bytes:
    body = "".join(f'<img src="{src}">' for src in imgs) + links
    return f"<!doctype html><html><body>{body}</body></html>".encode()


DAY1_PAGE = _page("/img/astronaut.jpg", "/img/hopper.jpg", "/img/astronaut-copy.jpg",
                  "/img/notes.jpg", "/img/gone.jpg", links='<a href="/more.html">more</a>')
MORE_PAGE = _page("/img/pattern.png", "/img/hopper.jpg")
DAY2_PAGE = _page("/img/astronaut.jpg", "/img/astronaut-small.jpg", "/img/hopper-mirrored.jpg")
DAY1_KEPT = {"astronaut", "hopper", "pattern"}
DAY1_REJECTED = {"/img/astronaut-copy.jpg": "duplicate_sha256",
                 "/img/notes.jpg": "not_an_image_content_type",
                 "/img/gone.jpg": "http_404"}


def serve(server, day_pages: list[bytes]) -> None:
    """``/`` answers ``day_pages[0]`` the first time, then the next one, ..."""
    pages = iter(day_pages)
    last = [day_pages[0]]

    def home(req):
        last[0] = next(pages, last[0])
        req.send_bytes(last[0], ctype="text/html; charset=utf-8")

    def image(name):
        return lambda req: req.send_bytes(IMAGES[name], ctype=CTYPES[name])

    server.routes.update({f"/img/{name}.{'png' if name == 'pattern' else 'jpg'}": image(name)
                          for name in IMAGES})
    server.routes.update({
        "/": home,
        "/more.html": lambda req: req.send_bytes(MORE_PAGE, ctype="text/html"),
        "/robots.txt": lambda req: req.send_bytes(b"User-agent: *\nDisallow: /private/\n",
                                                  ctype="text/plain"),
        "/img/astronaut-copy.jpg": image("astronaut"),
        "/img/notes.jpg": lambda req: req.send_bytes(b"not a picture", ctype="text/plain"),
    })


def fetched(server) -> Counter:
    return Counter(r.path for r in server.log)


@pytest.fixture
def site(http_server, luigi_config, tmp_path, monkeypatch):  # noqa: F811
    """The site, a seeds file and [CrawlImages] pointing at it; loopback admitted."""
    serve(http_server, [DAY1_PAGE, DAY2_PAGE])
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"# the test site\n\n{http_server.url('/')}\n")
    luigi_config("CrawlImages", "seeds", seeds)
    luigi_config("CrawlImages", "contact_url", CONTACT)
    for key, value in FAST.items():
        luigi_config("CrawlImages", key, value)
    monkeypatch.setattr(tasks.common, "ALLOW_NETWORKS", LOOPBACK)
    return http_server


def build(*task_list) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build(list(task_list), local_scheduler=True, detailed_summary=True)


# --- CrawlImages ---------------------------------------------------------------------

def test_crawl_images_writes_the_day_and_a_rerun_schedules_nothing(site, tmp_path, started_tasks):
    result = build(tasks.CrawlImages(date=DAY1))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text

    day = tmp_path / "raw" / "crawl" / "2026-11-21"
    assert tasks.CrawlImages(date=DAY1).output().path == str(day / SUMMARY)
    kept = {key_of(IMAGES[n]): n for n in DAY1_KEPT}
    index = read_jsonl(day / INDEX)
    assert {row["key"] for row in index} == set(kept)
    assert sorted(p.relative_to(day).as_posix() for p in day.rglob("*")
                  if p.is_file() and ".state" not in p.parts) == sorted(
        [*kept, INDEX, REJECTED, SUMMARY])
    for row in index:
        assert (day / row["key"]).read_bytes() == IMAGES[kept[row["key"]]]
        assert row["url"].startswith(site.url("/img/")) and row["page_url"]
    rejected = {row["url"]: row["reason"] for row in read_jsonl(day / REJECTED)}
    assert rejected == {site.url(p): reason for p, reason in DAY1_REJECTED.items()}
    summary = json.loads((day / SUMMARY).read_text())
    assert summary["images_kept"] == 3 and summary["pages_fetched"] == 2
    assert summary["rejected"] == {"duplicate_sha256": 1, "http_404": 1,
                                   "not_an_image_content_type": 1}
    assert all(r.headers["user-agent"] == f"facegan-pipeline/0.1 (+{CONTACT})" for r in site.log)
    assert fetched(site)["/img/hopper.jpg"] == 1           # linked from both pages, fetched once

    # The day is a DirectorySource whose metadata is the crawl's index.
    source = tasks.CrawlImages(date=DAY1).source()
    assert source.keys() == sorted(kept)
    item = source.read(key_of(IMAGES["hopper"]))
    assert item.meta["url"] == site.url("/img/hopper.jpg")

    # A second run finds the day complete: nothing starts, nothing is fetched.
    requests_before, started_tasks[:] = len(site.log), []
    again = build(tasks.CrawlImages(date=DAY1))
    assert again.status == LuigiStatusCode.SUCCESS and started_tasks == []
    assert len(site.log) == requests_before


class Stop(Exception):
    pass


def test_killed_crawl_task_resumes_without_refetching(site, tmp_path):
    day = tmp_path / "raw" / "crawl" / "2026-11-21"
    task = tasks.CrawlImages(date=DAY1)

    def kill_after_two(stats):
        if stats["images_kept"] >= 2:
            raise Stop                                    # as a kill -9 would, mid-crawl
    with pytest.raises(Stop):
        crawl(task.crawl_config(), day, progress=kill_after_two)
    assert not task.complete() and len(read_jsonl(day / INDEX)) == 2

    result = build(task)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    counts = fetched(site)
    assert {p: n for p, n in counts.items() if p != "/robots.txt"} == dict.fromkeys(
        ["/", "/more.html", "/img/astronaut.jpg", "/img/hopper.jpg", "/img/astronaut-copy.jpg",
         "/img/notes.jpg", "/img/gone.jpg", "/img/pattern.png"], 1)
    assert {row["key"] for row in read_jsonl(day / INDEX)} == {key_of(IMAGES[n]) for n in DAY1_KEPT}


def test_missing_contact_url_fails_at_once_with_one_line(site, luigi_config, caplog):
    luigi_config("CrawlImages", "contact_url", "")
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        result = build(tasks.CrawlImages(date=DAY1))
    assert result.status == LuigiStatusCode.SCHEDULING_FAILED      # while scheduling: nothing ran
    lines = [r.getMessage() for r in caplog.records if "contact_url" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "Traceback" not in caplog.text
    assert lines[0].endswith("due to error in complete() method: [CrawlImages] contact_url is empty: "
                             "set it in luigi.cfg (or pass --CrawlImages-contact-url) to a page "
                             "saying who runs this crawler and how to reach you")
    assert site.log == []                                 # not even robots.txt


def test_loopback_is_refused_without_the_test_hook(site, monkeypatch, tmp_path):
    monkeypatch.setattr(tasks.common, "ALLOW_NETWORKS", ())
    assert build(tasks.CrawlImages(date=DAY1)).status == LuigiStatusCode.SUCCESS
    day = tmp_path / "raw" / "crawl" / "2026-11-21"
    assert read_jsonl(day / INDEX) == [] and site.log == []
    assert [row["reason"] for row in read_jsonl(day / REJECTED)] == ["non_public_address"]


# --- the nightly command and the crawl data set ---------------------------------------

def _luigi_command() -> list[str]:
    script = Path(sys.executable).with_name("luigi")
    return [str(script)] if script.exists() else [sys.executable, "-m", "luigi"]


@pytest.mark.slow
def test_nightly_range_crawls_each_missing_day_then_aligns_them(
        http_server, luigi_config, tmp_path, started_tasks):  # noqa: F811
    serve(http_server, [DAY1_PAGE, DAY2_PAGE])
    (tmp_path / "seeds.txt").write_text(http_server.url("/") + "\n")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    cfg = configparser.ConfigParser()
    cfg["paths"] = {"raw": str(tmp_path / "raw"), "processed": str(tmp_path / "processed")}
    cfg["CrawlImages"] = {"seeds": str(tmp_path / "seeds.txt"), "contact_url": CONTACT,
                          **{k: str(v) for k, v in FAST.items()}}
    with open(tmp_path / "luigi.cfg", "w") as fh:
        cfg.write(fh)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(tmp_path / "luigi.cfg"),
           "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    # The documented nightly command; --now pins "today" to DAY2 (noon UTC).
    noon = dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc)
    command = [*_luigi_command(), "--module", "tasks", "RangeDaily", "--of", "CrawlImages",
               "--start", DAY1.isoformat(), "--local-scheduler", "--now", str(int(noon.timestamp()))]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr

    crawled = tmp_path / "raw" / "crawl"
    assert sorted(p.name for p in crawled.iterdir()) == ["2026-11-21", "2026-11-22"]
    day1, day2 = crawled / "2026-11-21", crawled / "2026-11-22"
    assert {r["key"] for r in read_jsonl(day1 / INDEX)} == {key_of(IMAGES[n]) for n in DAY1_KEPT}
    # Day 2 keeps only the new face; what day 1 has is a duplicate of day 1's file.
    assert [r["key"] for r in read_jsonl(day2 / INDEX)] == [key_of(IMAGES["hopper-mirrored"])]
    day2_rejected = {r["url"]: r for r in read_jsonl(day2 / REJECTED)}
    assert {u: r["reason"] for u, r in day2_rejected.items()} == {
        http_server.url("/img/astronaut.jpg"): "duplicate_sha256",
        http_server.url("/img/astronaut-small.jpg"): "near_duplicate"}
    astronaut = f"2026-11-21/{key_of(IMAGES['astronaut'])}"
    assert all(r["duplicate_of"] == astronaut for r in day2_rejected.values())

    # Run again the next night with nothing new to do: no day is crawled twice.
    requests_before = len(http_server.log)
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(http_server.log) == requests_before

    # DetectAlignFaces --dataset crawl aligns both days, keys sorted by day.
    luigi_config("CrawlDays", "start", DAY1.isoformat())
    luigi_config("CrawlDays", "stop", (DAY2 + dt.timedelta(days=1)).isoformat())
    luigi_config("DetectAlignFaces", "dataset", "crawl")
    luigi_config("DetectAlignFaces", "shard_size", 2)
    result = build(tasks.DetectAlignFaces())
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert not any(t.startswith("CrawlImages") for t in started_tasks)   # already crawled
    source = tasks.CrawlDays().source()
    assert source.keys() == sorted(source.keys()) == [
        *sorted(f"2026-11-21/{key_of(IMAGES[n])}" for n in DAY1_KEPT),
        f"2026-11-22/{key_of(IMAGES['hopper-mirrored'])}"]
    align = tasks.DetectAlignFaces()
    summary = json.loads(Path(align.output().path).read_text())
    assert summary["inputs"] == 4 and len(summary["shards"]) == 2
    assert summary["images_with_faces"] + summary["rejected"] == summary["inputs"]
    assert summary["images_with_faces"] == 3 and summary["rejected_by_reason"] == {"no_face": 1}
    faces = [json.loads(line) for s in summary["shards"]
             for line in open(f"{s['folder']}/faces.jsonl")]
    by_name = {n: f"{d}/{key_of(IMAGES[n])}" for n, d in [
        ("astronaut", "2026-11-21"), ("hopper", "2026-11-21"), ("hopper-mirrored", "2026-11-22")]}
    assert sorted(f["key"] for f in faces) == sorted(by_name.values())
    for face in faces:
        name = next(n for n, k in by_name.items() if k == face["key"])
        assert face["source"] == "crawl" and face["meta"]["crawl_date"] == face["key"][:10]
        assert face["meta"]["url"] == http_server.url(f"/img/{name}.jpg")
        assert face["meta"]["sha256"] == face["key"].rsplit("/", 1)[1].split(".")[0]
    rejected = [json.loads(line) for s in summary["shards"]
                for line in open(f"{s['folder']}/rejected.jsonl")]
    assert [(r["key"], r["reason"]) for r in rejected] == [
        (f"2026-11-21/{key_of(IMAGES['pattern'])}", "no_face")]


def test_crawl_data_set_needs_a_start_day(luigi_config):
    with pytest.raises(ValueError, match=r"\[CrawlDays\] start is not set"):
        tasks.CrawlDays().requires()
    luigi_config("CrawlDays", "start", "2026-11-05")
    luigi_config("CrawlDays", "stop", "2026-11-08")
    assert [t.date.isoformat() for t in tasks.raw_task("crawl").requires()] == [
        "2026-11-05", "2026-11-06", "2026-11-07"]


# --- configuration -------------------------------------------------------------------

def test_every_crawl_setting_is_a_parameter_in_luigi_cfg_and_the_docs():
    from pipeline.net.httpclient import Policy
    fields = {f.name for f in dataclasses.fields(CrawlConfig)} | {f.name for f in dataclasses.fields(Policy)}
    params = dict(tasks.CrawlImages.get_params())
    # allow_networks is no parameter (tests use tasks.common.ALLOW_NETWORKS); fetch is the policy's
    # fields, one parameter each (their defaults: tests/test_defaults.py)
    assert set(params) == fields - {"allow_networks", "fetch"} | {"date"}
    assert [n for n, p in params.items() if p.significant] == ["date"]
    assert all(p.description for p in params.values())

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "luigi.cfg")
    assert set(cfg["CrawlImages"]) == set(params) - {"date"}
    for name, value in cfg["CrawlImages"].items():
        param = params[name]
        assert param.normalize(param.parse(value)) == param.normalize(param._default), name

    docs = (ROOT / "docs" / "crawl.md").read_text()
    missing = [name for name in params if f"`{name}`" not in docs]
    assert missing == []
    assert "RangeDaily --of CrawlImages" in docs and "allow_networks" not in cfg["CrawlImages"]
