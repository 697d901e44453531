"""The studio's heavy work as jobs (studio/jobs.py, studio/routes/heavy.py), against real
uvicorn servers on 127.0.0.1 serving a real Keras generator (tests/studio_runs.py).

The searches are made long by their settings (``create_app(fit={"steps": ...})``: the real
projection and completion, many steps), not by mocks, so that a job still running is
real TensorFlow work, and a job that stopped stopped because it was told to.
"""
from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time

import numpy as np
import pytest
from studio_runs import make_run, serving

#: A search that runs until it is stopped (minutes on any CPU).
ENDLESS = {"steps": 100_000, "candidates": 2, "restarts": 1}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from studio.models import ModelRegistry

    root = tmp_path_factory.mktemp("models")
    registry = ModelRegistry(root, make_run(root / "celeba" / "dcgan-a"))
    registry.get(None)
    yield registry
    registry.close()


@contextlib.contextmanager
def serve(registry, fit=None, **queue):
    """A studio app with its own job queue (``queue``: JobQueue's arguments) on a free port."""
    from studio.app import create_app
    from studio.jobs import JobQueue

    jobs = JobQueue(**queue)
    app = create_app(registry, jobs, fit)
    with serving(app) as (url, port, http):
        yield Studio(url, port, http, app, jobs)
    # the lifespan's close cancelled every job: no search outlives its server
    assert wait_until(lambda: jobs.running == 0, 10), "a job kept running after the server stopped"


class Studio:
    def __init__(self, url, port, http, app, jobs):
        self.url, self.port, self.http, self.app, self.jobs = url, port, http, app, jobs

    def post(self, path, body, client=None, **kwargs):
        headers = {"X-Client-Id": client} if client else {}
        return self.http.post(self.url + path, json=body, headers=headers, timeout=120, **kwargs)

    def get(self, path, client=None):
        return self.http.get(self.url + path, headers={"X-Client-Id": client} if client else {}, timeout=30)

    def delete(self, path):
        return self.http.delete(self.url + path, timeout=30)

    def job(self, job_id):
        r = self.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def running(self) -> int:
        return self.get("/api/jobs").json()["running"]


