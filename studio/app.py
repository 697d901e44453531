"""The studio's HTTP API (FastAPI) and the static page.

Endpoints (JSON errors ``{"error": message}`` with a 4xx code for bad requests):

* ``GET /api/health``: ``{"ok": true}``; ``GET /api/stats``: generator calls and rows per loaded model.
* ``GET /api/models``: ``{"default": id, "models": [{id, variant, dataset, steps, resolution,
  z_size, inputs, fid, created, directions}]}``: every exported generator under the models root.
* ``GET /api/model?id=``: the card, z range and gray mapping, extra inputs (c),
  attribute directions (name, held-out accuracy, chance) and dropped ones, the offset
  range, the optional ``features`` and the request ``limits``.
* ``POST /api/generate`` ``{model?, z, c?, offsets?, locks?, scale?}`` -> ``image/png``
  (64x64, or ``scale`` times larger, nearest neighbour). z values outside the card's range
  are clipped to it (the response header ``X-Clipped`` counts them); so are c values
  and offsets (``offset_range``). NaN, infinity, strings, nested lists, a wrong length,
  unknown inputs, directions or models are rejected (422 / 404).
* ``POST /api/random`` ``{model?, seed?}`` -> ``{seed, z, c, image}`` (``image``: a PNG data URL).
* ``POST /api/interpolate`` ``{model?, a: state, b: state, steps}`` -> ``{frames: [{t, z, c, image}]}``:
  spherical interpolation of z (after each end's direction offsets), linear in c.
* ``POST /api/align`` (multipart ``photo``) -> ``{faces: [{image, box, score}]}``: the photo's
  faces aligned as the training data were.
* ``POST /api/project`` ``{model?, image}`` and ``POST /api/complete`` ``{model?, image, mask}``:
  when the installed code has projection / completion (``features`` in ``/api/model``);
  otherwise 501.
"""
from __future__ import annotations

import asyncio
import json
import math
import secrets
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, Strict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from studio import features
from studio.models import OFFSET_RANGE, LoadedModel, ModelRegistry, UnknownModel

STATIC = Path(__file__).parent / "static"
#: Vue's prebuilt ES-module browser build, installed by ``npm ci --prefix studio``.
VUE = Path(__file__).parent / "node_modules" / "vue" / "dist" / "vue.esm-browser.prod.js"
#: Request body limits (bytes): JSON edits, JSON carrying an aligned face, photo uploads.
MAX_JSON_BYTES = 64 * 1024
MAX_IMAGE_JSON_BYTES = 1024 * 1024
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
BODY_LIMITS = {"/api/align": MAX_UPLOAD_BYTES, "/api/project": MAX_IMAGE_JSON_BYTES,
               "/api/complete": MAX_IMAGE_JSON_BYTES}
MAX_VALUES = 4096          # longest vector accepted before the model's own check
MAX_INTERPOLATION_STEPS = 16

# Numbers only: "1.5" (a string) or true is an error, not a silent conversion; NaN and
# infinity (which Python's JSON reader accepts) are refused by allow_inf_nan.
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Vector = Annotated[list[Number], Field(max_length=MAX_VALUES)]
ModelId = Annotated[str | None, Field(default=None, max_length=300)]


class State(BaseModel):
    """What the page edits: z, the extra inputs c, and attribute offsets with locks."""
    model_config = ConfigDict(extra="forbid")
    z: Vector
    c: Annotated[dict[str, Vector], Field(max_length=16)] = {}
    offsets: Annotated[dict[str, Number], Field(max_length=64)] = {}
    locks: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=64)] = []


class GenerateRequest(State):
    model: ModelId = None
    scale: Annotated[int, Field(ge=1, le=8, strict=True)] = 1


class RandomRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelId = None
    seed: Annotated[int | None, Field(ge=0, lt=2 ** 32, strict=True)] = None


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelId = None
    a: State
    b: State
    steps: Annotated[int, Field(ge=2, le=MAX_INTERPOLATION_STEPS, strict=True)] = 8


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelId = None
    image: Annotated[str, Field(max_length=MAX_IMAGE_JSON_BYTES)]
    mask: Annotated[str | None, Field(max_length=MAX_IMAGE_JSON_BYTES)] = None


class BadRequest(ValueError):
    """A request that validated as JSON but not against the model (422)."""


class NotInstalled(RuntimeError):
    """An optional feature whose code is not installed (501)."""


def _clip(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, int]:
    clipped = np.clip(values, low, high)
    return clipped, int((clipped != values).sum())


