"""Projection and completion as jobs (studio/jobs.py), and the jobs themselves.

``POST /api/project`` and ``POST /api/complete`` check the request, then queue the search:

* by default the request waits for its job and answers the result (what clients of the
  synchronous API expect); the job is cancelled when the client disconnects, and the
  request answers 504 at the job's deadline;
* with ``?wait=false`` it answers 202 with the job (``id``, ``state``, ``progress``) at
  once; ``GET /api/jobs/{id}`` then says how far it got and holds the ``result`` when
  ``done``, and ``DELETE /api/jobs/{id}`` cancels it. A job nobody asks about for a while
  is cancelled (the page was closed).

A full queue, or a client holding its share of it, is a 429 with Retry-After. A client
is its ``X-Client-Id`` header (the page sends one per tab) or else its address.

A completion the trained completion network does (``LoadedModel.completion``: one exists for
the generator's records version) is no search: tens of milliseconds, so it is answered at
once (200, whatever ``wait``), off the event loop but not queued behind searches (one at a
time per model: ``LoadedModel.net_lock``; two at once on 2 cores only slow each other). Every
completion answer says which ran: ``method`` ``net`` or ``search``.
"""
from __future__ import annotations

import re
import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from studio import features
from studio.access import is_loopback
from studio.errors import BadRequest, NotInstalled, error
from studio.jobs import JobQueue, QueueFull
from studio.models import LoadedModel, ModelRegistry
from studio.routes.deps import Fit, Jobs, Registry, load_model
from studio.schemas import CompleteRequest, ImageRequest, number, state_of

router = APIRouter()

#: How often a waiting request looks at its job and its client's connection (seconds).
POLL_S = 0.1
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def client_of(request: Request) -> str:
    """Whom a job belongs to (its share of the queue): the client's address, which behind a
    reverse proxy on 127.0.0.1 is the real one (uvicorn trusts its X-Forwarded-For). Only a
    client on this machine may split itself with ``X-Client-Id`` (one page per tab); a remote
    client changing the header would otherwise take more than its share."""
    host = request.client.host if request.client else "unknown"
    given = request.headers.get("x-client-id", "")
    if CLIENT_ID.fullmatch(given) and is_loopback(host):
        return "id:" + given
    return "host:" + host


def keras_generator(model: LoadedModel):
    """The Keras generator the search differentiates through: the one the serving forward was
    made from (model.train.serving.serving_forward keeps it, whatever the engine)."""
    return model.forward.generator


def _aligned(model: LoadedModel, text: str, what: str) -> np.ndarray:
    try:
        image = features.decode_data_url(text, what)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    size = model.card.resolution
    if image.shape[:2] != (size, size):
        raise BadRequest(f"{what} is {image.shape[1]}x{image.shape[0]}; send the aligned "
                         f"{size}x{size} face from /api/align")
    return image


async def _prepare(registry: ModelRegistry, spec: tuple[str, str], what: str, request: ImageRequest):
    """``(function, model, aligned face)`` for an optional feature, or NotInstalled."""
    fn = features.optional(*spec)
    if fn is None:
        raise NotInstalled(f"{what} is not installed ({spec[0].replace('.', '/')}.py)")
    model = await load_model(registry, request.model)
    return fn, model, _aligned(model, request.image, "image")


