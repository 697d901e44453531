"""Deployment files for running the pipeline on several machines: a systemd unit for the central
Luigi scheduler, and Kubernetes manifests for the scheduler and N workers (docs/scale.md).

    python -m pipeline.deploy luigid-systemd --workdir /srv/facegan --user luigi > luigid.service
    python -m pipeline.deploy k8s --pods 10 --workers 16 --image registry.example.org/facegan:1 \\
        --raw s3://faces/raw --processed s3://faces/processed --task-args "--dataset celeba" > facegan.yaml

The templates are deploy/luigid.service and deploy/k8s/{luigid,workers}.yaml (``string.Template``:
``${name}``); the scheduler's settings are deploy/luigid.cfg, which the Kubernetes manifest
carries in a ConfigMap. Values that go into YAML are written as JSON (a YAML subset), so a
command line or a config file needs no quoting by hand. The studio's deployment files are
studio/deploy.py's.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from string import Template

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
#: The repository's scheduler settings (state file, task history, retries).
LUIGID_CFG = DEPLOY / "luigid.cfg"
LUIGID_PORT = 8082


def _fill(template: Path, values: dict) -> str:
    """``template`` with ``values`` filled in; a missing value is a ``KeyError`` naming it."""
    return Template(template.read_text()).substitute(values)


def luigid_unit(workdir: str, user: str = "luigi", config: str | None = None, executable: str | None = None,
                port: int = LUIGID_PORT, address: str = "0.0.0.0", memory_max: str = "4G") -> str:
    """The systemd unit of ``luigid`` with ``config`` (default: ``{workdir}/deploy/luigid.cfg``)."""
    executable = executable or shutil.which("luigid") or str(Path(sys.executable).parent / "luigid")
    return _fill(DEPLOY / "luigid.service", {
        "workdir": workdir, "user": user, "config": config or f"{workdir}/deploy/luigid.cfg",
        "executable": executable, "port": port, "address": address, "memory_max": memory_max})


def worker_config(raw: str, processed: str, endpoint_url: str = "", settings=()) -> str:
    """The luigi.cfg lines a worker pod reads over the image's own: ``[paths]`` (the local
    mirror and object cache on the pod's scratch volume), ``[s3] endpoint_url`` (when given) and
    ``settings`` (``(section, key, value)`` triples)."""
    sections: dict[str, dict[str, str]] = {"paths": {"raw": raw, "processed": processed,
                                                     "cache": "/scratch/facegan-cache"}}
    if endpoint_url:
        sections["s3"] = {"endpoint_url": endpoint_url}
    for section, key, value in settings:
        sections.setdefault(section, {})[key] = value
    return "".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                   for section, keys in sections.items())


def worker_command(task: str, task_args: list[str], workers: int, scheduler: str = "luigid",
                   port: int = LUIGID_PORT) -> list[str]:
    """The command every worker pod runs: ``task`` against the scheduler with ``workers``
    processes, kept alive while tasks it knows of are pending (or FAILED, waiting for a
    retry), and exit 0 when another worker ran its last tasks (``[retcode]`` would say 10/25)."""
    return ["luigi", "--module", "tasks", task, *task_args, "--scheduler-host", scheduler,
            "--scheduler-port", str(port), "--workers", str(workers), "--worker-keep-alive",
            "--retcode-already-running", "0", "--retcode-not-run", "0"]


def k8s_manifest(pods: int, image: str, raw: str, processed: str, *, workers: int = 1,
                 task: str = "BuildTFRecords", task_args: list[str] = (), endpoint_url: str = "",
                 settings=(), name: str = "facegan", scheduler: str = "luigid", port: int = LUIGID_PORT,
                 secret: str = "facegan-s3", workdir: str = "/srv/facegan", cpu: str | None = None,
                 memory: str = "8Gi", state_volume: str = "pvc", state_size: str = "1Gi",
                 backoff_limit: int | None = None, luigid_cfg: str | None = None) -> str:
    """luigid (ConfigMap, PersistentVolumeClaim unless ``state_volume="emptydir"``, Deployment,
    Service ``scheduler``) and a batch/v1 Job of ``pods`` pods (parallelism = completions) each
    running :func:`worker_command` with ``workers`` processes, as one multi-document YAML."""
    if pods < 1 or workers < 1:
        raise ValueError(f"pods and workers must be at least 1, got {pods} and {workers}")
    if state_volume not in ("pvc", "emptydir"):
        raise ValueError(f"state_volume must be 'pvc' or 'emptydir', got {state_volume!r}")
    volume = (f'persistentVolumeClaim: {{claimName: "{name}-luigid-state"}}' if state_volume == "pvc"
              else "emptyDir: {}")
    common = {"name": name, "image": image, "scheduler": scheduler, "port": port, "secret": secret}
    luigid = _fill(DEPLOY / "k8s" / "luigid.yaml", {
        **common, "luigid_cfg": json.dumps(luigid_cfg if luigid_cfg is not None else LUIGID_CFG.read_text()),
        "state_size": state_size, "state_volume": volume})
    if state_volume == "emptydir":  # no claim to make
        luigid = "\n---\n".join(doc for doc in luigid.split("\n---\n") if "kind: PersistentVolumeClaim" not in doc)
    jobs = _fill(DEPLOY / "k8s" / "workers.yaml", {
        **common, "pods": pods, "workers": workers, "workdir": workdir, "cpu": cpu or str(workers),
        "memory": memory, "backoff_limit": 2 * pods if backoff_limit is None else backoff_limit,
        "worker_cfg": json.dumps(worker_config(raw, processed, endpoint_url, settings)),
        "command": json.dumps(worker_command(task, list(task_args), workers, scheduler, port))})
    return luigid.rstrip("\n") + "\n---\n" + jobs


def _setting(text: str) -> tuple[str, str, str]:
    name, equals, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not equals or not dot or not section or not key:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE (a luigi.cfg setting), got {text!r}")
    return section, key, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deploy", description=__doc__.split("\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    unit = kinds.add_parser("luigid-systemd", help="a systemd unit running luigid with deploy/luigid.cfg")
    unit.add_argument("--workdir", required=True, help="the project folder (deploy/luigid.cfg under it)")
    unit.add_argument("--user", default="luigi", help="the account it runs as (default: %(default)s)")
    unit.add_argument("--config", help="luigid's settings (default: WORKDIR/deploy/luigid.cfg)")
    unit.add_argument("--executable", help="luigid's path (default: the one on PATH or beside python)")
    unit.add_argument("--address", default="0.0.0.0", help="interface it listens on (default: %(default)s)")
    unit.add_argument("--memory-max", default="4G", help="systemd MemoryMax (default: %(default)s)")
    k8s = kinds.add_parser("k8s", help="Kubernetes manifests: luigid and a Job of N worker pods")
    k8s.add_argument("--pods", type=int, required=True, help="worker pods (the Job's parallelism and completions)")
    k8s.add_argument("--workers", type=int, default=1, help="Luigi worker processes per pod (default: %(default)s)")
    k8s.add_argument("--image", required=True, help="an image holding this repository installed, "
                                                     "luigi and luigid on PATH")
    k8s.add_argument("--raw", required=True, help="[paths] raw, e.g. s3://bucket/prefix/raw")
    k8s.add_argument("--processed", required=True, help="[paths] processed, e.g. s3://bucket/prefix/processed")
    k8s.add_argument("--s3-endpoint-url", default="", help="[s3] endpoint_url (empty: AWS's own)")
    k8s.add_argument("--set", action="append", default=[], type=_setting, metavar="SECTION.KEY=VALUE",
                     help="another luigi.cfg setting for the workers (repeatable)")
    k8s.add_argument("--task", default="BuildTFRecords", help="the task every worker asks for (default: %(default)s)")
    k8s.add_argument("--task-args", default="", help='its parameters, e.g. "--dataset celeba '
                                                     '--DetectAlignFaces-shard-size 1024"')
    k8s.add_argument("--name", default="facegan", help="prefix of every object's name (default: %(default)s)")
    k8s.add_argument("--scheduler", default="luigid", help="the scheduler Service's name (default: %(default)s)")
    k8s.add_argument("--secret", default="facegan-s3", help="Secret holding AWS_ACCESS_KEY_ID and "
                                                            "AWS_SECRET_ACCESS_KEY (default: %(default)s)")
    k8s.add_argument("--workdir", default="/srv/facegan", help="the repository in the image (default: %(default)s)")
    k8s.add_argument("--cpu", help="CPU request per pod (default: --workers)")
    k8s.add_argument("--memory", default="8Gi", help="memory request and limit per pod (default: %(default)s)")
    k8s.add_argument("--state-volume", choices=("pvc", "emptydir"), default="pvc",
                     help="luigid's state and history: a PersistentVolumeClaim, or an emptyDir lost "
                          "with the pod (default: %(default)s)")
    k8s.add_argument("--state-size", default="1Gi", help="the claim's size (default: %(default)s)")
    for sub in (unit, k8s):
        sub.add_argument("--port", type=int, default=LUIGID_PORT, help="luigid's port (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.kind == "luigid-systemd":
        out = luigid_unit(args.workdir, args.user, args.config, args.executable, args.port, args.address,
                          args.memory_max)
    else:
        if args.pods < 1 or args.workers < 1:
            parser.error("--pods and --workers must be at least 1")
        out = k8s_manifest(args.pods, args.image, args.raw, args.processed, workers=args.workers, task=args.task,
                           task_args=shlex.split(args.task_args), endpoint_url=args.s3_endpoint_url,
                           settings=args.set, name=args.name, scheduler=args.scheduler, port=args.port,
                           secret=args.secret, workdir=args.workdir, cpu=args.cpu, memory=args.memory,
                           state_volume=args.state_volume, state_size=args.state_size)
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
