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
  heavy work, run as jobs (studio/jobs.py, studio/routes/heavy.py): the request waits for
  the result, or with ``?wait=false`` gets the job (202) to follow with ``GET /api/jobs/{id}``
  and cancel with ``DELETE /api/jobs/{id}``; ``GET /api/jobs`` shows the queue. A full queue
  is 429 with Retry-After, a job past its deadline 504. 501 when the installed code has no
  projection / completion (``features`` in ``/api/model``). A completion by the trained completion
  network (one exists for the generator's records version; ``method`` ``auto``, ``net`` or
  ``search``) needs no job: answered at once. The answer's ``method`` says which ran.

The routes live in studio/routes/ (one APIRouter per feature); this module puts them together.
"""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from studio import errors
from studio.jobs import JobQueue
from studio.limits import BodyLimit
from studio.models import ModelRegistry
from studio.routes import generate, heavy, models, page, photo
from studio.routes.page import STATIC, VUE

__all__ = ["STATIC", "VUE", "create_app"]


def create_app(registry: ModelRegistry, jobs: JobQueue | None = None, fit: dict | None = None) -> FastAPI:
    """The studio app serving ``registry``'s models and the page. ``jobs`` runs projection and
    completion (default: a :class:`JobQueue` sized from the core count); ``fit`` overrides
    their search settings (e.g. ``{"steps": 20}``: benchmarks and tests)."""
    jobs = jobs if jobs is not None else JobQueue()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.close()  # running jobs stop at their next step

    app = FastAPI(title="facegan studio", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.state.registry, app.state.jobs, app.state.fit = registry, jobs, dict(fit or {})
    errors.install(app)
    for routes in (models, generate, photo, heavy, page):
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit)
    return app