def wait_until(predicate, timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def face_body(seed: int = 0) -> dict:
    from studio import features

    face = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return {"image": features.data_url(face)}


def complete_body(seed: int = 0) -> dict:
    from studio import features

    mask = np.zeros((64, 64, 3), np.uint8)
    mask[32:] = 255
    return {**face_body(seed), "mask": features.data_url(mask)}


def start_job(studio, client, path="/api/project", body=None) -> str:
    r = studio.post(path + "?wait=false", body or face_body(), client)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and r.headers["Location"] == f"/api/jobs/{job['id']}"
    return job["id"]


def wait_searching(studio, job_id, timeout=120) -> dict:
    """Until the job's search has made steps (its graph is traced and it is iterating)."""
    assert wait_until(lambda: studio.job(job_id)["progress"] > 0, timeout, 0.1), studio.job(job_id)
    return studio.job(job_id)


# --- sizes and flags -----------------------------------------------------------------------

def test_queue_sizes_follow_the_core_count(monkeypatch):
    import os

    from studio import jobs

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    q = jobs.JobQueue()
    assert (q.max_jobs, q.workers, q.per_client, q.deadline_s) == (2, 1, 1, jobs.DEADLINE_S)
    q.close()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    q = jobs.JobQueue()
    assert (q.max_jobs, q.workers, q.per_client) == (16, 4, 8)
    q.close()
    for bad in ({"max_jobs": 0}, {"per_client": 0}, {"workers": 0}, {"deadline_s": 0}):
        with pytest.raises(ValueError):
            jobs.JobQueue(**bad)


def test_cli_job_flags(capsys):
    from studio.cli import parse_args

    args = parse_args(["--max-jobs", "6", "--max-jobs-per-client", "2", "--job-deadline", "45"])
    assert (args.max_jobs, args.max_jobs_per_client, args.job_deadline) == (6, 2, 45.0)
    defaults = parse_args([])
    assert (defaults.max_jobs, defaults.max_jobs_per_client, defaults.job_deadline) == (None, None, 300.0)
    for bad, message in ((["--max-jobs", "0"], "--max-jobs: must be a whole number >= 1"),
                         (["--max-jobs-per-client", "x"], "must be a whole number >= 1"),
                         (["--job-deadline", "0"], "--job-deadline must be > 0 seconds")):
        with pytest.raises(SystemExit) as exc:
            parse_args(bad)
        assert exc.value.code == 2 and message in capsys.readouterr().err


# --- the search stops between steps ---------------------------------------------------------

def test_a_set_event_stops_the_search_between_steps(registry):
    """model.apps.inversion: the segmented search is the one-call search, bit for bit, and a
    cancel event stops it within a step or two."""
    from model.apps.inversion import Cancelled, stop_when
    from model.apps.project import project_faces
    from studio.routes.heavy import keras_generator

    model = registry.get(None)
    face = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    settings = {"steps": 40, "candidates": 4, "restarts": 2}
    plain = project_faces(keras_generator(model), model.card, face, **settings)
    seen = []
    stepped = project_faces(keras_generator(model), model.card, face, on_step=seen.append, **settings)
    assert np.array_equal(plain["inputs"]["z"], stepped["inputs"]["z"])
    assert np.array_equal(plain["loss"], stepped["loss"])
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 2
    event, report = threading.Event(), []
    threading.Timer(1.0, event.set).start()
    began = time.monotonic()
    with pytest.raises(Cancelled):
        project_faces(keras_generator(model), model.card, face, on_step=stop_when(event, report.append),
                      **ENDLESS)
    assert time.monotonic() - began < 30 and report[-1] < 0.01


# --- jobs over HTTP ---------------------------------------------------------------------------

def test_an_asynchronous_job_shows_progress_then_its_result(registry):
    with serve(registry, fit={"steps": 300, "candidates": 4, "restarts": 1}, max_jobs=2) as studio:
        job_id = start_job(studio, "poller")
        seen = []
        assert wait_until(lambda: seen.append(studio.job(job_id)) or seen[-1]["state"] == "done", 120, 0.05)
        progress = [j["progress"] for j in seen]
        assert progress == sorted(progress) and any(0 < p < 1 for p in progress), progress
        assert {j["state"] for j in seen} <= {"queued", "running", "done"}
        done = seen[-1]
        assert done["progress"] == 1.0 and set(done["result"]) == {"z", "c", "image", "psnr", "ssim"}
        assert len(done["result"]["z"]) == 100
        listing = studio.get("/api/jobs", "poller").json()
        assert listing["running"] == 0 and [j["id"] for j in listing["jobs"]] == [job_id]
        assert studio.get("/api/jobs", "someone-else").json()["jobs"] == []
        # the synchronous form answers the same shape, and names its job
        r = studio.post("/api/project", face_body(), "poller")
        assert r.status_code == 200 and set(r.json()) == set(done["result"]) and studio.job(r.headers["X-Job-Id"])
        r = studio.post("/api/complete?wait=false", complete_body(), "poller")
        assert r.status_code == 202
        assert wait_until(lambda: studio.job(r.json()["id"])["state"] == "done", 120, 0.1)
        result = studio.job(r.json()["id"])["result"]
        assert set(result) == {"method", "z", "c", "completed", "blended", "flags", "perceptual"}
        assert result["method"] == "search"


def test_a_full_queue_answers_429_with_retry_after_at_once(registry):
    with serve(registry, fit=ENDLESS, max_jobs=2, per_client=2, workers=1) as studio:
        first, second = start_job(studio, "a"), start_job(studio, "a")
        wait_searching(studio, first)
        assert studio.job(second)["state"] == "queued" and studio.job(second)["position"] == 0
        times = []
        for _ in range(7):
            began = time.perf_counter()
            r = studio.post("/api/project", face_body(), "b")
            times.append(time.perf_counter() - began)
            assert r.status_code == 429, r.text
            assert r.headers["content-type"] == "application/json"
            assert "job queue is full (2 jobs queued or running" in r.json()["error"]
            assert int(r.headers["Retry-After"]) >= 1
        print(f"429 answered in {1000 * statistics.median(times):.1f} ms (median of {len(times)}, "
              f"max {1000 * max(times):.1f} ms) with a search running")
        assert statistics.median(times) < 0.05, times  # answered, not queued behind the search
        assert studio.post("/api/complete?wait=false", complete_body(), "c").status_code == 429
        # a queued job is cancelled at once; the running one at its next step
        assert studio.delete(f"/api/jobs/{second}").json()["state"] == "cancelled"
        assert studio.delete(f"/api/jobs/{first}").status_code == 200
        assert wait_until(lambda: studio.running() == 0, 2.0)
        assert studio.job(first)["state"] == "cancelled" and studio.job(first)["progress"] < 1
        # room again
        third = start_job(studio, "b")
        studio.delete(f"/api/jobs/{third}")


def test_a_client_cannot_hold_more_than_its_share(registry):
    with serve(registry, fit=ENDLESS, max_jobs=4, per_client=1, workers=1) as studio:
        mine = start_job(studio, "greedy")
        r = studio.post("/api/project?wait=false", face_body(), "greedy")
        assert r.status_code == 429 and "at most 1 per client" in r.json()["error"]
        assert int(r.headers["Retry-After"]) >= 1
        r = studio.post("/api/complete", complete_body(), "greedy")  # waiting or not, the same share
        assert r.status_code == 429
        other = start_job(studio, "polite")  # another client still gets in
        assert studio.job(other)["state"] == "queued"
        # without an X-Client-Id a client is its address: one share for all of them
        anonymous = start_job(studio, None)
        r = studio.post("/api/project?wait=false", face_body())
        assert r.status_code == 429 and "at most 1 per client" in r.json()["error"]
        for job_id in (mine, other, anonymous):
            studio.delete(f"/api/jobs/{job_id}")
        # (the running one may still be tracing its graph, which no cancel interrupts)
        assert wait_until(lambda: studio.running() == 0, 60, 0.1)


def raw_request(port: int, path: str, body: dict, client: str) -> socket.socket:
    """An HTTP request sent on a socket the test can close mid-response."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"X-Client-Id: {client}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


@pytest.mark.parametrize("path", ["/api/project", "/api/complete"])
def test_a_client_that_leaves_has_its_job_cancelled(registry, path):
    with serve(registry, fit=ENDLESS, max_jobs=2) as studio:
        sock = raw_request(studio.port, path, complete_body(), "leaver")
        assert wait_until(lambda: studio.get("/api/jobs", "leaver").json()["jobs"], 30)
        job_id = studio.get("/api/jobs", "leaver").json()["jobs"][0]["id"]
        wait_searching(studio, job_id)
        assert studio.running() == 1
        sock.close()
        left = time.monotonic()
        assert wait_until(lambda: studio.running() == 0, 1.0), studio.job(job_id)
        stopped = time.monotonic() - left
        job = studio.job(job_id)
        assert job["state"] == "cancelled" and job["reason"] == "the client disconnected", job
        print(f"{path}: 0 jobs running {stopped:.2f} s after the client left")


def test_a_job_past_its_deadline_is_a_json_504_and_stops(registry):
    with serve(registry, fit=ENDLESS, max_jobs=2, deadline_s=3.0) as studio:
        began = time.monotonic()
        r = studio.post("/api/project", face_body(), "patient")
        took = time.monotonic() - began
        assert r.status_code == 504 and r.headers["content-type"] == "application/json"
        assert r.json()["error"] == ("projection did not finish within its 3 s deadline "
                                     "(facegan-studio --job-deadline); it was stopped")
        assert 3.0 <= took < 4.5, took
        assert wait_until(lambda: studio.running() == 0, 2.0)
        job = studio.job(r.headers["X-Job-Id"])
        assert job["state"] == "failed" and job["status"] == 504 and "deadline" in job["error"]
        # a job nobody waits on meets the same deadline
        job_id = start_job(studio, "patient")
        assert wait_until(lambda: studio.job(job_id)["state"] == "failed", 6.0)
        assert studio.job(job_id)["status"] == 504 and studio.running() == 0


def test_cancel_stops_a_running_job_and_answers_its_waiting_request(registry):
    with serve(registry, fit=ENDLESS, max_jobs=2) as studio:
        job_id = start_job(studio, "canceller")
        wait_searching(studio, job_id)
        r = studio.delete(f"/api/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["id"] == job_id
        assert r.json()["state"] == "cancelled" or r.json()["cancelling"] is True
        asked = time.monotonic()
        assert wait_until(lambda: studio.running() == 0, 1.0)
        print(f"0 jobs running {time.monotonic() - asked:.2f} s after DELETE")
        job = studio.job(job_id)
        assert job["state"] == "cancelled" and job["reason"] == "cancelled by its client" and job["progress"] < 1
        assert studio.delete(f"/api/jobs/{job_id}").json()["state"] == "cancelled"  # again: no change
        r = studio.delete("/api/jobs/no-such-job")
        assert r.status_code == 404 and "unknown job id 'no-such-job'" in r.json()["error"]
        assert studio.get("/api/jobs/no-such-job").status_code == 404

        # a request waiting on a job cancelled from elsewhere (another tab) is told so
        answer = {}
        waiter = threading.Thread(target=lambda: answer.update(r=studio.post("/api/project", face_body(), "tab")))
        waiter.start()
        assert wait_until(lambda: studio.get("/api/jobs", "tab").json()["jobs"], 30)
        other = studio.get("/api/jobs", "tab").json()["jobs"][0]["id"]
        wait_searching(studio, other)
        studio.delete(f"/api/jobs/{other}")
        waiter.join(timeout=10)
        assert answer["r"].status_code == 409
        assert answer["r"].json()["error"] == "projection was cancelled (cancelled by its client)"


def test_a_job_nobody_asks_about_is_abandoned(registry):
    with serve(registry, fit=ENDLESS, max_jobs=2, abandon_s=1.0) as studio:
        start_job(studio, "gone")
        # the listing does not count as asking about the job; GET /api/jobs/{id} would
        assert wait_until(lambda: studio.get("/api/jobs", "gone").json()["jobs"][0]["state"] == "cancelled", 60, 0.2)
        job = studio.get("/api/jobs", "gone").json()["jobs"][0]
        assert job["reason"].startswith("abandoned") and studio.running() == 0


def test_edits_are_answered_while_heavy_jobs_run(registry):
    """Heavy work runs on its own threads: the event loop and the batcher keep serving edits."""
    def edit_times(studio, n=15):
        times = []
        for i in range(n):
            z = np.random.default_rng(i).uniform(-1, 1, 100).tolist()
            began = time.perf_counter()
            r = studio.http.post(studio.url + "/api/generate", json={"z": z}, timeout=30)
            times.append(time.perf_counter() - began)
            assert r.status_code == 200
        return times

    with serve(registry, fit=ENDLESS, max_jobs=2, per_client=2) as studio:
        idle = edit_times(studio)
        job_id = start_job(studio, "busy")
        start_job(studio, "busy")
        wait_searching(studio, job_id)
        busy = edit_times(studio)
        assert studio.job(job_id)["state"] == "running"
        print(f"edit latency p50 idle {1000 * statistics.median(idle):.1f} ms, "
              f"with a search running {1000 * statistics.median(busy):.1f} ms (max {1000 * max(busy):.0f} ms)")
        assert max(busy) < 1.0, busy  # a search on the event loop would hold every edit until it ends


# --- the page ---------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM),
                    reason=f"{CHROMIUM} missing: `make test` installs Debian's chromium")
def test_the_page_shows_a_jobs_progress_and_cancels_it(registry, tmp_path):
    """Real Chromium: Complete shows the job's progress, Cancel stops the search on the server."""
    from playwright.sync_api import sync_playwright
    from test_studio_browser import ARGS, ARTIFACTS, wait_rendered

    from pipeline.sources.sample_photos import portrait

    photo = tmp_path / "astronaut.png"
    portrait("astronaut").save(photo)
    with serve(registry, fit=ENDLESS, max_jobs=2) as studio, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(studio.url + "/")
            wait_rendered(page)
            page.click("#tab-complete")
            page.set_input_files("#photo", str(photo))
            page.wait_for_selector("canvas.mask")
            page.get_by_role("button", name="Mask the lower half").click()
            page.wait_for_timeout(200)
            page.click("#complete")
            page.wait_for_function("() => { const p = document.querySelector('#complete-job progress');"
                                   " return p && p.value > 0; }", timeout=120_000)
            assert "%" in page.inner_text("#complete-job") and studio.running() == 1
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "job-progress.png"), full_page=True)
            page.click("#cancel-complete")
            page.wait_for_selector("#complete-job", state="detached")
            assert "The completion was cancelled." in page.inner_text("#notice")
            assert wait_until(lambda: studio.running() == 0, 1.0)
            assert page.locator("img[alt='Completed face']").count() == 0 and errors == []
        finally:
            browser.close()
