"""[paths] raw and processed in a bucket: a real S3-compatible server (moto's, on 127.0.0.1),
real luigi processes, byte-for-byte comparisons with a run on local folders."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import s3_server
from components import require_module
from s3_server import LUIGI, ROOT, bucket_paths, luigi, luigi_env

require_module("moto")
require_module("s3fs")

from pipeline.storage import MANIFEST, Root, Store, mirror_folder  # noqa: E402

SAMPLE = ["--Sample-n", "16", "--DetectAlignFaces-shard-size", "2"]
TRAIN = ["--TrainDCGAN-steps", "4", "--TrainDCGAN-base-width", "8", "--TrainDCGAN-batch-size", "4",
         "--TrainDCGAN-checkpoint-every", "2", "--TrainDCGAN-precision", "float32"]


@pytest.fixture(scope="module")
def s3():
    server, s3 = s3_server.start()
    os.environ.update(s3_server.CREDENTIALS)  # for the in-process Store
    yield s3
    server.stop()


@pytest.fixture
def bucket(s3, request):
    return s3.bucket(re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-"))


def store_of(s3, bucket: str, cache: Path) -> Store:
    url = f"s3://{bucket}/data/processed"
    return Store([Root("processed", url, mirror_folder(cache, url))], cache, s3.endpoint)


# -- the storage layer ---------------------------------------------------------------------

def test_a_folder_is_done_only_when_its_manifest_is_in_the_bucket(s3, bucket, tmp_path):
    st = store_of(s3, bucket, tmp_path / "a")
    folder = st.roots[0].local / "shards" / "shard-0"
    folder.mkdir(parents=True)
    (folder / "faces.bin").write_bytes(os.urandom(5000))
    (folder / "summary.json").write_text("{}")
    assert not st.done(folder, folder=True)
    # A half-uploaded folder (its files, no manifest), as a worker killed mid-upload leaves it.
    s3.client().put_object(Bucket=bucket, Key="data/processed/shards/shard-0/faces.bin", Body=b"x")
    assert not st.done(folder, folder=True)
    pushed = st.push([folder], [folder], [], before={})
    assert pushed["files"] == 2
    assert st.done(folder, folder=True)
    manifest = json.loads(s3.read(bucket, f"data/processed/shards/shard-0/{MANIFEST}"))
    assert sorted(manifest["files"]) == ["faces.bin", "summary.json"]
    assert manifest["files"]["faces.bin"]["size"] == 5000


def test_outputs_go_up_whole_and_markers_last_and_only_what_changed(s3, bucket, tmp_path):
    st = store_of(s3, bucket, tmp_path / "a")
    run = st.roots[0].local / "models" / "run"
    run.mkdir(parents=True)
    (run / "old.txt").write_text("from an earlier run")
    st.push([run], [], [run / "old.txt"], before={})
    before = st.snapshot([run])
    (run / "weights.bin").write_bytes(os.urandom(3000))
    (run / "copy.bin").write_bytes((run / "weights.bin").read_bytes())  # the same bytes: copied server-side
    (run / ".tmp-card.json-123-abc").write_text("a writer's temporary: never uploaded")
    (run / "card.json").write_text('{"steps": 4}')
    pushed = st.push([run], [], [run / "card.json"], before)
    assert pushed == {"files": 3, "bytes": 3000 + len('{"steps": 4}'), "server_side_copies": 1}
    keys = s3.keys(bucket, "data/processed/models/run/")
    assert not any(".tmp-" in k for k in keys)
    assert json.loads(s3.read(bucket, f"data/processed/models/run/{MANIFEST}"))["files"].keys() \
        == {"old.txt", "weights.bin", "copy.bin", "card.json"}
    # Nothing changed: nothing goes up again.
    assert st.push([run], [], [run / "card.json"], st.snapshot([run]))["files"] == 0


def test_a_second_machine_pulls_through_the_content_cache(s3, bucket, tmp_path):
    writer = store_of(s3, bucket, tmp_path / "writer")
    shard = writer.roots[0].local / "records" / "shard-0"
    shard.mkdir(parents=True)
    payload = os.urandom(20000)
    (shard / "train.tfrecord").write_bytes(payload)
    version = writer.roots[0].local / "records" / "v-1"
    version.mkdir()
    os.link(shard / "train.tfrecord", version / "faces-train.tfrecord-00000-of-00001")  # as write_version links
    writer.push([shard], [shard], [], {})
    writer.push([version], [version], [], {})

    reader = store_of(s3, bucket, tmp_path / "reader")
    local = reader.roots[0].local
    assert reader.pull([local / "records" / "shard-0"]) == 20000
    # The version's file has the same bytes: the cache has them, nothing is downloaded.
    assert reader.pull([local / "records" / "v-1"]) == 0
    assert (local / "records" / "v-1" / "faces-train.tfrecord-00000-of-00001").read_bytes() == payload
    assert reader.pull([local / "records" / "shard-0"]) == 0  # a second run reads the cache
    # A task that appends to a pulled file in place spoils the cached object: fetched again.
    with open(local / "records" / "shard-0" / "train.tfrecord", "ab") as fh:
        fh.write(b"appended")
    assert reader.pull([local / "records" / "shard-0"]) == 20000
    assert (local / "records" / "shard-0" / "train.tfrecord").read_bytes() == payload


# -- bad settings: one line, before any work, nothing left in the bucket ----------------------

def _one_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if all(e in line for e in expected)]
    assert lines, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "running   Sample" not in result.stderr


def test_bad_storage_settings_are_one_line_before_any_work(s3, bucket, tmp_path):
    flags = bucket_paths(s3, bucket, tmp_path / "cache")
    sample = ["Sample", "--Sample-n", "2", "--local-scheduler"]

    closed = bucket_paths(s3, bucket, tmp_path / "cache")
    closed[closed.index("--s3-endpoint-url") + 1] = "http://127.0.0.1:9"  # discard port: refused
    _one_line(luigi([*sample, *closed], luigi_env(), timeout=120),
              f"[paths] raw = s3://{bucket}/data/raw: cannot reach http://127.0.0.1:9", "endpoint_url")

    no_keys = {k: v for k, v in luigi_env().items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    _one_line(luigi([*sample, *flags], no_keys, timeout=120), "no credentials found", "AWS_ACCESS_KEY_ID")

    missing = [f.replace(f"s3://{bucket}/", "s3://no-such-bucket/") for f in flags]
    _one_line(luigi([*sample, *missing], luigi_env(), timeout=120),
              "[paths] raw = s3://no-such-bucket/data/raw: bucket 'no-such-bucket' does not exist")
    assert s3.keys(bucket) == []  # nothing partial is visible


@pytest.mark.slow
def test_a_denied_write_is_one_line(tmp_path):
    """moto's server in its own process with IAM enforced: a user who may only read."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The first 4 requests (bucket, user, policy, key) are made before authentication starts.
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**luigi_env(), "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        s3 = s3_server.S3(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "moto server did not start"
                time.sleep(0.2)
        import boto3
        s3.bucket("readonly")
        iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*",
                                                    "Action": ["s3:GetObject", "s3:ListBucket",
                                                               "s3:HeadBucket", "s3:ListAllMyBuckets"]}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        env = luigi_env(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        result = luigi(["Sample", "--Sample-n", "2", "--local-scheduler",
                        *bucket_paths(s3, "readonly", tmp_path / "cache")], env, timeout=120)
        _one_line(result, "[paths] raw = s3://readonly/data/raw: cannot write", "grant these credentials write")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


# -- the pipeline in a bucket ------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same records built on local folders: what the bucket's must equal byte for byte."""
    tmp = tmp_path_factory.mktemp("local")
    result = luigi(["BuildTFRecords", "--local-scheduler", *SAMPLE, "--paths-raw", str(tmp / "raw"),
                    "--paths-processed", str(tmp / "processed")], luigi_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "processed"


def _same_as_local(s3, bucket: str, local: Path, cache: Path) -> int:
    """Every file of the local run's aligned faces and records is in the bucket, identical: the
    record and face files byte for byte, the JSON reports up to the folder they name (a summary
    names the local folder it was written in: the mirror's, or the local run's)."""
    compared = 0
    roots = {str(local.parent / "raw"): "<raw>", str(local): "<processed>",
             str(mirror_folder(cache, f"s3://{bucket}/data/raw")): "<raw>",
             str(mirror_folder(cache, f"s3://{bucket}/data/processed")): "<processed>"}
    for path in sorted(p for sub in ("aligned", "records") for p in (local / sub).rglob("*") if p.is_file()):
        key = f"data/processed/{path.relative_to(local).as_posix()}"
        got, want = s3.read(bucket, key), path.read_bytes()
        if path.suffix == ".json" and got != want:
            got, want = got.decode(), want.decode()
            for root, name in roots.items():
                got, want = got.replace(root, name), want.replace(root, name)
        assert got == want, key
        compared += 1
    return compared


def _ran(log: str) -> list[str]:
    return re.findall(r" running +(\w+)\(", log)


@pytest.mark.slow
def test_the_pipeline_runs_in_a_bucket_and_a_rerun_is_a_noop(zygote, s3, bucket, tmp_path, local_run):
    flags = bucket_paths(s3, bucket, tmp_path / "machine-a")
    # The run that trains, forked from the worker's zygote (TensorFlow imported once); the
    # reruns load no TensorFlow, so they are plain processes.
    first = zygote.run([*LUIGI, "ExportSamples", "--local-scheduler", *SAMPLE, *TRAIN, *flags], ROOT, luigi_env(),
                       timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    assert {"Sample", "AlignShard", "DetectAlignFaces", "RecordShard", "BuildTFRecords", "TrainDCGAN",
            "ExportSamples"} <= set(_ran(first.stderr))
    keys = s3.keys(bucket)
    assert any(k.startswith("data/raw/sample/seed0/") and k.endswith(".jpg") or k.endswith(".png")
               for k in keys), keys[:20]
    run = [k for k in keys if k.startswith("data/processed/models/sample/") and k.endswith("model_card.json")]
    assert len(run) == 1 and f"{run[0].rsplit('/', 1)[0]}/{MANIFEST}" in keys
    assert any(k.startswith("data/processed/exports/") for k in keys)
    assert _same_as_local(s3, bucket, local_run, tmp_path / "machine-a") > 20
    assert not list((tmp_path / "machine-a").rglob(".tmp-*"))

    # Again on the same machine, and on a second machine with an empty cache: nothing runs.
    for cache in ("machine-a", "machine-b"):
        again = luigi(["ExportSamples", "--local-scheduler", *SAMPLE, *TRAIN,
                       *bucket_paths(s3, bucket, tmp_path / cache)], luigi_env())
        assert again.returncode == 0, again.stderr[-3000:]
        assert _ran(again.stderr) == [], again.stderr[-3000:]
    assert s3.keys(bucket) == keys


@pytest.mark.slow
def test_a_worker_killed_mid_shard_leaves_no_marker_and_the_rerun_finishes_it(s3, bucket, tmp_path, local_run):
    flags = bucket_paths(s3, bucket, tmp_path / "cache")
    cmd = [sys.executable, "-m", "luigi", "--module", "tasks", "BuildTFRecords", "--local-scheduler", *SAMPLE, *flags]
    worker = subprocess.Popen(cmd, cwd=ROOT, env=luigi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    markers = []
    try:
        deadline = time.monotonic() + 300
        while not markers:  # SIGKILL as soon as the first shard is in the bucket: the next is being aligned
            assert worker.poll() is None, worker.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            markers = [k for k in s3.keys(bucket, "data/processed/aligned/") if k.endswith(f"/{MANIFEST}")]
            time.sleep(0.05)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    done = {k.rsplit("/", 2)[-2] for k in s3.keys(bucket, "data/processed/aligned/") if k.endswith(f"/{MANIFEST}")}
    assert 0 < len(done) < 8, done  # killed in the middle, not before or after
    assert not [k for k in s3.keys(bucket) if "/records/" in k and "/builds/" in k]

    rerun = luigi(["BuildTFRecords", "--local-scheduler", *SAMPLE, *flags], luigi_env())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _ran(rerun.stderr).count("AlignShard") == 8 - len(done)  # only the shards without a marker
    assert _same_as_local(s3, bucket, local_run, tmp_path / "cache") > 20


# -- gs:// through the same layer, against Google's storage emulator (gcp-storage-emulator) ----

@pytest.mark.slow
def test_the_same_layer_serves_gs_buckets(tmp_path):
    """BuildTFRecords with raw/ and processed/ in a gs:// bucket of an in-memory Cloud Storage
    emulator on 127.0.0.1 (gcsfs finds it through STORAGE_EMULATOR_HOST), then a rerun with an
    empty cache runs nothing."""
    require_module("gcsfs")
    require_module("gcp_storage_emulator", "gcp-storage-emulator")
    import socket

    from gcp_storage_emulator.server import create_server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="faces")
    server.start()
    try:
        # The emulator speaks JSON over HTTP only: gcsfs' gRPC bucket probe is switched off.
        env = luigi_env(STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}", GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
        flags = lambda cache: ["--paths-raw", "gs://faces/data/raw", "--paths-processed",  # noqa: E731
                               "gs://faces/data/processed", "--paths-cache", str(tmp_path / cache)]
        first = luigi(["BuildTFRecords", "--local-scheduler", "--Sample-n", "4", "--DetectAlignFaces-shard-size", "2",
                       *flags("a")], env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert _ran(first.stderr).count("AlignShard") == 2
        again = luigi(["BuildTFRecords", "--local-scheduler", "--Sample-n", "4", "--DetectAlignFaces-shard-size", "2",
                       *flags("b")], env)
        assert again.returncode == 0 and _ran(again.stderr) == [], again.stderr[-3000:]
    finally:
        server.stop()
