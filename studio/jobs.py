"""The studio's heavy work (completion, projection) as bounded, cancellable jobs.

A :class:`JobQueue` admits at most ``max_jobs`` jobs queued or running at once, and at
most ``per_client`` of them from one client; beyond that :meth:`JobQueue.submit` raises
:class:`QueueFull` (HTTP 429 with Retry-After) at once. Admitted jobs run on a pool of
``workers`` threads (never on the event loop; the generator's batcher, which serves the
edits, has its own thread). A job stops between steps of its search (its ``on_step``
callback raises :class:`model.apps.inversion.Cancelled`) when

* it is cancelled: ``DELETE /api/jobs/{id}``, or the client waiting on it disconnected;
* its deadline (``deadline_s`` from submission, queue time included) passed: it fails,
  and a waiting request gets 504;
* nobody waits on it and nobody asked about it for ``abandon_s`` (a page that polls
  ``GET /api/jobs/{id}`` and was closed).

Job states: ``queued``, ``running``, ``done``, ``cancelled``, ``failed``. A job whose cancel
was asked is still ``running`` (with ``cancelling``) until its thread has stopped: the
running count is the work actually in progress, and it is what the bound counts.
"""
from __future__ import annotations

import asyncio
import math
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from model.apps.inversion import Cancelled

