"""A real HTTP server on 127.0.0.1 whose answers each test programs.

Import the ``http_server`` fixture explicitly (``from conftest_http import
http_server``). Routes map a path to ``fn(handler)``; every request is logged
as (method, path, query, headers) so tests can assert what the client sent.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]


class Handler(BaseHTTPRequestHandler):
    server: "LoopbackServer"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _dispatch(self):
        parts = urlsplit(self.path)
        body = b""
        if self.command == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.request_info = Request(
            self.command, parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()},
            {k.lower(): v for k, v in self.headers.items()},
            {k: v[-1] for k, v in parse_qs(body.decode()).items()})
        with self.server.lock:
            self.server.log.append(self.request_info)
        route = self.server.routes.get(parts.path)
        if route is None:
            self.send_bytes(b"<html><title>404</title></html>", status=404, ctype="text/html")
        else:
            route(self)

    do_GET = do_POST = _dispatch

    def send_bytes(self, data: bytes, status: int = 200, ctype: str = "application/octet-stream",
                   headers: dict[str, str] | None = None, cut_after: int | None = None) -> None:
        """Answer with ``data``; ``cut_after`` closes the connection after that
        many body bytes although Content-Length promised all of them."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data if cut_after is None else data[:cut_after])
        self.wfile.flush()
        if cut_after is not None:
            self.close_connection = True

    def send_file(self, data: bytes, honour_range: bool = True, cut_after: int | None = None,
                  ctype: str = "application/octet-stream") -> None:
        """Serve ``data`` the way a static file server does (206 for Range)."""
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and honour_range:
            start = int(m.group(1))
            if start >= len(data):
                return self.send_bytes(b"", 416, headers={"Content-Range": f"bytes */{len(data)}"})
            return self.send_bytes(data[start:], 206, ctype, cut_after=cut_after, headers={
                "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        self.send_bytes(data, 200, ctype, cut_after=cut_after)


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__((host, 0), Handler)
        self.routes: dict[str, Callable[[Handler], None]] = {}
        self.log: list[Request] = []
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):
        """Clients that hang up (timeouts under test) are expected; anything
        else is still reported."""
        import sys
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def netloc(self) -> str:
        """``host:port`` of this server (an allow-list entry admitting exactly it)."""
        return f"{self.server_address[0]}:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return f"http://{self.netloc}{path}"

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]


def start_server(host: str = "127.0.0.1") -> LoopbackServer:
    """A started :class:`LoopbackServer` on ``host`` (any 127.x address works on Linux)."""
    server = LoopbackServer(host)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    server.thread = thread
    return server


def stop_server(server: LoopbackServer) -> None:
    server.shutdown()
    server.server_close()
    server.thread.join(5)


@pytest.fixture
def start_http_server():
    """``start(host="127.0.0.1")`` starts another server (on any 127.x address);
    every server started is stopped after the test."""
    started = []

    def start(host: str = "127.0.0.1") -> LoopbackServer:
        started.append(start_server(host))
        return started[-1]

    yield start
    for server in started:
        stop_server(server)


@pytest.fixture
def http_server():
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)
