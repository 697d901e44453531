"""The alignment engine: photos in, aligned faces out, in one process or a pool of them.

:func:`align_bytes` aligns one encoded photo and never raises for bad input;
:func:`align_stream` runs it over ``(key, bytes)`` pairs in ``jobs`` processes with
bounded memory; :func:`align_keys` aligns a list of keys of a source into the arrays
and logs a shard (pipeline/align/shards.py) stores. Used by DetectAlignFaces, the
``facegan-align`` folder CLI and photo completion.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator

import numpy as np

from pipeline.align.aligner import FaceAligner, NoFace
from pipeline.imaging import DecodeError, Photo
from pipeline.sources.base import Source


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