STATES = ("queued", "running", "done", "cancelled", "failed")
ACTIVE = ("queued", "running")
#: Seconds a job nobody waits on may go without a ``GET /api/jobs/{id}`` before it is cancelled.
ABANDON_S = 15.0
#: Default deadline of a job, seconds from its submission.
DEADLINE_S = 300.0
#: Finished jobs kept for ``GET /api/jobs/{id}`` (the oldest are forgotten first).
KEEP_FINISHED = 64


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(n_cores: int | None = None) -> int:
    """Jobs run at once: one per 4 cores, at least one (a search already uses every core's
    TensorFlow threads; two at once only share them, and the edits with them)."""
    return max(1, (n_cores or cores()) // 4)


def default_max_jobs(n_cores: int | None = None) -> int:
    """Jobs queued or running at once: the core count, at least 2 (one running, one waiting)."""
    return max(2, n_cores or cores())


def default_per_client(max_jobs: int) -> int:
    """A client's share of the queue: half of it, at least one job."""
    return max(1, max_jobs // 2)


class QueueFull(Exception):
    """No room for another job (HTTP 429); ``retry_after`` seconds is a guess of when there is."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(Cancelled):
    """A job still unfinished at its deadline."""


class Job:
    """One piece of heavy work: ``work(on_step)`` returns the JSON result; ``on_step(fraction)``
    records progress and raises :class:`Cancelled` when the job should stop."""

    def __init__(self, kind: str, client: str, work: Callable[[Callable[[float], None]], dict],
                 deadline_s: float, abandon_s: float, watched: bool, loop: asyncio.AbstractEventLoop | None):
        self.id = secrets.token_urlsafe(12)
        self.kind, self.client, self.work = kind, client, work
        self.deadline_s, self.abandon_s, self.watched = deadline_s, abandon_s, watched
        self.created = self.seen = time.monotonic()
        self.started: float | None = None
        self.finished: float | None = None
        self.state = "queued"
        self.progress = 0.0
        self.result: dict | None = None
        self.error: str | None = None
        self.status: int | None = None    # the HTTP status of a failure
        self.reason: str | None = None    # why a cancel was asked
        self.stop = threading.Event()     # set: stop at the next step
        self._loop = loop
        self._done = asyncio.Event() if loop is not None else None

    # -- called from the worker thread ---------------------------------------------------------
    def on_step(self, fraction: float) -> None:
        """The search's callback between steps: progress in, :class:`Cancelled` out."""
        self.progress = max(self.progress, min(float(fraction), 1.0))
        now = time.monotonic()
        if not self.stop.is_set():
            if now - self.created > self.deadline_s:
                self.cancel("deadline")
            elif not self.watched and now - self.seen > self.abandon_s:
                self.cancel(f"abandoned: nobody asked about it for {self.abandon_s:g} s")
        if self.stop.is_set():
            raise DeadlineExceeded(self.reason) if self.reason == "deadline" else Cancelled(self.reason)

    # -- called from anywhere ------------------------------------------------------------------
    def cancel(self, reason: str) -> None:
        """Ask the job to stop (the first reason given is kept)."""
        if self.reason is None:
            self.reason = reason
        self.stop.set()

    @property
    def over(self) -> bool:
        return self.state not in ACTIVE

    def deadline_error(self) -> str:
        return (f"{self.kind} did not finish within its {self.deadline_s:g} s deadline "
                f"(facegan-studio --job-deadline); it was stopped")

    def view(self, position: int | None = None) -> dict:
        """What ``GET /api/jobs/{id}`` answers."""
        now = time.monotonic()
        out = {"id": self.id, "kind": self.kind, "state": self.state, "progress": round(self.progress, 3),
               "seconds": round((self.finished or now) - self.created, 2), "deadline_s": self.deadline_s}
        if self.state == "queued" and position is not None:
            out["position"] = position
        if self.stop.is_set() and not self.over:
            out["cancelling"] = True
        if self.reason is not None:
            out["reason"] = self.reason
        if self.state == "done":
            out["result"] = self.result
        if self.state == "failed":
            out["error"], out["status"] = self.error, self.status
        return out

    def _signal(self) -> None:
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._done.set)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    async def wait(self, timeout: float) -> bool:
        """True once the job is over; False after ``timeout`` seconds (call from its loop)."""
        if self.over:
            return True
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.over


class JobQueue:
    """At most ``max_jobs`` jobs queued or running (``per_client`` per client), run by
    ``workers`` threads, each stopped at ``deadline_s`` after its submission."""

    def __init__(self, max_jobs: int | None = None, *, workers: int | None = None, per_client: int | None = None,
                 deadline_s: float = DEADLINE_S, abandon_s: float = ABANDON_S):
        self.max_jobs = max_jobs if max_jobs is not None else default_max_jobs()
        self.workers = workers if workers is not None else default_workers()
        self.per_client = per_client if per_client is not None else default_per_client(self.max_jobs)
        for name in ("max_jobs", "workers", "per_client"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {deadline_s}")
        self.deadline_s, self.abandon_s = float(deadline_s), float(abandon_s)
        self.jobs: dict[str, Job] = {}
        self.running = 0                  # jobs whose work is executing on a worker thread now
        self.mean_seconds = 10.0          # running mean of finished jobs' run time (Retry-After)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="studio-job")
        self._closed = False

    # -- admission ---------------------------------------------------------------------------
    def submit(self, kind: str, client: str, work: Callable[[Callable[[float], None]], dict], *,
               watched: bool = True) -> Job:
        """Admit a job or raise :class:`QueueFull`. ``watched``: a request waits on it (and
        cancels it when its client leaves); otherwise it is polled and abandoned when not."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if self._closed:
                raise QueueFull("the studio is shutting down", 5)
            self._forget()
            active = [j for j in self.jobs.values() if not j.over]
            if len(active) >= self.max_jobs:
                raise QueueFull(f"the job queue is full ({self.max_jobs} jobs queued or running, "
                                f"facegan-studio --max-jobs); try again in a moment", self._retry_after(active))
            mine = sum(j.client == client for j in active)
            if mine >= self.per_client:
                raise QueueFull(f"this client already has {mine} job(s) queued or running, its share of the "
                                f"queue (at most {self.per_client} per client); wait for them or cancel one",
                                self._retry_after([j for j in active if j.client == client]))
            job = Job(kind, client, work, self.deadline_s, self.abandon_s, watched, loop)
            self.jobs[job.id] = job
        self._pool.submit(self._run, job)
        return job

    def _retry_after(self, jobs: list[Job]) -> int:
        """Seconds until the first of ``jobs`` is likely over (from its progress so far)."""
        now, guesses = time.monotonic(), []
        for job in jobs:
            if job.state == "running" and job.progress > 0.05:
                elapsed = now - job.started
                guesses.append(elapsed / job.progress - elapsed)
            else:
                guesses.append(self.mean_seconds)
        return int(min(max(math.ceil(min(guesses, default=self.mean_seconds)), 1), 3600))

    def _forget(self) -> None:
        over = [j for j in self.jobs.values() if j.over]
        for job in sorted(over, key=lambda j: j.finished)[:max(0, len(over) - KEEP_FINISHED)]:
            del self.jobs[job.id]

    # -- running -------------------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        with self._lock:
            if job.over:  # cancelled while it waited
                return
            job.state, job.started = "running", time.monotonic()
            self.running += 1
        state, result, error, status = "done", None, None, None
        try:
            job.on_step(0.0)  # a deadline or a cancel that came while it waited
            result = job.work(job.on_step)
        except DeadlineExceeded:
            state, error, status = "failed", job.deadline_error(), 504
        except Cancelled:
            state = "cancelled"
        except Exception as exc:  # the job's own failure: reported, the worker lives on
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            state, error, status = "failed", f"{job.kind} failed: {detail}", 500
        with self._lock:
            self.running -= 1
            self._finish(job, state, result, error, status)
            if state == "done":
                self.mean_seconds = 0.7 * self.mean_seconds + 0.3 * (job.finished - job.started)

    def _finish(self, job: Job, state: str, result=None, error=None, status=None) -> None:
        job.state, job.result, job.error, job.status = state, result, error, status
        job.finished = time.monotonic()
        if state == "done":
            job.progress = 1.0
        job._signal()

    # -- asking and cancelling -------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is not None:
            job.seen = time.monotonic()
        return job

    def position(self, job: Job) -> int | None:
        """0 for the next queued job to run, None when not queued."""
        if job.state != "queued":
            return None
        queued = sorted((j for j in self.jobs.values() if j.state == "queued"), key=lambda j: j.created)
        return next(i for i, j in enumerate(queued) if j is job)

    def cancel(self, job: Job, reason: str) -> None:
        """Stop ``job``: at once when it waits in the queue, at its next step when it runs."""
        job.cancel(reason)
        with self._lock:
            if job.state == "queued":
                self._finish(job, "failed" if reason == "deadline" else "cancelled",
                             error=job.deadline_error() if reason == "deadline" else None,
                             status=504 if reason == "deadline" else None)

    def expire(self) -> None:
        """Fail queued jobs past their deadline (running ones stop at their next step)."""
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.state == "queued" and now - job.created > job.deadline_s:
                self.cancel(job, "deadline")

    def stats(self, client: str | None = None) -> dict:
        """``GET /api/jobs``: the limits, the counts, and ``client``'s jobs."""
        self.expire()
        jobs = list(self.jobs.values())
        return {"max_jobs": self.max_jobs, "per_client": self.per_client, "workers": self.workers,
                "deadline_s": self.deadline_s, "running": self.running,
                "queued": sum(j.state == "queued" for j in jobs),
                "jobs": [j.view(self.position(j)) for j in jobs if client is not None and j.client == client]}

    def close(self) -> None:
        """Cancel every job and let the worker threads end (they stop at their next step)."""
        with self._lock:
            self._closed = True
            jobs = list(self.jobs.values())
        for job in jobs:
            if not job.over:
                self.cancel(job, "the studio is shutting down")
        self._pool.shutdown(wait=False, cancel_futures=True)
