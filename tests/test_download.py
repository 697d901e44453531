"""pipeline.net.download against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import os
import time

import pytest

from pipeline.net.download import (
    ChecksumError,
    DownloadError,
    DriveEndpoints,
    HTMLPageError,
    IntegrityError,
    RemoteFile,
    SizeError,
    drive_confirmation,
    parse_content_range,
)
from pipeline.net.download import download as _download
from pipeline.net.httpclient import Policy

#: Provides the loopback HTTP server fixture ``http_server``.
pytest_plugins = ["conftest_http"]

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
FAST = Policy(retries=3, backoff=0.01, max_backoff=0.2, connect_timeout=2, read_timeout=2)
LOOPBACK = ["127.0.0.0/8"]


def download(*args, **kwargs):
    """pipeline.net.download.download admitting the loopback test servers."""
    return _download(*args, allow=LOOPBACK, **kwargs)


def remote(server, *paths, name="data.zip", **kw):
    kw.setdefault("size", len(DATA))
    kw.setdefault("sha256", SHA)
    return RemoteFile(name=name, urls=tuple(server.url(p) for p in paths), **kw)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_download_verifies_and_leaves_only_the_final_file(http_server, tmp_path):
    http_server.routes["/f"] = lambda h: h.send_file(DATA)
    seen = []
    path = download(remote(http_server, "/f"), tmp_path, policy=FAST,
                    progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "data.zip"
    assert path.read_bytes() == DATA
    assert leftovers(tmp_path) == ["data.zip"]
    assert seen[-1] == (len(DATA), len(DATA))
    assert http_server.log[0].headers["accept-encoding"] == "identity"


def test_existing_verified_file_is_not_fetched_again(http_server, tmp_path):
    (tmp_path / "data.zip").write_bytes(DATA)
    http_server.routes["/f"] = lambda h: h.send_file(DATA)
    download(remote(http_server, "/f"), tmp_path, policy=FAST)
    assert http_server.log == []


def test_interrupted_transfer_resumes_with_range(http_server, tmp_path):
    calls = []

    def flaky(h):
        calls.append(h.headers.get("Range"))
        h.send_file(DATA, cut_after=100_000 if len(calls) == 1 else None)

    http_server.routes["/f"] = flaky
    path = download(remote(http_server, "/f"), tmp_path, policy=FAST)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    assert calls[0] is None and len(calls) == 2
    resumed_at = int(calls[1].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 100_000  # kept what arrived, up to the last whole chunk
    assert leftovers(tmp_path) == ["data.zip"]


def test_partial_file_from_a_killed_run_is_resumed(http_server, tmp_path):
    (tmp_path / ".data.zip.part").write_bytes(DATA[:123_456])
    http_server.routes["/f"] = lambda h: h.send_file(DATA)
    path = download(remote(http_server, "/f"), tmp_path, policy=FAST)
    assert path.read_bytes() == DATA
    assert [r.headers.get("range") for r in http_server.log] == ["bytes=123456-"]


def test_server_ignoring_range_restarts_cleanly(http_server, tmp_path):
    # The partial holds wrong bytes: appending the 200 body to it would corrupt the file.
    (tmp_path / ".data.zip.part").write_bytes(b"\0" * 5000)
    http_server.routes["/f"] = lambda h: h.send_file(DATA, honour_range=False)
    path = download(remote(http_server, "/f"), tmp_path, policy=FAST)
    assert path.read_bytes() == DATA
    assert [r.headers.get("range") for r in http_server.log] == ["bytes=5000-"]


def test_mismatching_content_range_restarts_without_range(http_server, tmp_path):
    (tmp_path / ".data.zip.part").write_bytes(DATA[:1000])

    def wrong_range(h):
        if h.headers.get("Range"):  # claims 206 but from byte 0
            return h.send_bytes(DATA, 206, headers={"Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}"})
        h.send_file(DATA)

    http_server.routes["/f"] = wrong_range
    path = download(remote(http_server, "/f"), tmp_path, policy=FAST)
    assert path.read_bytes() == DATA
    assert [r.headers.get("range") for r in http_server.log] == ["bytes=1000-", None]


def test_wrong_checksum_names_file_and_both_hashes_and_leaves_nothing(http_server, tmp_path):
    http_server.routes["/f"] = lambda h: h.send_file(DATA)
    wanted = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download(remote(http_server, "/f", sha256=wanted), tmp_path, policy=FAST)
    msg = str(err.value)
    assert "data.zip" in msg and f"expected {wanted}" in msg and f"actual {SHA}" in msg
    assert leftovers(tmp_path) == []


def test_md5_is_checked_where_no_sha256_is_published(http_server, tmp_path):
    http_server.routes["/f"] = lambda h: h.send_file(DATA)
    path = download(remote(http_server, "/f", sha256=None, md5=MD5), tmp_path, policy=FAST)
    assert path.read_bytes() == DATA
    with pytest.raises(ChecksumError, match=f"md5 mismatch: expected {'1' * 32}, actual {MD5}"):
        download(remote(http_server, "/f", name="other.zip", sha256=None, md5="1" * 32),
                 tmp_path, policy=FAST)
    assert leftovers(tmp_path) == ["data.zip"]


def test_resumed_file_that_fails_verification_is_fetched_whole(http_server, tmp_path):
    (tmp_path / ".data.zip.part").write_bytes(b"\xff" * 1000)  # stale bytes from elsewhere
    http_server.routes["/f"] = lambda h: h.send_file(DATA)
    path = download(remote(http_server, "/f"), tmp_path, policy=FAST)
    assert path.read_bytes() == DATA
    assert [r.headers.get("range") for r in http_server.log] == ["bytes=1000-", None]


def test_announced_size_mismatch_fails_before_download(http_server, tmp_path):
    http_server.routes["/f"] = lambda h: h.send_file(DATA)
    with pytest.raises(SizeError, match=f"announces {len(DATA)} bytes, expected 10"):
        download(remote(http_server, "/f", size=10, sha256=None), tmp_path, policy=FAST)
    assert leftovers(tmp_path) == []


def test_retry_after_on_503_and_429_is_honoured(http_server, tmp_path):
    answers = iter([(503, "1"), (429, "1")])

    def busy(h):
        status, after = next(answers, (200, None))
        if status == 200:
            return h.send_file(DATA)
        h.send_bytes(b"busy", status, "text/plain", headers={"Retry-After": after})

    http_server.routes["/f"] = busy
    policy = Policy(retries=3, backoff=0.01, max_backoff=60)
    start = time.monotonic()
    path = download(remote(http_server, "/f"), tmp_path, policy=policy)
    assert time.monotonic() - start >= 2.0  # waited the 1 s asked for, twice
    assert path.read_bytes() == DATA
    assert len(http_server.log) == 3


def test_retry_after_longer_than_max_backoff_gives_up_at_once(http_server, tmp_path):
    http_server.routes["/f"] = lambda h: h.send_bytes(b"busy", 503, "text/plain",
                                                      headers={"Retry-After": "3600"})
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"HTTP 503 .* asks to retry after 3600 s"):
        download(remote(http_server, "/f"), tmp_path, policy=FAST)  # max_backoff 0.2 s
    assert time.monotonic() - start < 2
    assert len(http_server.log) == 1
    assert leftovers(tmp_path) == []


def test_persistent_503_gives_up_with_the_status(http_server, tmp_path):
    http_server.routes["/f"] = lambda h: h.send_bytes(b"down", 503, "text/plain")
    with pytest.raises(DownloadError, match=r"data.zip: HTTP 503 from .*/f after retries"):
        download(remote(http_server, "/f"), tmp_path, policy=FAST)
    assert len(http_server.log) == FAST.retries + 1
    assert leftovers(tmp_path) == []


def test_stalled_response_times_out_and_is_retried(http_server, tmp_path):
    def stall_once(h):
        if len(http_server.log) == 1:
            time.sleep(1.5)
        h.send_file(DATA)

    http_server.routes["/f"] = stall_once
    policy = Policy(retries=2, backoff=0.01, read_timeout=0.5)
    start = time.monotonic()
    path = download(remote(http_server, "/f"), tmp_path, policy=policy)
    assert path.read_bytes() == DATA
    assert time.monotonic() - start < 1.5
    assert len(http_server.log) == 2


def test_mirrors_are_tried_in_order(http_server, tmp_path):
    http_server.routes["/good"] = lambda h: h.send_file(DATA)
    path = download(remote(http_server, "/missing", "/good"), tmp_path, policy=FAST)
    assert path.read_bytes() == DATA
    assert [r.path for r in http_server.log] == ["/missing", "/good"]


def test_every_mirror_failing_lists_each_failure(http_server, tmp_path):
    http_server.routes["/html"] = lambda h: h.send_bytes(b"<html><title>Oops</title></html>",
                                                        ctype="text/html")
    with pytest.raises(DownloadError) as err:
        download(remote(http_server, "/missing", "/html"), tmp_path, policy=FAST)
    assert "every mirror failed" in str(err.value)
    assert "HTTP 404" in str(err.value) and "'Oops'" in str(err.value)


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_instead_of_zip_is_detected(http_server, tmp_path, ctype):
    page = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>log in</body></html>"
    http_server.routes["/f"] = lambda h: h.send_bytes(page, ctype=ctype)
    with pytest.raises(HTMLPageError) as err:
        download(remote(http_server, "/f", size=None, sha256=None), tmp_path, policy=FAST)
    msg = str(err.value)
    assert msg.startswith("data.zip: ") and "'Sign in'" in msg
    assert "set local_dir" in msg
    assert leftovers(tmp_path) == []


def test_integrity_check_failure_leaves_no_file(http_server, tmp_path):
    http_server.routes["/f"] = lambda h: h.send_file(DATA)

    def not_a_zip(path):
        raise ValueError(f"{path.name} is not a zip")

    with pytest.raises(IntegrityError, match=r"data.zip: \.data\.zip\.part is not a zip"):
        download(remote(http_server, "/f", size=None, sha256=None), tmp_path, policy=FAST,
                 check=not_a_zip)
    assert leftovers(tmp_path) == []


# --- Google Drive -------------------------------------------------------------

FILE_ID = "0B7EVK8r0v71pZjFTYXZWM3FlRnM"
TOKEN = "Xy-9_z"


def drive(server):
    return DriveEndpoints(uc_url=server.url("/uc"), usercontent_url=server.url("/download"))


def warning_page(body: str = "") -> bytes:
    return (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
            b"<body><p>Google Drive can't scan this file for viruses.</p>" + body.encode()
            + b"</body></html>")


def test_drive_old_cookie_flow(http_server, tmp_path):
    def uc(h):
        req = h.request_info
        cookie = req.headers.get("cookie", "")
        if req.query.get("confirm") == TOKEN and f"download_warning_13058={TOKEN}" in cookie:
            return h.send_file(DATA)
        h.send_bytes(warning_page(), ctype="text/html; charset=utf-8",
                     headers={"Set-Cookie": f"download_warning_13058={TOKEN}; Path=/"})

    http_server.routes["/uc"] = uc
    rf = RemoteFile("img.zip", (f"gdrive:{FILE_ID}",), len(DATA), SHA)
    path = download(rf, tmp_path, policy=FAST, drive=drive(http_server))
    assert path.read_bytes() == DATA
    assert [r.query for r in http_server.log] == [
        {"export": "download", "id": FILE_ID},
        {"export": "download", "id": FILE_ID, "confirm": TOKEN}]


def test_drive_old_token_in_link_flow(http_server, tmp_path):
    link = (f'<a id="uc-download-link" href="/uc?export=download&amp;confirm={TOKEN}'
            f'&amp;id={FILE_ID}">Download anyway</a>')
    http_server.routes["/uc"] = lambda h: (
        h.send_file(DATA) if h.request_info.query.get("confirm") == TOKEN
        else h.send_bytes(warning_page(link), ctype="text/html"))
    rf = RemoteFile("img.zip", (f"gdrive:{FILE_ID}",), len(DATA), SHA)
    assert download(rf, tmp_path, policy=FAST, drive=drive(http_server)).read_bytes() == DATA


def new_form(action: str, method: str) -> str:
    return (f'<form id="download-form" action="{action}" method="{method}">'
            '<input type="submit" id="uc-download-link" value="Download anyway"/>'
            f'<input type="hidden" name="id" value="{FILE_ID}">'
            '<input type="hidden" name="export" value="download">'
            '<input type="hidden" name="confirm" value="t">'
            '<input type="hidden" name="uuid" value="2f3c-uuid"></form>')


@pytest.mark.parametrize("method", ["get", "post"])
def test_drive_new_form_flow_with_resume(http_server, tmp_path, method):
    (tmp_path / ".img.zip.part").write_bytes(DATA[:50_000])
    http_server.routes["/uc"] = lambda h: h.send_bytes(
        warning_page(new_form(http_server.url("/download"), method)), ctype="text/html")

    def usercontent(h):
        fields = h.request_info.form if method == "post" else h.request_info.query
        if fields == {"id": FILE_ID, "export": "download", "confirm": "t", "uuid": "2f3c-uuid"}:
            return h.send_file(DATA)
        h.send_bytes(b"<html><title>bad form</title></html>", 400, "text/html")

    http_server.routes["/download"] = usercontent
    rf = RemoteFile("img.zip", (f"gdrive:{FILE_ID}",), len(DATA), SHA)
    path = download(rf, tmp_path, policy=FAST, drive=drive(http_server))
    assert path.read_bytes() == DATA
    last = http_server.log[-1]
    assert (last.method, last.path, last.headers.get("range")) == (method.upper(), "/download",
                                                                   "bytes=50000-")


def test_drive_form_pointing_elsewhere_is_not_followed(http_server, tmp_path):
    http_server.routes["/uc"] = lambda h: h.send_bytes(
        warning_page(new_form("https://evil.example/download", "get")), ctype="text/html")
    rf = RemoteFile("img.zip", (f"gdrive:{FILE_ID}",), len(DATA), SHA)
    with pytest.raises(HTMLPageError, match="points at https://evil.example/download"):
        download(rf, tmp_path, policy=FAST, drive=drive(http_server))
    assert len(http_server.log) == 1


def test_drive_quota_exceeded_names_file_and_local_dir(http_server, tmp_path):
    page = (b"<html><head><title>Google Drive - Quota exceeded</title></head><body>Too many users "
            b"have viewed or downloaded this file recently.</body></html>")
    http_server.routes["/uc"] = lambda h: h.send_bytes(page, ctype="text/html; charset=utf-8")
    rf = RemoteFile("list_attr_celeba.txt", (f"gdrive:{FILE_ID}",), 26721026)
    with pytest.raises(HTMLPageError) as err:
        download(rf, tmp_path, policy=FAST, drive=drive(http_server))
    msg = str(err.value)
    assert msg.startswith("list_attr_celeba.txt: Google Drive quota exceeded")
    assert "set local_dir" in msg
    assert leftovers(tmp_path) == []


def test_drive_confirmation_parsing_is_pure():
    d = DriveEndpoints(uc_url="https://drive.google.com/uc")
    assert drive_confirmation("<html>no form</html>", "https://x/", "ID", {}, d) is None
    assert drive_confirmation("<html/>", "https://x/", "ID", {"download_warning_1_ID": "T"}, d) == (
        "GET", "https://drive.google.com/uc", {"export": "download", "id": "ID", "confirm": "T"})
    assert parse_content_range("bytes 5-9/10") == (5, 9, 10)
    assert parse_content_range("bytes */10") == (None, None, 10)
    assert parse_content_range("garbage") == (None, None, None)


def test_remote_file_from_config_mapping():
    rf = RemoteFile.from_dict({"name": "a.txt", "urls": "gdrive:ID https://m/a.txt",
                               "size": "12", "sha256": "AB" * 32})
    assert rf == RemoteFile("a.txt", ("gdrive:ID", "https://m/a.txt"), 12, "ab" * 32, None)
    with pytest.raises(ValueError, match="plain, non-hidden file name"):
        RemoteFile("../a", ("https://m/a",))
    with pytest.raises(ValueError, match="read_timeout must be > 0"):
        Policy(read_timeout=0)
