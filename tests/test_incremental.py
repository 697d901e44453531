"""Incremental rebuilds run only the new shards; a kill -9 mid-shard is harmless."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from pipeline.records import iter_records, read_info
from pipeline.sources.base import DirectorySource
from pipeline.sources.sample_photos import make_photo

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]


def _build(dataset="sample"):
    import tasks
    result = luigi.build([tasks.BuildTFRecords(dataset=dataset)], local_scheduler=True,
                         detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    return tasks.BuildTFRecords(dataset=dataset).folder()


def _families(started) -> Counter:
    return Counter(t.split("_", 1)[0] for t in set(started))


def _stamps(folder: Path) -> dict[str, int]:
    """mtime of every file under ``folder`` (hard links included)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _check_complete(version: Path) -> int:
    """Every record file of the version reads back whole, as many as listed; returns the count."""
    info = read_info(version)
    total = 0
    for split in info["splits"].values():
        lengths = [len(list(iter_records(version / f))) for f in split["files"]]
        assert lengths == split["shard_lengths"]
        total += sum(lengths)
    return total


def test_more_sample_photos_rebuild_only_the_new_shard(luigi_config, started_tasks, tmp_path):
    luigi_config("DetectAlignFaces", "shard_size", 3)
    luigi_config("Sample", "n", 6)
    first = _build()
    assert _families(started_tasks) == {"Sample": 1, "AlignShard": 2, "DetectAlignFaces": 1,
                                        "RecordShard": 2, "BuildTFRecords": 1}
    before = _stamps(tmp_path)
    info0 = read_info(first)

    started_tasks.clear()
    luigi_config("Sample", "n", 8)  # 2 more photos: one new aligned shard
    second = _build()
    assert _families(started_tasks) == {"Sample": 1, "AlignShard": 1, "DetectAlignFaces": 1,
                                        "RecordShard": 1, "BuildTFRecords": 1}
    after = _stamps(tmp_path)
    changed = {Path(p).name for p in before if after.get(p) != before[p]}
    assert changed <= {"index.jsonl", ".index.lock", "plan.json", "latest.json"}, changed  # no old shard
    assert json.loads(next((tmp_path / "raw").rglob("n8.json")).read_text())["made"] == 2

    info1 = read_info(second)
    assert info1["version"] != info0["version"] and second != first
    assert info1["shards"][:2] == info0["shards"] and len(info1["shards"]) == 3
    assert info1["inputs"] == 8 and info1["shards"][2].endswith(tuple(
        p.name for p in (tmp_path / "processed" / "aligned").rglob("shard-00002-*") if p.is_dir()))
    aligned = json.loads(next((tmp_path / "processed" / "aligned").rglob(
        f"summary-{info1['keys_digest']}.json")).read_text())
    assert _check_complete(second) == aligned["faces"]
    assert _check_complete(first) == sum(s["num_examples"] for s in info0["splits"].values())
    latest = json.loads(next((tmp_path / "processed" / "records").rglob("latest.json")).read_text())
    assert latest["version"] == info1["version"]

    started_tasks.clear()  # nothing new: nothing runs
    assert _build() == second
    assert started_tasks == []

    # The scheduled entry point: every missing day gets a marker naming the version.
    import datetime as dt

    from luigi.tools.range import RangeDaily

    from tasks.records import RecordsDaily
    today = dt.date.today()
    result = luigi.build([RangeDaily(of=RecordsDaily, start=today - dt.timedelta(days=2),
                                     stop=today + dt.timedelta(days=1))],
                         local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    days = sorted((tmp_path / "processed" / "records").rglob("daily/*.json"))
    assert [p.stem for p in days] == [(today - dt.timedelta(days=d)).isoformat() for d in (2, 1, 0)]
    assert {json.loads(p.read_text())["version"] for p in days} == {info1["version"]}


class LocalPhotos(luigi.ExternalTask):
    """A folder of photos someone else fills (the test's "local directory" source)."""
    root = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.root)

    def source(self):
        return DirectorySource(self.root, name="photos")


