"""The studio's errors: every one a JSON body ``{"error": message}`` with its HTTP status."""
from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from studio.models import UnknownModel


class BadRequest(ValueError):
    """A request that validated as JSON but not against the model (422)."""


class NotInstalled(RuntimeError):
    """An optional feature whose code is not installed (501)."""


def error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _where(loc) -> str:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


async def _invalid(request: Request, exc: RequestValidationError):
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error(422, f"the body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})")
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return error(422, "the body must be a JSON object")
    got = first.get("input")
    shown = json.dumps(got)[:60] if isinstance(got, (int, float, str, bool, type(None))) else type(got).__name__
    message = f"{_where(first['loc'])}: {first['msg']}"
    if first.get("type") != "missing":
        message += f" (got {shown})"
    if len(errors) > 1:
        message += f"; and {len(errors) - 1} more problem(s)"
    return error(422, message)


async def _http_error(request: Request, exc: StarletteHTTPException):
    return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _bad_request(request: Request, exc: BadRequest):
    return error(422, str(exc))


async def _not_installed(request: Request, exc: NotInstalled):
    return error(501, str(exc))


async def _unknown_model(request: Request, exc: UnknownModel):
    return error(404, f"unknown model id {exc.args[0]!r}; GET /api/models lists the ids")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as ``{"error": message}``."""
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(NotInstalled, _not_installed)
    app.add_exception_handler(UnknownModel, _unknown_model)
