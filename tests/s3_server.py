"""A real S3-compatible server on loopback for the object-storage tests: moto's server, bound
to 127.0.0.1 on a free port, with credentials in the environment (never a real account)."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
#: Credentials moto accepts; tests put them in the environment of every process they start.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3:
    endpoint: str

    def client(self, **credentials):
        import boto3
        keys = {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"], **credentials}
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **keys)

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def start(**options):
    """Start moto's threaded server on 127.0.0.1:0; returns ``(server, S3)``."""
    import logging

    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, S3(f"http://{host}:{port}")


def luigi_env(**extra) -> dict[str, str]:
    """The environment of a luigi process using the test bucket: moto's credentials, no AWS
    configuration files of the machine, TensorFlow quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **CREDENTIALS, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def bucket_paths(s3: S3, bucket: str, cache: Path, prefix: str = "data") -> list[str]:
    """Command-line flags putting ``[paths]`` raw and processed in ``bucket``."""
    return ["--paths-raw", f"s3://{bucket}/{prefix}/raw", "--paths-processed", f"s3://{bucket}/{prefix}/processed",
            "--paths-cache", str(cache), "--s3-endpoint-url", s3.endpoint]


#: ``python`` arguments that run luigi on this project's tasks (a process's or a zygote child's).
LUIGI = ["-m", "luigi", "--module", "tasks"]


def luigi(args: list[str], env: dict, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run ``luigi --module tasks ARGS`` in the repository (a real process, its own scheduler
    unless ``args`` name one)."""
    return subprocess.run([sys.executable, *LUIGI, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)
