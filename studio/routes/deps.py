"""FastAPI dependencies of the studio's routes: what create_app put on ``app.state``."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from studio.jobs import JobQueue
from studio.models import LoadedModel, ModelRegistry, UnknownModel


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


async def get_fit(request: Request) -> dict:
    """Overrides of the projection / completion search settings (``create_app(fit=...)``)."""
    return request.app.state.fit


# The dependencies are coroutines, as are the routes: FastAPI runs a plain function in its
# thread pool, and those two thread hops per edit (with the model lookup's) cost the 8-client
# bench 84.8-88.0 against 90.8-97.1 requests/s (AVX2 EPYC, 2026-12-04, alternating runs).
Registry = Annotated[ModelRegistry, Depends(get_registry)]
Jobs = Annotated[JobQueue, Depends(get_jobs)]
Fit = Annotated[dict, Depends(get_fit)]


def _load(registry: ModelRegistry, model_id: str | None) -> LoadedModel:
    try:
        return registry.get(model_id)
    except UnknownModel:
        raise
    except (OSError, ValueError) as exc:
        raise HTTPException(500, f"model {model_id!r} could not be loaded: {exc}") from None


async def load_model(registry: ModelRegistry, model_id: str | None) -> LoadedModel:
    """The loaded model ``model_id`` (loading it off the event loop on first use)."""
    return registry.ready(model_id) or await run_in_threadpool(_load, registry, model_id)
