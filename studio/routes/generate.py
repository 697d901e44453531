"""The edits: a face for a state, a random face, an interpolation (all through the model's batcher)."""
from __future__ import annotations

import secrets

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from studio import features
from studio.routes.deps import Registry, load_model
from studio.schemas import GenerateRequest, InterpolateRequest, RandomRequest, resolve, state_of

router = APIRouter()


@router.post("/api/generate")
async def generate(request: GenerateRequest, registry: Registry):
    model = await load_model(registry, request.model)
    inputs, clipped = resolve(model, request)
    png = await model.batcher.submit(inputs, lambda images: features.png_bytes(images[0], request.scale))
    return Response(png, media_type="image/png", headers={"X-Clipped": str(clipped), "Cache-Control": "no-store"})


@router.post("/api/random")
async def random(request: RandomRequest, registry: Registry):
    from model.card import sample_inputs

    model = await load_model(registry, request.model)
    seed = request.seed if request.seed is not None else secrets.randbelow(2 ** 32)
    inputs = sample_inputs(model.card, 1, seed)
    image = await model.batcher.submit(inputs, lambda images: features.data_url(images[0]))
    return {"seed": seed, **state_of(inputs), "image": image}


@router.post("/api/interpolate")
async def interpolate(request: InterpolateRequest, registry: Registry):
    from model.train.sampling import slerp

    model = await load_model(registry, request.model)
    a, _ = resolve(model, request.a)
    b, _ = resolve(model, request.b)
    t = np.linspace(0.0, 1.0, request.steps)
    inputs = {"z": slerp(a["z"][0], b["z"][0], t)}
    for k in a:
        if k != "z":
            inputs[k] = ((1 - t[:, None]) * a[k] + t[:, None] * b[k]).astype(np.float32)
    urls = await model.batcher.submit(inputs, lambda images: [features.data_url(x) for x in images])
    return {"frames": [{"t": round(float(t[i]), 4), **state_of(inputs, i), "image": urls[i]}
                       for i in range(len(t))]}
