"""A micro-batcher: requests that arrive together share one generator call.

The event loop never runs the generator. Each request puts its rows on a queue
and awaits a future; one worker thread takes the first waiting request, drains
every other request already queued (up to ``max_rows`` rows; optionally waiting
``wait_s`` for stragglers), runs ``forward`` once on all their rows, and hands each
request its slice, post-processed (PNG encoding) in the same thread. One client
alone gets batch 1 with no added wait; under load, the requests that queued while
a batch ran form the next batch.

How many rows one call takes is the forward's to say (``forward.rows_per_call``): a request
that arrives while a call runs waits for that call and then for its own, so a call much
longer than the time the engine needs to keep its cores busy only adds to the tail latency
(docs/benchmarks.md, studio speed).
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Callable

import numpy as np

#: Rows per call for a forward that does not say (``rows_per_call``).
MAX_ROWS = 32


class MicroBatcher:
    """``await submit(inputs, post)``: ``inputs`` ``{name: (k, size) float32}``;
    ``forward({name: (n, size)}) -> (n, ...)`` runs on the concatenated rows;
    ``post(outputs (k, ...)) -> result`` runs in the worker thread. ``max_rows``: most rows
    in one call (None: ``forward.rows_per_call``, else :data:`MAX_ROWS`); a request with
    more rows than that still runs, alone."""

    def __init__(self, forward: Callable[[dict], np.ndarray], max_rows: int | None = None, wait_s: float = 0.0,
                 name: str = "generator"):
        self.forward, self.wait_s = forward, wait_s
        self.max_rows = max_rows or getattr(forward, "rows_per_call", None) or MAX_ROWS
        self.batches = 0  # forward calls made
        self.rows = 0     # rows generated
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    async def submit(self, inputs: dict[str, np.ndarray], post: Callable[[np.ndarray], Any] = lambda x: x):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((inputs, post, loop, future))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _collect(self, first) -> list:
        batch, rows = [first], len(next(iter(first[0].values())))
        deadline = time.monotonic() + self.wait_s
        while rows < self.max_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:  # closing: finish this batch, then stop
                self._queue.put(None)
                break
            batch.append(item)
            rows += len(next(iter(item[0].values())))
        return batch

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._collect(first)
            try:
                names = batch[0][0].keys()
                stacked = {k: np.concatenate([item[0][k] for item in batch]) for k in names}
                out = self.forward(stacked)
                self.batches += 1
                self.rows += len(out)
            except Exception as exc:  # every waiting request gets the error
                for _, _, loop, future in batch:
                    loop.call_soon_threadsafe(_set, future, None, exc)
                continue
            start = 0
            for inputs, post, loop, future in batch:
                k = len(next(iter(inputs.values())))
                try:
                    result, error = post(out[start:start + k]), None
                except Exception as exc:
                    result, error = None, exc
                start += k
                loop.call_soon_threadsafe(_set, future, result, error)


def _set(future: asyncio.Future, result, error) -> None:
    if future.cancelled():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