def resolve(model: LoadedModel, state: State) -> tuple[dict[str, np.ndarray], int]:
    """``({name: (1, size) float32}, clipped count)``: the generator inputs of ``state``."""
    card = model.card
    z = np.asarray(state.z, np.float32)
    if z.shape != (card.z.size,):
        raise BadRequest(f"z has {len(state.z)} values; model {model.id!r} takes {card.z.size}")
    z, clipped = _clip(z, *card.z.range)
    unknown = sorted(set(state.c) - {s.name for s in card.extra_inputs})
    if unknown:
        raise BadRequest(f"unknown input(s) {unknown} in c; model {model.id!r} takes "
                         f"{[s.name for s in card.extra_inputs] or 'z only'}")
    inputs = {}
    for spec in card.extra_inputs:
        if spec.name in state.c:
            value = np.asarray(state.c[spec.name], np.float32)
            if value.shape != (spec.size,):
                raise BadRequest(f"c.{spec.name} has {len(state.c[spec.name])} values; it takes {spec.size}")
        else:  # a neutral default: the middle of the range, or the first class
            value = (np.eye(spec.size, dtype=np.float32)[0] if spec.kind == "onehot"
                     else np.full(spec.size, sum(spec.range) / 2, np.float32))
        low, high = spec.range if spec.range is not None else (0.0, 1.0)
        value, n = _clip(value, low, high)
        clipped += n
        inputs[spec.name] = value[None]
    for what, names in (("offsets", list(state.offsets)), ("locks", state.locks)):
        unknown = sorted(set(names) - set(model.names))
        if unknown:
            raise BadRequest(f"unknown direction(s) {unknown} in {what}; model {model.id!r} has "
                             f"{model.names or 'no attribute directions'}")
    offsets = {k: float(np.clip(v, *OFFSET_RANGE)) for k, v in state.offsets.items()}
    z = np.clip(model.apply_directions(z, offsets, state.locks), *card.z.range)
    return {"z": z[None].astype(np.float32), **inputs}, clipped


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _where(loc) -> str:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


class BodyLimit:
    """ASGI middleware: a request body over its path's limit is a 413 before it is read whole."""

    def __init__(self, app, default: int = MAX_JSON_BYTES, limits: dict[str, int] | None = None):
        self.app, self.default, self.limits = app, default, limits or BODY_LIMITS

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"], self.default)
        length = dict(scope["headers"]).get(b"content-length")
        too_big = _error(413, f"request body over {limit} bytes (the limit for {scope['path']})")
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


