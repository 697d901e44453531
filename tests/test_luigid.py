"""Two workers against a central luigid on loopback: every shard runs exactly once."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from pipeline.records import iter_records, read_info

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "luigid exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "luigid did not start listening"
            time.sleep(0.1)


@pytest.fixture
def luigid(tmp_path):
    port = _free_port()
    exe = Path(sys.executable).with_name("luigid")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from luigi.cmdline import luigid; luigid()"]
    (tmp_path / "luigid-logs").mkdir()
    log = open(tmp_path / "luigid.log", "w")
    proc = subprocess.Popen([*cmd, "--port", str(port), "--address", "127.0.0.1",
                             "--state-path", str(tmp_path / "luigi-state.pickle"),
                             "--logdir", str(tmp_path / "luigid-logs")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(port, proc)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_two_workers_share_the_dag_and_run_each_shard_once(luigid, tmp_path):
    common = ["--paths-raw", str(tmp_path / "raw"), "--paths-processed", str(tmp_path / "processed"),
              "--Sample-n", "8", "--DetectAlignFaces-shard-size", "2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    luigi = [sys.executable, "-m", "luigi", "--module", "tasks"]
    # The raw data first, so both workers plan the shard tasks when they schedule.
    raw = subprocess.run([*luigi, "Sample", "--local-scheduler", *common], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert raw.returncode == 0, raw.stderr[-3000:]

    # --no-lock: Luigi lets one process per machine run a given command line.
    workers = [subprocess.Popen([*luigi, "BuildTFRecords", "--scheduler-host", "127.0.0.1",
                                 "--scheduler-port", str(luigid), "--workers", "1",
                                 "--worker-keep-alive", "--no-lock", *common],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
               for _ in range(2)]
    logs = [w.communicate(timeout=300)[1] for w in workers]
    codes = [w.returncode for w in workers]
    # The worker that ran the root task exits 0. The other leaves when nothing
    # it knows of is pending any more: 10 (already_running, [retcode]) or 25
    # (not_run: tasks the other worker ran meanwhile) -- but nothing failed.
    assert 0 in codes and set(codes) <= {0, 10, 25}, "\n".join(log[-3000:] for log in logs)
    assert not any("* 1 failed" in log or "failed:" in log for log in logs)

    # Each worker logs "running   Task(params)" whenever it starts a task.
    ran = Counter(m for log in logs for m in re.findall(r" running +(\w+\(.*\))$", log, re.M))
    shards = {task: n for task, n in ran.items() if task.startswith(("AlignShard(", "RecordShard("))}
    assert sorted(Counter(t.split("(")[0] for t in shards).items()) == [("AlignShard", 4), ("RecordShard", 4)]
    assert set(shards.values()) == {1}, shards  # every shard ran exactly once
    assert sum(1 for log in logs if " running   BuildTFRecords(" in log) == 1  # in one worker
    # Both workers worked: each process ran and finished at least one task (its own pid in
    # Luigi's "[pid N] Worker Worker(...) done   Task(...)" lines).
    for worker, log in zip(workers, logs):
        finished = re.findall(rf"\[pid {worker.pid}\] Worker Worker\(.*\) done +(\w+)\(", log)
        assert finished, f"worker {worker.pid} ran no task:\n{log[-3000:]}"

    # The scheduler agrees: all four alignment shards are DONE.
    query = urllib.parse.quote(json.dumps({"status": "DONE"}))
    with urllib.request.urlopen(f"http://127.0.0.1:{luigid}/api/task_list?data={query}", timeout=10) as r:
        done = json.load(r)["response"]
    assert sum(1 for task_id in done if task_id.startswith("AlignShard_")) == 4

    # And the output is complete: every record file whole, every aligned face in it.
    (version,) = (tmp_path / "processed" / "records" / "sample").glob("*/v-*")
    info = read_info(version)
    aligned = json.loads(next((tmp_path / "processed" / "aligned").rglob(
        f"summary-{info['keys_digest']}.json")).read_text())
    assert aligned["inputs"] == 8 and len(info["shards"]) == 4
    counts = [len(list(iter_records(version / f))) for s in info["splits"].values() for f in s["files"]]
    assert sum(counts) == aligned["faces"] > 0
