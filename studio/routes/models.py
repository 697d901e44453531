"""Health, statistics, the model listing and a model's card."""
from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from studio import features
from studio.limits import MAX_INTERPOLATION_STEPS, MAX_JSON_BYTES, MAX_UPLOAD_BYTES
from studio.routes.deps import Registry, load_model
from studio.schemas import ModelId

router = APIRouter()


@router.get("/api/health")
async def health():
    return {"ok": True}


@router.get("/api/stats")
async def stats(registry: Registry):
    """Generator calls and rows per loaded model (how well requests are batched)."""
    return {m.id: {"batches": m.batcher.batches, "rows": m.batcher.rows,
                   "mean_batch": round(m.batcher.rows / max(m.batcher.batches, 1), 2)}
            for m in registry.loaded()}


@router.get("/api/models")
async def models(registry: Registry):
    listing = await run_in_threadpool(registry.listing)
    return {"default": registry.default_id, "models": listing}


@router.get("/api/model")
async def model_info(registry: Registry, id: ModelId = None):
    model = await load_model(registry, id)
    return {**model.info(), "features": features.available(),
            "limits": {"max_json_bytes": MAX_JSON_BYTES, "max_upload_bytes": MAX_UPLOAD_BYTES,
                       "max_upload_pixels": features.MAX_UPLOAD_PIXELS,
                       "max_interpolation_steps": MAX_INTERPOLATION_STEPS}}