async def run_job(request: Request, jobs: JobQueue, kind: str, work, wait: bool):
    """Queue ``work``; answer its result (``wait``) or the job (202)."""
    try:
        job = jobs.submit(kind, client_of(request), work, watched=wait)
    except QueueFull as exc:
        return error(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    if not wait:
        return JSONResponse(job.view(jobs.position(job)), status_code=202,
                            headers={"Location": f"/api/jobs/{job.id}", "X-Job-Id": job.id})
    while not await job.wait(POLL_S):
        if await request.is_disconnected():
            jobs.cancel(job, "the client disconnected")
            return error(499, "the client disconnected")  # nobody reads it
        if time.monotonic() - job.created > job.deadline_s:
            jobs.cancel(job, "deadline")
            return error(504, job.deadline_error(), headers={"X-Job-Id": job.id})
    headers = {"X-Job-Id": job.id}
    if job.state == "done":
        return JSONResponse(job.result, headers=headers)
    if job.state == "failed":
        return error(job.status or 500, job.error, headers=headers)
    return error(409, f"{kind} was cancelled ({job.reason})", headers=headers)


@router.post("/api/project")
async def project(body: ImageRequest, request: Request, registry: Registry, jobs: Jobs, fit: Fit,
                  wait: bool = True):
    fn, model, image = await _prepare(registry, features.PROJECT, "projection", body)

    def work(on_step):
        out = fn(keras_generator(model), model.card, image[None], seed=0, on_step=on_step, encoder=model.encoder,
                 **fit)
        # drawn by the serving engine, as /api/generate draws these inputs: the page's next edit matches
        return {**state_of(out["inputs"]), "image": features.data_url(model.forward(out["inputs"])[0]),
                "psnr": number(out["psnr"][0]), "ssim": number(out["ssim"][0])}

    return await run_job(request, jobs, "projection", work, wait)


@router.post("/api/complete")
async def complete(body: CompleteRequest, request: Request, registry: Registry, jobs: Jobs, fit: Fit,
                   wait: bool = True):
    fn, model, image = await _prepare(registry, features.COMPLETE, "completion", body)
    if body.mask is None:
        raise BadRequest("mask is missing: draw the part to complete")
    mask = _aligned(model, body.mask, "mask").max(axis=-1) > 127  # white = missing
    if not mask.any():
        raise BadRequest("the mask is empty: draw the part to complete")
    chosen = {"method": "search"} if body.method == "search" else await run_in_threadpool(model.completion)
    if body.method == "net" and chosen["method"] != "net":
        return error(404, f"method net: {chosen['note'] or 'no completion network'}")
    if chosen["method"] == "net":
        return JSONResponse(await run_in_threadpool(complete_by_net, chosen, image, mask, model.net_lock))

    def work(on_step):
        critic = model.discriminator()
        out = fn(keras_generator(model), critic, model.card, image[None], mask[None], seed=0, on_step=on_step,
                 encoder=model.encoder, **fit)
        return {"method": "search", **state_of(out["inputs"]), "completed": features.data_url(out["completed"][0]),
                "blended": features.data_url(out["blended"][0]), "flags": out["flags"][0],
                "perceptual": critic is not None}

    return await run_job(request, jobs, "completion", work, wait)


def complete_by_net(chosen: dict, image: np.ndarray, mask: np.ndarray, lock) -> dict:
    """The completion network's answer for one aligned face: no z (the network paints pixels;
    projection finds a z), and which network (its records version and steps, not its path)."""
    from model.apps.completion_net import complete_with_net

    try:
        with lock:
            out = complete_with_net(chosen["network"], image[None], mask[None])
    except ValueError as exc:  # a mask with nothing known
        raise BadRequest(f"mask: {exc}") from None
    card = chosen["card"] or {}
    return {"method": "net", "network": {"dataset": card.get("dataset", {}).get("name"),
                                         "version": card.get("dataset", {}).get("version"), "steps": card.get("steps")},
            "completed": features.data_url(out["completed"][0]), "blended": features.data_url(out["blended"][0]),
            "flags": out["flags"][0], "perceptual": False, "seconds": round(out["seconds"], 4)}


@router.get("/api/jobs")
async def job_list(request: Request, jobs: Jobs):
    """The queue's limits and counts, and the asking client's jobs."""
    return jobs.stats(client_of(request))


@router.get("/api/jobs/{job_id}")
async def job_info(job_id: str, jobs: Jobs):
    job = jobs.get(job_id)
    if job is None:
        return _unknown(job_id)
    return job.view(jobs.position(job))


@router.delete("/api/jobs/{job_id}")
async def job_cancel(job_id: str, jobs: Jobs):
    """Cancel a job: at once when it waits, at its next step when it runs."""
    job = jobs.get(job_id)
    if job is None:
        return _unknown(job_id)
    if not job.over:
        jobs.cancel(job, "cancelled by its client")
    return job.view(jobs.position(job))


def _unknown(job_id: str):
    return error(404, f"unknown job id {job_id[:80]!r} (finished jobs are forgotten after a while)")
