"""The cost of object storage: ``BuildTFRecords --dataset celeba`` on local folders and with
``[paths] raw``/``processed`` in a bucket (moto's S3 server on 127.0.0.1), in one run.

    python bench/object_store.py --data ../shared/data/celeba --limit 1000

Prints JSON: the wall time of each (a real ``luigi`` process each, one worker), the bucket's
overhead against the local run (limit: 15%), the bytes each way (summed from every task's
``storage:`` line), the objects in the bucket, and the time and bytes of the same command on a
second machine (an empty cache), where nothing runs. The photos are read once before timing, so
neither run pays the disk cache's warm-up. The records of both runs are compared byte for byte.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from luigi_bench import ROOT, cpu_seconds, free_port, wait_for_port  # noqa: E402

from model.cpu import cpu_model  # noqa: E402

LIMIT = 0.15
STORAGE_LINE = re.compile(r"storage: pulled (\d+) bytes, pushed (\d+) files (\d+) bytes .*?, ([\d.]+) s")


def luigi(args: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", *args, "--local-scheduler",
                             "--workers", "1"], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"luigi {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return seconds, result.stderr


def traffic(log: str) -> dict:
    lines = STORAGE_LINE.findall(log)
    return {"bytes_down": sum(int(d) for d, _, _, _ in lines), "files_up": sum(int(f) for _, f, _, _ in lines),
            "bytes_up": sum(int(u) for _, _, u, _ in lines), "tasks": len(lines),
            "storage_s": round(sum(float(s) for _, _, _, s in lines), 2)}


def records_equal(local: Path, mirror: Path) -> int:
    """The record files of both runs are byte-identical (their version folders' files)."""
    files = sorted(p for p in (local / "records").rglob("*.tfrecord*") if p.is_file())
    for path in files:
        twin = mirror / path.relative_to(local)
        if twin.read_bytes() != path.read_bytes():
            raise SystemExit(f"{twin} differs from {path}")
    return len(files)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "celeba"),
                        help="a CelebA copy (img_align_celeba/ and the label files)")
    parser.add_argument("--limit", type=int, default=1000, help="photos to use (0: all)")
    parser.add_argument("--workdir", default="", help="where both runs write (default: a temporary folder)")
    parser.add_argument("--args", default="", help="extra luigi flags for both runs, e.g. "
                        "'--DetectAlignFaces-shard-size 64'")
    args = parser.parse_args(argv)


    import boto3
    work = Path(args.workdir or tempfile.mkdtemp(prefix="object-store-bench-")).resolve()
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(credentials)
    env = {**os.environ, **credentials, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # The S3 server in a process of its own, so its CPU time (which a real object store does
    # not take from this machine) is measured apart.
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for_port(port, server, "the S3 server")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="faces")
        data = subset(Path(args.data).resolve(), args.limit, work / "celeba")
        common = ["BuildTFRecords", "--dataset", "celeba", "--DownloadCelebA-local-dir", str(data),
                  "--DownloadCelebA-allow-partial", *args.args.split()]
        for photo in (data / "img_align_celeba").glob("*.jpg"):
            photo.read_bytes()  # the disk cache warm for both runs

        local_s, _ = luigi([*common, "--paths-raw", str(work / "local" / "raw"),
                            "--paths-processed", str(work / "local" / "processed")], env)
        bucket = ["--paths-raw", "s3://faces/raw", "--paths-processed", "s3://faces/processed",
                  "--s3-endpoint-url", endpoint]
        cpu_before = cpu_seconds(server.pid)
        bucket_s, log = luigi([*common, *bucket, "--paths-cache", str(work / "machine-a")], env)
        server_cpu_s = cpu_seconds(server.pid) - cpu_before
        second_s, second_log = luigi([*common, *bucket, "--paths-cache", str(work / "machine-b")], env)
        trainer = pull_records(endpoint, work / "machine-a", work / "machine-c")
        objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket="faces")
                   for o in page.get("Contents", [])]
        compared = records_equal(work / "local" / "processed",
                                 work / "machine-a" / "mirror" / "s3" / "faces" / "processed")
    finally:
        server.terminate()
        server.wait(timeout=30)
    overhead = bucket_s / local_s - 1
    result = {
        "bench": "object_store", "task": "BuildTFRecords --dataset celeba",
        "photos": len(list((data / "img_align_celeba").glob("*.jpg"))),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": os.getloadavg()[0]},
        "local_s": round(local_s, 2), "bucket_s": round(bucket_s, 2), "overhead": round(overhead, 3),
        "limit": LIMIT, "within_limit": overhead <= LIMIT,
        # the S3 server's CPU during the bucket run: on these shared cores, not on a real store's
        "server_cpu_s": round(server_cpu_s, 2),
        "traffic": traffic(log), "bucket_objects": len(objects),
        "bucket_bytes": sum(o["Size"] for o in objects),
        "second_machine": {"seconds": round(second_s, 2), "ran": re.findall(r" running +(\w+)\(", second_log),
                           **traffic(second_log)},
        "training_machine": trainer,
        "record_files_identical": compared,
    }
    print(json.dumps(result))
    return result


def pull_records(endpoint: str, writer: Path, cache: Path) -> dict:
    """What a training machine pays before its first step: the records folder pulled into an
    empty cache, then again (the cache has it)."""
    from pipeline.storage import Root, Store, mirror_folder

    url = "s3://faces/processed"
    (root,) = (mirror_folder(writer, url) / "records" / "celeba").iterdir()
    store = Store([Root("processed", url, mirror_folder(cache, url))], cache, endpoint)
    folder = mirror_folder(cache, url) / root.relative_to(mirror_folder(writer, url))
    out = {}
    for attempt in ("first", "again"):
        start = time.perf_counter()
        got = store.pull([folder])
        out[attempt] = {"seconds": round(time.perf_counter() - start, 2), "bytes_down": got}
    return out


def subset(data: Path, limit: int, folder: Path) -> Path:
    """``data`` itself, or a copy of it with its first ``limit`` photos (symbolic links) and
    its label files."""
    if not limit:
        return data
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    for photo in sorted((data / "img_align_celeba").glob("*.jpg"))[:limit]:
        link = folder / "img_align_celeba" / photo.name
        if not link.exists():
            link.symlink_to(photo)
    for label in data.glob("*.txt"):
        if not (folder / label.name).exists():
            (folder / label.name).symlink_to(label)
    return folder


if __name__ == "__main__":
    main()