def test_new_files_in_a_local_folder_rebuild_only_them(luigi_config, started_tasks, tmp_path,
                                                      monkeypatch):
    from tasks.raw import RAW_TASKS

    photos = tmp_path / "photos"
    photos.mkdir()

    def add(*names):
        for i, name in enumerate(names):
            (photos / name).write_bytes(make_photo(5, i + len(list(photos.iterdir())))[0])

    add("b0.jpg", "b1.jpg", "b2.jpg")
    monkeypatch.setitem(RAW_TASKS, "photos", lambda: LocalPhotos(root=str(photos)))
    luigi_config("DetectAlignFaces", "shard_size", 3)
    first = _build("photos")
    assert _families(started_tasks)["AlignShard"] == 1

    # New files, one sorting before the old ones: still only they are aligned.
    # (Same process and parameters: the cached task instances must notice.)
    add("a0.jpg", "c0.jpg")
    started_tasks.clear()
    second = _build("photos")
    assert _families(started_tasks) == {"AlignShard": 1, "DetectAlignFaces": 1, "RecordShard": 1,
                                        "BuildTFRecords": 1}
    info0, info1 = read_info(first), read_info(second)
    assert info1["shards"][:1] == info0["shards"] and len(info1["shards"]) == 2
    aligned = json.loads(next((tmp_path / "processed" / "aligned").rglob(
        f"summary-{info1['keys_digest']}.json")).read_text())
    assert info1["inputs"] == 5 and _check_complete(second) == aligned["faces"]


_KILLER = """
import os, sys, time
import pipeline.records as records
write = records.RecordWriter.write
def write_then_hang(self, record):
    write(self, record)
    if "shard-00001" in self.path:  # the second record shard, part written
        getattr(self, "_fh", None) and self._fh.flush()
        open(os.environ["FLAG"], "w").close()
        time.sleep(600)
records.RecordWriter.write = write_then_hang
from luigi.cmdline import luigi_run
luigi_run(sys.argv[1:])
"""


def test_kill_9_during_a_record_shard_then_rerun(tmp_path):
    args = ["--module", "tasks", "BuildTFRecords", "--local-scheduler",
            "--paths-raw", str(tmp_path / "raw"), "--paths-processed", str(tmp_path / "processed"),
            "--Sample-n", "4", "--DetectAlignFaces-shard-size", "2"]
    flag = tmp_path / "writing"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FLAG": str(flag)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLER, *args], cwd=ROOT, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while not flag.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "never reached the second record shard"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    (root,) = (tmp_path / "processed" / "records" / "sample").iterdir()
    assert list(root.glob("shards/*/.tmp-shard-00001-*"))  # killed mid-shard...
    visible = list(root.glob("shards/*/shard-*"))
    assert [p.name[:11] for p in visible] == ["shard-00000"]  # ...and only whole shards are visible
    summary = json.loads((visible[0] / "summary.json").read_text())
    for split, n in summary["lengths"].items():
        assert len(list(iter_records(visible[0] / f"{split}.tfrecord"))) == n
    assert not list(root.glob("v-*")) and not list(root.glob("builds/*"))

    rerun = subprocess.run([sys.executable, "-m", "luigi", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not list(root.glob("shards/*/.tmp-*"))
    (version,) = root.glob("v-*")
    aligned = json.loads(next((tmp_path / "processed" / "aligned").rglob("summary-*.json")).read_text())
    assert _check_complete(version) == aligned["faces"] > 0
    assert read_info(version)["inputs"] == 4


def test_failures_reach_cron_as_configured_return_codes(tmp_path):
    """luigi.cfg's [retcode]: a build that cannot even be scheduled exits 35, not 0."""
    import datetime as dt
    start = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    done = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", "RangeDaily",
                           "--of", "RecordsDaily", "--start", start,
                           "--RecordsDaily-dataset", "no-such-dataset", "--local-scheduler",
                           "--paths-raw", str(tmp_path / "raw"), "--paths-processed", str(tmp_path / "p")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 35, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "[RecordsDaily] dataset = 'no-such-dataset': must be one of" in done.stderr
