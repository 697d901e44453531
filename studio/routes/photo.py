"""An uploaded photo's faces, aligned as the training faces were."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from starlette.concurrency import run_in_threadpool

from studio import features
from studio.errors import error
from studio.routes.deps import Registry, load_model
from studio.schemas import ModelId

router = APIRouter()


@router.post("/api/align")
async def align(photo: Annotated[UploadFile, File()], registry: Registry, model: ModelId = None):
    from pipeline.align.aligner import NoFace
    from pipeline.imaging import DecodeError

    size = (await load_model(registry, model)).card.resolution
    data = await photo.read()
    try:
        faces = await run_in_threadpool(features.align_photo, data, size)
    except DecodeError as exc:
        status = 413 if exc.reason == "too_large" else 422
        return error(status, f"photo {photo.filename!r}: {exc.reason}: {exc.detail}")
    except NoFace as exc:
        return error(422, f"photo {photo.filename!r}: {exc.reason}: {exc.detail}; "
                          f"use a photo with a frontal face at least ~80 px wide")
    return {"size": size, "faces": [{**f, "image": features.data_url(f["image"])} for f in faces]}
