"""Request size limits, and the middleware that holds them while a body streams in."""
from __future__ import annotations

from starlette.exceptions import HTTPException as StarletteHTTPException

from studio.errors import error

#: Request body limits (bytes): JSON edits, JSON carrying an aligned face, photo uploads.
MAX_JSON_BYTES = 64 * 1024
MAX_IMAGE_JSON_BYTES = 1024 * 1024
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
BODY_LIMITS = {"/api/align": MAX_UPLOAD_BYTES, "/api/project": MAX_IMAGE_JSON_BYTES,
               "/api/complete": MAX_IMAGE_JSON_BYTES}
MAX_VALUES = 4096          # longest vector accepted before the model's own check
MAX_INTERPOLATION_STEPS = 16


class BodyLimit:
    """ASGI middleware: a request body over its path's limit is a 413 before it is read whole."""

    def __init__(self, app, default: int = MAX_JSON_BYTES, limits: dict[str, int] | None = None):
        self.app, self.default, self.limits = app, default, limits or BODY_LIMITS

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"], self.default)
        length = dict(scope["headers"]).get(b"content-length")
        too_big = error(413, f"request body over {limit} bytes (the limit for {scope['path']})")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await too_big(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # FastAPI re-raises HTTPExceptions from body reading
                    raise _TooBig(413, f"request body over {limit} bytes (the limit for {scope['path']})")
            return message

        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked_send)
        except _TooBig:
            if not started:
                await too_big(scope, receive, send)


class _TooBig(StarletteHTTPException):
    pass
