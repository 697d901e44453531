"""FastAPI dependencies of the studio's routes: what create_app put on ``app.state``."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from studio.jobs import JobQueue
from studio.models import LoadedModel, ModelRegistry, UnknownModel


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


def get_fit(request: Request) -> dict:
    """Overrides of the projection / completion search settings (``create_app(fit=...)``)."""
    return request.app.state.fit


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
    return await run_in_threadpool(_load, registry, model_id)
