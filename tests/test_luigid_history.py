"""The repository's scheduler settings (deploy/luigid.cfg) in a real luigid on loopback: a
pipeline run against it lands in its task history (the SQLite database and the /history pages)."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections import Counter

import pytest
from luigid_helpers import ROOT, running_luigid, scheduler_config

pytestmark = pytest.mark.slow


def _history(db) -> tuple[dict[str, list], list]:
    """``{family: [(task_id, [event names in order], host), ...]}`` and the ``(family, name,
    value)`` parameter rows, from luigi's db_task_history tables (tasks, task_events,
    task_parameters)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    with engine.connect() as c:
        rows = c.execute(sqlalchemy.text(
            "SELECT t.id, t.task_id, t.name, t.host, e.event_name FROM tasks t "
            "JOIN task_events e ON e.task_id = t.id ORDER BY t.id, e.ts, e.id")).all()
        params = c.execute(sqlalchemy.text(
            "SELECT t.name, p.name, p.value FROM tasks t JOIN task_parameters p ON p.task_id = t.id")).all()
    engine.dispose()
    runs: dict[int, tuple[str, str, str | None, list[str]]] = {}
    for row_id, task_id, name, host, event in rows:
        runs.setdefault(row_id, (name, task_id, host, []))[3].append(event)
    out: dict[str, list] = {}
    for name, task_id, host, events in runs.values():
        out.setdefault(name, []).append((task_id, events, host))
    return out, params


def test_a_run_against_luigid_is_in_its_task_history(tmp_path):
    config = scheduler_config(tmp_path)
    db = tmp_path / "task-history.db"
    with running_luigid(tmp_path, config) as port:
        env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        run = subprocess.run(
            [sys.executable, "-m", "luigi", "--module", "tasks", "BuildTFRecords", "--scheduler-host", "127.0.0.1",
             "--scheduler-port", str(port), "--workers", "1", "--paths-raw", str(tmp_path / "raw"),
             "--paths-processed", str(tmp_path / "processed"), "--Sample-n", "4",
             "--DetectAlignFaces-shard-size", "2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/history/by_name/BuildTFRecords", timeout=30) as r:
            page = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/history", timeout=30) as r:
            recent = r.read().decode()

    assert db.exists(), f"no history database at {db} (record_task_history off?)"
    runs, params = _history(db)
    # Every task of the DAG, once each: the raw photos, two shards of two, and the roots.
    assert Counter({name: len(tasks) for name, tasks in runs.items()}) == Counter(
        {"Sample": 1, "AlignShard": 2, "DetectAlignFaces": 1, "RecordShard": 2, "BuildTFRecords": 1}), runs
    for name, tasks in runs.items():
        for task_id, events, host in tasks:
            assert task_id.startswith(name + "_")
            # Scheduled, run by a worker (whose host is recorded), done.
            assert events[0] == "PENDING" and "RUNNING" in events and events[-1] == "DONE", (name, events)
            assert host, (name, events)
    assert ("BuildTFRecords", "dataset", "sample") in params
    assert {value for name, key, value in params if name == "AlignShard" and key == "shard"} == {"0", "1"}

    # The web pages read the same history.
    assert "BuildTFRecords" in page and "DONE" in page
    assert all(name in recent for name in runs)
