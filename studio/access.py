"""Who may use a studio that other people can reach: an access token, and the host rule.

Without a token the studio binds only loopback addresses (this machine). With one
(``--token`` or the ``FACEGAN_STUDIO_TOKEN`` environment variable) every request but
``GET /api/health`` must carry it: ``Authorization: Bearer <token>``, or the cookie the
page gets when it is opened once as ``/?token=<token>`` (HttpOnly, SameSite=Strict; the
address bar is then cleaned by a redirect). A missing or wrong token is a 401 with a JSON
error; tokens are compared in constant time.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
from urllib.parse import parse_qs, urlencode

TOKEN_ENV = "FACEGAN_STUDIO_TOKEN"
COOKIE = "facegan_token"
#: Paths that answer without a token (a load balancer's health check).
OPEN_PATHS = ("/api/health",)
#: Shortest token accepted: guessing stays out of reach.
MIN_TOKEN_LENGTH = 16


def token_from(flag: str | None) -> str | None:
    """The token of ``--token`` or, without it, of the environment; None when neither is set.
    Raises ``ValueError`` for one too short to protect anything."""
    token = (flag if flag is not None else os.environ.get(TOKEN_ENV, "")).strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the access token is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                         f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return token


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine (``localhost`` counts)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, token: str | None) -> None:
    """Refuse to serve other machines without a token (one line naming the fix)."""
    if token is None and not is_loopback(host):
        raise ValueError(f"--host {host} lets other machines in: set an access token (--token or "
                         f"{TOKEN_ENV}), or keep --host 127.0.0.1")


class TokenGate:
    """ASGI middleware that lets a request through only with the token (module docstring)."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        cookies = dict(part.strip().split("=", 1) for part in headers.get("cookie", "").split(";") if "=" in part)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [None])[0]
        if scope["path"] == "/" and self._ok(given):  # first visit: cookie, and the token out of the URL
            rest = urlencode({k: v for k, v in query.items() if k != "token"}, doseq=True)
            return await _respond(send, 303, b"", [(b"location", ("/" + ("?" + rest if rest else "")).encode()),
                                                   (b"set-cookie", f"{COOKIE}={given}; HttpOnly; SameSite=Strict; "
                                                                   f"Path=/".encode())])
        if self._ok(bearer) or self._ok(cookies.get(COOKIE)):
            return await self.app(scope, receive, send)
        body = (b'{"error": "this studio needs its access token: open the page once as /?token=<token>, or send '
                b'Authorization: Bearer <token>"}')
        return await _respond(send, 401, body, [(b"content-type", b"application/json"),
                                                (b"www-authenticate", b"Bearer")])


async def _respond(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
