"""Workers against a central luigid on loopback: every shard runs exactly once, also when the
workers are two machines sharing only luigid and a bucket and one of them is killed (its shard
is taken over within deploy/luigid.cfg's promised window)."""
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
from collections import Counter
from pathlib import Path

import pytest
from luigid_helpers import running_luigid, scheduler_config

from pipeline.records import iter_records, read_info

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]


@pytest.fixture
def luigid(tmp_path):
    with running_luigid(tmp_path) as port:  # Luigi's default scheduler settings
        yield port


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


# -- many machines: workers that share only luigid and a bucket ---------------------------

SHARDS = 8
SAMPLE_FLAGS = ["--Sample-n", str(2 * SHARDS), "--DetectAlignFaces-shard-size", "2"]


def _started_and_done(log: str, pid: int) -> tuple[list[str], list[str]]:
    """The AlignShard tasks the worker ``pid`` started and finished (``shard=i`` each)."""
    started = re.findall(rf"\[pid {pid}\] Worker Worker\(.*\) running +AlignShard\(.*?shard=(\d+),", log)
    done = re.findall(rf"\[pid {pid}\] Worker Worker\(.*\) done +AlignShard\(.*?shard=(\d+),", log)
    return started, done


def test_workers_on_two_machines_share_luigid_and_a_bucket_and_take_over_a_killed_workers_shard(tmp_path):
    """Two workers with separate local caches (two machines) and one luigid and one bucket;
    one is SIGKILLed in the middle of a shard after finishing another. The scheduler hands
    the lost shard to the other worker within deploy/luigid.cfg's promised window (its
    settings, with disconnect and retry delays of 5 s instead of 60 and 30 so that the test
    does not idle): every shard completes
    exactly once, both did work, and the records equal a local run's."""
    import s3_server
    from components import require_module
    require_module("moto")
    require_module("s3fs")

    server, s3 = s3_server.start()
    try:
        bucket = s3.bucket("shared")
        env = s3_server.luigi_env()
        flags = lambda machine: s3_server.bucket_paths(s3, bucket, tmp_path / machine)  # noqa: E731
        raw = s3_server.luigi(["Sample", "--local-scheduler", *SAMPLE_FLAGS, *flags("machine-0")], env)
        assert raw.returncode == 0, raw.stderr[-3000:]
        local = s3_server.luigi(["BuildTFRecords", "--local-scheduler", *SAMPLE_FLAGS,
                                 "--paths-raw", str(tmp_path / "local" / "raw"),
                                 "--paths-processed", str(tmp_path / "local" / "processed")], env)
        assert local.returncode == 0, local.stderr[-3000:]

        config = scheduler_config(tmp_path, worker_disconnect_delay=5, retry_delay=5)
        with running_luigid(tmp_path, config) as port:
            logs = [tmp_path / f"worker-{m}.log" for m in "ab"]
            workers = [subprocess.Popen(
                [sys.executable, "-m", "luigi", "--module", "tasks", "BuildTFRecords", "--scheduler-host",
                 "127.0.0.1", "--scheduler-port", str(port), "--workers", "1", "--worker-keep-alive", "--no-lock",
                 *SAMPLE_FLAGS, *flags(f"machine-{m}")],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)
                for m, log in zip("ab", logs)]
            try:
                killed = None
                deadline = time.monotonic() + 300
                while killed is None:  # a: after one shard of its own, in the middle of the next
                    assert time.monotonic() < deadline, logs[0].read_text()[-3000:]
                    assert workers[0].poll() is None, logs[0].read_text()[-3000:]
                    started, done = _started_and_done(logs[0].read_text(), workers[0].pid)
                    if done and len(started) > len(done):
                        os.killpg(workers[0].pid, signal.SIGKILL)
                        killed, killed_at = started[-1], time.monotonic()
                    time.sleep(0.05)
                workers[0].wait(timeout=30)
                # 10 ([retcode] already_running): the summary counts the killed worker's attempt
                # as "being run by another worker"; nothing may have failed.
                assert workers[1].wait(timeout=600) in (0, 10), logs[1].read_text()[-3000:]
                took = time.monotonic() - killed_at
                print(f"take-over: the survivor finished {took:.1f} s after the kill")
            finally:
                for w in workers:
                    if w.poll() is None:
                        os.killpg(w.pid, signal.SIGKILL)
                        w.wait(timeout=30)
        a, b = (log.read_text() for log in logs)
        a_started, a_done = _started_and_done(a, workers[0].pid)
        _, b_done = _started_and_done(b, workers[1].pid)
        assert killed not in a_done and killed in b_done  # the killed worker's shard, taken over
        # The disconnect delay and retry_delay (luigid prunes on get_work), plus the rest of the
        # DAG's run; luigid's once-a-minute prune alone would take 2 minutes more.
        assert took < 5 + 5 + 90, took
        assert a_done and b_done  # both machines did work
        assert sorted(a_done + b_done, key=int) == [str(i) for i in range(SHARDS)]  # each exactly once
        assert " running   BuildTFRecords(" in b and "were no failed tasks" in b
        keys = s3.keys(bucket)
        aligned = {k.split("/")[-2] for k in keys if "/aligned/" in k and k.endswith("/_MANIFEST.json")
                   and "/shard-" in k}
        assert len(aligned) == SHARDS
        # The bucket's records are the local run's, byte for byte.
        records = sorted(p for p in (tmp_path / "local" / "processed" / "records").rglob("*.tfrecord*"))
        assert records
        for path in records:
            key = f"data/processed/{path.relative_to(tmp_path / 'local' / 'processed').as_posix()}"
            assert s3.read(bucket, key) == path.read_bytes(), key
    finally:
        server.stop()
