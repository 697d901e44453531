"""kill -9 at any moment, re-run, and the DAG finishes with no manual cleanup."""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _luigi(zygote, tmp_path, task, *args):
    """``python -m luigi`` in a session of its own (forked from the pytest worker's zygote: what is tested
    is the kill and the re-run, not the start), its stderr in ``tmp_path/luigi.err``."""
    argv = ["-m", "luigi", "--module", "tasks", task, "--local-scheduler",
            "--paths-raw", tmp_path / "raw", "--paths-processed", tmp_path / "processed", *args]
    return zygote.start(argv, ROOT, dict(os.environ), os.devnull, tmp_path / "luigi.err")


def _kill_when(proc, ready, timeout=240):
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting to kill"
        time.sleep(0.05)
    proc.kill()
    proc.wait()


def _finish(proc, tmp_path):
    assert proc.wait(timeout=600) == 0, (tmp_path / "luigi.err").read_text()[-3000:]


def test_killed_alignment_leaves_only_whole_shards(zygote, tmp_path):
    args = ("--Sample-n", "36", "--DetectAlignFaces-shard-size", "12")
    aligned = tmp_path / "processed" / "aligned" / "sample"
    proc = _luigi(zygote, tmp_path, "DetectAlignFaces", *args)
    _kill_when(proc, lambda: any(aligned.glob("*/shard-00000-*")))
    (shard0,) = aligned.glob("*/shard-00000-*")
    for shard in aligned.glob("*/shard-*"):  # whatever has its final name is complete
        assert {p.name for p in shard.iterdir()} == {"faces.npz", "faces.jsonl", "rejected.jsonl", "summary.json"}
    assert not any(aligned.glob("*/summary-*.json"))
    first_mtime = (shard0 / "faces.npz").stat().st_mtime_ns

    _finish(_luigi(zygote, tmp_path, "DetectAlignFaces", *args), tmp_path)
    (summary,) = aligned.glob("*/summary-*.json")
    s = json.loads(summary.read_text())
    assert s["inputs"] == 36 == s["images_with_faces"] + s["rejected"]
    assert len(s["shards"]) == 3
    assert (shard0 / "faces.npz").stat().st_mtime_ns == first_mtime  # finished shard not redone
    assert not list(summary.parent.glob(".tmp-*"))


def test_killed_training_resumes_from_checkpoint(zygote, tmp_path):
    args = ("--Sample-n", "24", "--TrainDCGAN-steps", "30", "--TrainDCGAN-batch-size", "8",
            "--TrainDCGAN-base-width", "8", "--TrainDCGAN-checkpoint-every", "5",
            "--TrainDCGAN-log-every", "1")
    models = tmp_path / "processed" / "models" / "sample"
    proc = _luigi(zygote, tmp_path, "TrainDCGAN", *args)
    _kill_when(proc, lambda: any(models.glob("*/ckpt/ckpt-10.index")))
    assert not any(models.glob("*/generator.keras"))

    _finish(_luigi(zygote, tmp_path, "TrainDCGAN", *args), tmp_path)
    (run,) = models.glob("dcgan-*")
    assert (run / "generator.keras").is_file()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))  # no gap, no repeat after resume
    assert json.loads((run / "result.json").read_text())["step"] == 30
