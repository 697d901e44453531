"""Incremental rebuild benchmark: full build, +1% raw data, then no change.

    .venv/bin/python bench/rebuild.py --n 2000

Makes ``n`` sample photos (untimed: raw data arrives from elsewhere), then
times ``luigi --module tasks BuildTFRecords --local-scheduler`` as a user runs
it (a fresh process each time, so start-up and scheduling are included):

1. full: decode, detect, align and write all ``n`` photos;
2. incremental: after ``ceil(n / 100)`` more photos were added;
3. no-op: the same again, nothing new.

Prints one JSON line: full_s, incremental_s, noop_s, incremental_ratio
(incremental_s / full_s; target <= 0.05), the versions built and whether the
targets (ratio <= 0.05, noop_s <= 3) are met. The comparison is within one
run on one machine, so the ratio holds on a noisy machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def luigi(work: Path, task: str, n: int, shard_size: int, workers: int) -> float:
    """Run one luigi command line; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "luigi", "--module", "tasks", task, "--local-scheduler",
           "--paths-raw", str(work / "raw"), "--paths-processed", str(work / "processed"),
           "--Sample-n", str(n), "--DetectAlignFaces-shard-size", str(shard_size),
           "--workers", str(workers)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def latest(work: Path) -> dict:
    (path,) = (work / "processed" / "records" / "sample").glob("*/latest.json")
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="Sample photos of the full build.")
    parser.add_argument("--shard-size", type=int, default=128, help="Photos per aligned shard.")
    parser.add_argument("--workers", type=int, default=1, help="Luigi worker processes.")
    parser.add_argument("--work", help="Folder to build in (default: a temporary one, removed).")
    args = parser.parse_args()

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="rebuild-bench-")
    work = Path(args.work or tmp.name)
    added = math.ceil(args.n / 100)
    try:
        raw_s = luigi(work, "Sample", args.n, args.shard_size, args.workers)
        full_s = luigi(work, "BuildTFRecords", args.n, args.shard_size, args.workers)
        first = latest(work)
        raw_s += luigi(work, "Sample", args.n + added, args.shard_size, args.workers)
        incremental_s = luigi(work, "BuildTFRecords", args.n + added, args.shard_size, args.workers)
        second = latest(work)
        noop_s = luigi(work, "BuildTFRecords", args.n + added, args.shard_size, args.workers)
        third = latest(work)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if second["version"] == first["version"] or third["version"] != second["version"]:
        sys.exit(f"unexpected versions: {first['version']}, {second['version']}, {third['version']}")
    ratio = incremental_s / full_s
    print(json.dumps({
        "n": args.n, "added": added, "shard_size": args.shard_size, "workers": args.workers,
        "raw_s": round(raw_s, 2), "full_s": round(full_s, 2), "incremental_s": round(incremental_s, 2),
        "noop_s": round(noop_s, 2), "incremental_ratio": round(ratio, 4),
        "versions": [first["version"], second["version"]],
        "examples": [sum(first["splits"].values()), sum(second["splits"].values())],
        "cpus": len(os.sched_getaffinity(0)),
        "meets_targets": ratio <= 0.05 and noop_s <= 3,
    }))


if __name__ == "__main__":
    main()