def create_app(registry: ModelRegistry) -> FastAPI:
    """The studio app serving ``registry``'s models and the page."""
    app = FastAPI(title="facegan studio", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.registry = registry
    heavy = asyncio.Semaphore(1)  # projection / completion: one optimisation at a time

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return _error(422, f"the body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})")
        if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            return _error(422, "the body must be a JSON object")
        got = first.get("input")
        shown = json.dumps(got)[:60] if isinstance(got, (int, float, str, bool, type(None))) else type(got).__name__
        message = f"{_where(first['loc'])}: {first['msg']}"
        if first.get("type") != "missing":
            message += f" (got {shown})"
        if len(errors) > 1:
            message += f"; and {len(errors) - 1} more problem(s)"
        return _error(422, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return _error(422, str(exc))

    @app.exception_handler(NotInstalled)
    async def not_installed(request: Request, exc: NotInstalled):
        return _error(501, str(exc))

    @app.exception_handler(UnknownModel)
    async def unknown_model(request: Request, exc: UnknownModel):
        return _error(404, f"unknown model id {exc.args[0]!r}; GET /api/models lists the ids")

    def get_model(model_id: str | None) -> LoadedModel:
        try:
            return registry.get(model_id)
        except UnknownModel:
            raise
        except (OSError, ValueError) as exc:
            raise HTTPException(500, f"model {model_id!r} could not be loaded: {exc}") from None

    @app.get("/api/health")
    async def health():
        return {"ok": True}

    @app.get("/api/stats")
    async def stats():
        """Generator calls and rows per loaded model (how well requests are batched)."""
        return {m.id: {"batches": m.batcher.batches, "rows": m.batcher.rows,
                       "mean_batch": round(m.batcher.rows / max(m.batcher.batches, 1), 2)}
                for m in registry.loaded()}

    @app.get("/api/models")
    async def models():
        listing = await run_in_threadpool(registry.listing)
        return {"default": registry.default_id, "models": listing}

    @app.get("/api/model")
    async def model_info(id: ModelId = None):
        model = await run_in_threadpool(get_model, id)
        return {**model.info(), "features": features.available(),
                "limits": {"max_json_bytes": MAX_JSON_BYTES, "max_upload_bytes": MAX_UPLOAD_BYTES,
                           "max_upload_pixels": features.MAX_UPLOAD_PIXELS,
                           "max_interpolation_steps": MAX_INTERPOLATION_STEPS}}

    @app.post("/api/generate")
    async def generate(request: GenerateRequest):
        model = await run_in_threadpool(get_model, request.model)
        inputs, clipped = resolve(model, request)
        png = await model.batcher.submit(inputs, lambda images: features.png_bytes(images[0], request.scale))
        return Response(png, media_type="image/png", headers={"X-Clipped": str(clipped), "Cache-Control": "no-store"})

    @app.post("/api/random")
    async def random(request: RandomRequest):
        from model.card import sample_inputs

        model = await run_in_threadpool(get_model, request.model)
        seed = request.seed if request.seed is not None else secrets.randbelow(2 ** 32)
        inputs = sample_inputs(model.card, 1, seed)
        image = await model.batcher.submit(inputs, lambda images: features.data_url(images[0]))
        return {"seed": seed, **_state(inputs), "image": image}

    @app.post("/api/interpolate")
    async def interpolate(request: InterpolateRequest):
        from model.train.sampling import slerp

        model = await run_in_threadpool(get_model, request.model)
        a, _ = resolve(model, request.a)
        b, _ = resolve(model, request.b)
        t = np.linspace(0.0, 1.0, request.steps)
        inputs = {"z": slerp(a["z"][0], b["z"][0], t)}
        for k in a:
            if k != "z":
                inputs[k] = ((1 - t[:, None]) * a[k] + t[:, None] * b[k]).astype(np.float32)
        urls = await model.batcher.submit(inputs, lambda images: [features.data_url(x) for x in images])
        return {"frames": [{"t": round(float(t[i]), 4), **_state(inputs, i), "image": urls[i]}
                           for i in range(len(t))]}

    @app.post("/api/align")
    async def align(photo: Annotated[UploadFile, File()], model: ModelId = None):
        from pipeline.align.aligner import NoFace
        from pipeline.imaging import DecodeError

        size = (await run_in_threadpool(get_model, model)).card.resolution
        data = await photo.read()
        try:
            faces = await run_in_threadpool(features.align_photo, data, size)
        except DecodeError as exc:
            status = 413 if exc.reason == "too_large" else 422
            return _error(status, f"photo {photo.filename!r}: {exc.reason}: {exc.detail}")
        except NoFace as exc:
            return _error(422, f"photo {photo.filename!r}: {exc.reason}: {exc.detail}; "
                               f"use a photo with a frontal face at least ~80 px wide")
        return {"size": size, "faces": [{**f, "image": features.data_url(f["image"])} for f in faces]}

    def aligned(model: LoadedModel, text: str, what: str) -> np.ndarray:
        try:
            image = features.decode_data_url(text, what)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        size = model.card.resolution
        if image.shape[:2] != (size, size):
            raise BadRequest(f"{what} is {image.shape[1]}x{image.shape[0]}; send the aligned "
                             f"{size}x{size} face from /api/align")
        return image

    async def prepare(spec: tuple[str, str], what: str, request: ImageRequest):
        """``(function, model, aligned face)`` for an optional feature, or NotInstalled."""
        fn = features.optional(*spec)
        if fn is None:
            raise NotInstalled(f"{what} is not installed ({spec[0].replace('.', '/')}.py)")
        model = await run_in_threadpool(get_model, request.model)
        return fn, model, aligned(model, request.image, "image")

    @app.post("/api/project")
    async def project(request: ImageRequest):
        fn, model, image = await prepare(features.PROJECT, "projection", request)
        async with heavy:
            out = await run_in_threadpool(lambda: fn(model.forward.generator, model.card, image[None], seed=0))
        return {**_state(out["inputs"]), "image": features.data_url(out["images"][0]),
                "psnr": _number(out["psnr"][0]), "ssim": _number(out["ssim"][0])}

    @app.post("/api/complete")
    async def complete(request: ImageRequest):
        fn, model, image = await prepare(features.COMPLETE, "completion", request)
        if request.mask is None:
            raise BadRequest("mask is missing: draw the part to complete")
        mask = aligned(model, request.mask, "mask").max(axis=-1) > 127  # white = missing
        if not mask.any():
            raise BadRequest("the mask is empty: draw the part to complete")
        async with heavy:
            out = await run_in_threadpool(
                lambda: fn(model.forward.generator, model.discriminator(), model.card, image[None], mask[None],
                           seed=0))
        return {**_state(out["inputs"]), "completed": features.data_url(out["completed"][0]),
                "blended": features.data_url(out["blended"][0]), "flags": out["flags"][0],
                "perceptual": model.discriminator() is not None}

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/vendor/vue.js", include_in_schema=False)
    async def vue():
        return FileResponse(VUE, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit)
    return app


def _state(inputs: dict[str, np.ndarray], i: int = 0) -> dict:
    """Row ``i`` of generator inputs as the page's ``{"z": [...], "c": {name: [...]}}``."""
    return {"z": _floats(inputs["z"][i]), "c": {k: _floats(v[i]) for k, v in inputs.items() if k != "z"}}


def _floats(values) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(values).ravel()]


def _number(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, 4)
