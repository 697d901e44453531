"""Aligning one shard of a source, and the on-disk format of an aligned shard.

A shard folder holds ``faces.npz`` (``images``: ``(n, S, S, 3) uint8``),
``faces.jsonl`` (one metadata object per face, same order: source key, face
index, box, score, landmarks, transform, plus the source's own metadata such
as attributes and identity), ``rejected.jsonl`` (one line per input that gave
no face, with a reason) and ``summary.json`` (counts). Every input key is in
exactly one of ``faces.jsonl`` (as ``key``) or ``rejected.jsonl``.

Shards are planned as an append-only log (:func:`plan_shards`): a shard is
named ``shard-{index:05d}-{digest}`` by its position and the hash of its key
list, and keeps that name and content for good; new keys go to new shards, so
adding raw data never changes (or re-aligns) an existing shard.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from pipeline.atomic import atomic_file
from pipeline.faces import FaceAligner, NoFace
from pipeline.imaging import DecodeError, Photo
from pipeline.jsonl import read_jsonl, write_jsonl
from pipeline.sources import Source, shard_keys
from pipeline.versions import digest


def align_bytes(aligner: FaceAligner, data: bytes) -> dict:
    """Decode and align one encoded photo; never raises for bad input.

    Returns ``{"faces": [(image, meta), ...], "width": W, "height": H}`` or
    ``{"reason": ..., "detail": ...}`` when the photo gives no face (reasons
    from :class:`DecodeError` and :class:`NoFace`).
    """
    try:
        photo = Photo(data)
        faces = aligner.align_photo(photo, strict=True)
    except (DecodeError, NoFace) as exc:
        return {"reason": exc.reason, "detail": exc.detail}
    except MemoryError:
        return {"reason": "too_large", "detail": "out of memory while decoding or detecting"}
    return {"faces": [(f.image, f.meta()) for f in faces], "width": photo.width, "height": photo.height}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_WORKER_ALIGNER: FaceAligner | None = None


def _threaded_runtime_loaded() -> bool:
    return any(name in sys.modules for name in ("tensorflow", "torch"))


def _init_worker(aligner: FaceAligner) -> None:
    global _WORKER_ALIGNER
    import cv2
    cv2.setNumThreads(1)  # one process per core already; threads would only contend
    _WORKER_ALIGNER = aligner


def _work(data: bytes) -> dict:
    return align_bytes(_WORKER_ALIGNER, data)


def align_stream(items: Iterable[tuple[str, bytes | dict]], aligner: FaceAligner,
                 jobs: int = 1) -> Iterator[tuple[str, dict]]:
    """Align ``(key, data)`` pairs, yielding ``(key, result)`` in input order.

    ``data`` is encoded bytes, or already a result dict (e.g. a read error),
    which is passed through. ``result`` is :func:`align_bytes`'s. With
    ``jobs > 1`` the work runs in that many processes; the dlib models are
    loaded once here and inherited by the forked workers, and at most
    ``4 * jobs`` photos are in flight, so memory stays bounded on any input size.
    """
    if jobs <= 1:
        for key, data in items:
            yield key, data if isinstance(data, dict) else align_bytes(aligner, data)
        return

    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    methods = mp.get_all_start_methods()
    if "fork" in methods and not _threaded_runtime_loaded():
        import cv2
        # OpenCV's thread pool, once used here, would be inherited without its
        # threads and hang the children: stop it before forking (the work runs
        # one process per core anyway).
        cv2.setNumThreads(1)
        aligner._dlib()  # load before forking: workers share the ~100 MB of models
        context = mp.get_context("fork")
    else:
        # Forking a process whose native thread pools hold locks (TensorFlow,
        # torch) can deadlock the children; start clean workers instead.
        context = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    pending: deque = deque()
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                             initargs=(aligner,)) as pool:
        for key, data in items:
            pending.append((key, data if isinstance(data, dict) else pool.submit(_work, data)))
            while len(pending) >= 4 * jobs:
                key0, fut = pending.popleft()
                yield key0, fut if isinstance(fut, dict) else fut.result()
        while pending:
            key0, fut = pending.popleft()
            yield key0, fut if isinstance(fut, dict) else fut.result()


def _read_items(source: Source, keys: list[str], metas: dict):
    for key in keys:
        try:
            item = source.read(key)
        except (OSError, KeyError) as exc:
            yield key, {"reason": "unreadable", "detail": str(exc)}
            continue
        metas[key] = item.meta
        yield key, item.data


def align_keys(source: Source, keys: list[str], aligner: FaceAligner,
               progress: Callable[[int, int], None] | None = None, jobs: int = 1):
    """Align the images ``keys`` of ``source``, in ``jobs`` processes.

    Returns ``(images, faces, rejected)``: an ``(n, S, S, 3) uint8`` array,
    ``n`` metadata dicts, and one ``{"key", "reason", "detail"}`` dict per
    input that produced no face. A bad image never stops the shard.
    """
    images, faces, rejected = [], [], []
    metas: dict[str, dict] = {}
    jobs = max(1, min(jobs, len(keys)))
    stream = align_stream(_read_items(source, keys, metas), aligner, jobs)
    for done, (key, result) in enumerate(stream, 1):
        if "reason" in result:
            rejected.append({"key": key, "reason": result["reason"], "detail": result["detail"]})
        for i, (image, meta) in enumerate(result.get("faces", ())):
            images.append(image)
            faces.append({"key": key, "face": i, "source": source.name,
                          "width": result["width"], "height": result["height"],
                          **meta, "meta": metas.get(key, {})})
        metas.pop(key, None)
        if progress is not None:
            progress(done, len(keys))
    size = aligner.size
    stack = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return stack, faces, rejected


def write_shard(folder, keys: list[str], images: np.ndarray, faces: list[dict],
                rejected: list[dict]) -> dict:
    """Write an aligned shard into ``folder`` (normally an atomic temporary)
    and return its summary. Checks that no input was lost."""
    folder = Path(folder)
    accounted = {f["key"] for f in faces} | {r["key"] for r in rejected}
    missing = set(keys) - accounted
    if missing:
        raise RuntimeError(f"{len(missing)} inputs neither aligned nor rejected, e.g. {sorted(missing)[:3]}")
    np.savez(folder / "faces.npz", images=images)
    write_jsonl(folder / "faces.jsonl", faces)
    write_jsonl(folder / "rejected.jsonl", rejected)
    summary = {"inputs": len(keys), "faces": len(faces),
               "images_with_faces": len({f["key"] for f in faces}),
               "rejected": len(rejected),
               "rejected_by_reason": dict(Counter(r["reason"] for r in rejected)),
               "first_key": keys[0] if keys else None, "last_key": keys[-1] if keys else None,
               # what the records stage needs to choose a split rule without reading faces.jsonl
               "identities": sorted({f["meta"]["identity"] for f in faces
                                     if f.get("meta", {}).get("identity") is not None}),
               "partitions": dict(Counter(f["meta"]["partition"] for f in faces
                                          if f.get("meta", {}).get("partition") is not None))}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def read_shard(folder) -> tuple[np.ndarray, list[dict]]:
    """The ``(images, faces)`` of an aligned shard folder."""
    folder = Path(folder)
    with np.load(folder / "faces.npz") as npz:
        images = npz["images"]
    return images, read_jsonl(folder / "faces.jsonl")


# --- shard planning ----------------------------------------------------------

def keys_digest(keys: list[str]) -> str:
    """A 12-hex-digit hash of a key list (order matters): names a key set."""
    return digest("\n".join(keys), 12)


def shard_name(index: int, keys: list[str]) -> str:
    """``shard-{index:05d}-{8 hex digits of the keys' hash}``."""
    return f"shard-{index:05d}-{keys_digest(keys)[:8]}"


def parse_shard_name(name: str) -> tuple[int, str]:
    """``(index, digest)`` of a :func:`shard_name`."""
    _, index, digest = name.split("-")
    return int(index), digest


def plan_shards(keys: list[str], committed: list[tuple[str, list[str]]],
                shard_size: int) -> list[tuple[str, list[str]]]:
    """Extend the ``committed`` shard plan to cover exactly ``keys``.

    ``committed`` is the previous plan as ``(name, keys)`` pairs. Its shards
    whose keys all still exist are kept as they are; the keys no kept shard
    covers (new keys, and those of shards that lost a key) are chunked, in
    key order, into new shards numbered after the last committed one. So a
    re-plan with more keys only adds shards, and planning the same keys
    twice gives the same plan.
    """
    present = set(keys)
    kept = [(name, ks) for name, ks in committed if all(k in present for k in ks)]
    covered = {k for _, ks in kept for k in ks}
    fresh = [k for k in keys if k not in covered]
    start = max((parse_shard_name(name)[0] for name, _ in committed), default=-1) + 1
    return kept + [(shard_name(start + i, chunk), chunk)
                   for i, chunk in enumerate(shard_keys(fresh, shard_size))]


def write_keys(path, keys: list[str]) -> None:
    """Write a shard's key list, one key per line, atomically."""
    with atomic_file(path, "w") as fh:
        fh.write("".join(f"{k}\n" for k in keys))


def read_keys(path) -> list[str]:
    """The key list written by :func:`write_keys`."""
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]
