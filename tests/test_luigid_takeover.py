"""deploy/luigid.cfg's promise: the shard of a worker killed in the middle of it is run by
another worker within minutes (the scheduler's prune marks it FAILED, the next one PENDING)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from luigid_helpers import ROOT, running_luigid, scheduler_config

pytestmark = pytest.mark.slow


def _tasks(port: int, status: str) -> dict:
    query = urllib.parse.quote(json.dumps({"status": status}))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={query}", timeout=10) as r:
        return json.load(r)["response"]


def test_a_killed_workers_shard_is_taken_over(tmp_path):
    # The repository's settings but a 5 s disconnect delay: the test waits one prune less.
    config = scheduler_config(tmp_path, worker_disconnect_delay=5)
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    common = ["--paths-raw", str(tmp_path / "raw"), "--paths-processed", str(tmp_path / "processed"),
              "--Sample-n", "128", "--DetectAlignFaces-shard-size", "128", "--DetectAlignFaces-jobs", "1"]
    luigi = [sys.executable, "-m", "luigi", "--module", "tasks"]
    raw = subprocess.run([*luigi, "Sample", "--local-scheduler", *common], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert raw.returncode == 0, raw.stderr[-3000:]

    with running_luigid(tmp_path, config) as port:
        workers = [subprocess.Popen([*luigi, "DetectAlignFaces", "--scheduler-host", "127.0.0.1", "--scheduler-port",
                                     str(port), "--workers", "1", "--worker-keep-alive", "--no-lock", *common],
                                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
                   for _ in range(2)]
        try:
            # The one shard runs in one worker, and both have scheduled it (both are its stakeholders).
            deadline = time.monotonic() + 120
            while True:
                running = {k: v for k, v in _tasks(port, "RUNNING").items() if k.startswith("AlignShard_")}
                if running and len(next(iter(running.values()))["workers"]) == 2:
                    break
                assert time.monotonic() < deadline and not any(w.poll() is not None for w in workers), \
                    "the shard never ran with both workers waiting for it"
                time.sleep(0.1)
            ((shard, info),) = running.items()
            pid = int(re.search(r"pid=(\d+)", info["worker_running"]).group(1))
            (killed,) = [w for w in workers if w.pid == pid]
            (survivor,) = [w for w in workers if w.pid != pid]
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait()
            killed_at = time.monotonic()

            log = survivor.communicate(timeout=400)[1]
            took = time.monotonic() - killed_at
        finally:
            for w in workers:
                if w.poll() is None:
                    os.killpg(w.pid, signal.SIGKILL)
                    w.wait()
        done = _tasks(port, "DONE")

    # The survivor ran the shard and the root; it exits 10 (already_running: the shard was the
    # other worker's when it scheduled), with nothing failed.
    assert survivor.returncode in (0, 10), log[-3000:]
    assert re.search(r"\) done +AlignShard\(", log) and re.search(r"\) done +DetectAlignFaces\(", log), log[-3000:]
    assert shard in done and any(t.startswith("DetectAlignFaces_") for t in done)
    # Within two prunes of a minute after the disconnect delay, plus the shard's own run.
    assert took < 60 + 2 * 60 + 120, took
    summary = json.loads(next((tmp_path / "processed" / "aligned").rglob("summary-*.json")).read_text())
    assert summary["inputs"] == 128 and summary["images_with_faces"] + summary["rejected"] == 128
