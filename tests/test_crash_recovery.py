"""kill -9 at any moment, re-run, and the DAG finishes with no manual cleanup."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _luigi(tmp_path, task, *args):
    cmd = [sys.executable, "-m", "luigi", "--module", "tasks", task, "--local-scheduler",
           "--paths-raw", str(tmp_path / "raw"), "--paths-processed", str(tmp_path / "processed"), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(cmd, cwd=Path(__file__).parents[1], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc, ready, timeout=240):
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting to kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _finish(proc):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def test_killed_alignment_leaves_only_whole_shards(tmp_path):
    args = ("--Sample-n", "36", "--DetectAlignFaces-shard-size", "12")
    aligned = tmp_path / "processed" / "aligned" / "sample"
    proc = _luigi(tmp_path, "DetectAlignFaces", *args)
    _kill_when(proc, lambda: any(aligned.glob("*/shard-00000-*")))
    (shard0,) = aligned.glob("*/shard-00000-*")
    for shard in aligned.glob("*/shard-*"):  # whatever has its final name is complete
        assert {p.name for p in shard.iterdir()} == {"faces.npz", "faces.jsonl", "rejected.jsonl", "summary.json"}
    assert not any(aligned.glob("*/summary-*.json"))
    first_mtime = (shard0 / "faces.npz").stat().st_mtime_ns

    _finish(_luigi(tmp_path, "DetectAlignFaces", *args))
    (summary,) = aligned.glob("*/summary-*.json")
    s = json.loads(summary.read_text())
    assert s["inputs"] == 36 == s["images_with_faces"] + s["rejected"]
    assert len(s["shards"]) == 3
    assert (shard0 / "faces.npz").stat().st_mtime_ns == first_mtime  # finished shard not redone
    assert not list(summary.parent.glob(".tmp-*"))


def test_killed_training_resumes_from_checkpoint(tmp_path):
    args = ("--Sample-n", "24", "--TrainDCGAN-steps", "30", "--TrainDCGAN-batch-size", "8",
            "--TrainDCGAN-base-width", "8", "--TrainDCGAN-checkpoint-every", "5",
            "--TrainDCGAN-log-every", "1")
    models = tmp_path / "processed" / "models" / "sample"
    proc = _luigi(tmp_path, "TrainDCGAN", *args)
    _kill_when(proc, lambda: any(models.glob("*/ckpt/ckpt-10.index")))
    assert not any(models.glob("*/generator.keras"))

    _finish(_luigi(tmp_path, "TrainDCGAN", *args))
    (run,) = models.glob("dcgan-*")
    assert (run / "generator.keras").is_file()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))  # no gap, no repeat after resume
    assert json.loads((run / "result.json").read_text())["step"] == 30
