"""The pipeline's deployment files (pipeline/deploy.py): the Kubernetes manifest for luigid and N
workers, checked against Kubernetes' own schemas (kubernetes-validate, offline), and the luigid
systemd unit, checked by systemd-analyze."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.deploy import LUIGID_CFG, main

ROOT = Path(__file__).resolve().parents[1]
#: The oldest Kubernetes the manifest is meant for, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.27.0", "latest")


def _render(capsys, argv) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def _k8s(capsys, *extra) -> list[dict]:
    out = _render(capsys, ["k8s", "--pods", "3", "--workers", "4", "--image", "registry.example.org/facegan:1",
                           "--raw", "s3://faces/celeba/raw", "--processed", "s3://faces/celeba/processed",
                           "--s3-endpoint-url", "http://minio.example.org:9000",
                           "--task-args", "--dataset celeba --DetectAlignFaces-shard-size 1024", *extra])
    assert "${" not in out
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_k8s_manifest_for_three_workers_is_valid(capsys):
    import kubernetes_validate

    docs = _k8s(capsys)
    for doc in docs:
        for version in K8S_VERSIONS:
            version = kubernetes_validate.latest_version() if version == "latest" else version
            kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert set(kinds) == {("ConfigMap", "facegan-luigid"), ("PersistentVolumeClaim", "facegan-luigid-state"),
                          ("Deployment", "facegan-luigid"), ("Service", "luigid"),
                          ("ConfigMap", "facegan-workers"), ("Job", "facegan-workers")}

    job = kinds["Job", "facegan-workers"]["spec"]
    assert job["parallelism"] == job["completions"] == 3
    (worker,) = job["template"]["spec"]["containers"]
    command = worker["command"]
    assert command[:6] == ["luigi", "--module", "tasks", "BuildTFRecords", "--dataset", "celeba"]
    flags = dict(zip(command[6::2], command[7::2]))
    assert flags["--DetectAlignFaces-shard-size"] == "1024" and flags["--workers"] == "4"
    assert "--worker-keep-alive" in command and "--local-scheduler" not in command
    # The scheduler is the Service, at its port.
    service = kinds["Service", "luigid"]["spec"]
    assert command[command.index("--scheduler-host") + 1] == "luigid"
    assert command[command.index("--scheduler-port") + 1] == str(service["ports"][0]["port"]) == "8082"
    # Credentials from the Secret, the data's place from the ConfigMap read over the image's luigi.cfg.
    env = {e["name"]: e for e in worker["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "facegan-s3", "key": key}
    assert env["LUIGI_CONFIG_PATH"]["value"] == "/etc/facegan/luigi.cfg"
    cfg = configparser.ConfigParser()
    cfg.read_string(kinds["ConfigMap", "facegan-workers"]["data"]["luigi.cfg"])
    assert dict(cfg["paths"]) == {"raw": "s3://faces/celeba/raw", "processed": "s3://faces/celeba/processed",
                                  "cache": "/scratch/facegan-cache"}  # the mirror on the scratch volume
    assert cfg["s3"]["endpoint_url"] == "http://minio.example.org:9000"
    assert worker["resources"]["requests"]["cpu"] == "4"

    # luigid: the repository's settings, its state on the claim.
    assert kinds["ConfigMap", "facegan-luigid"]["data"]["luigid.cfg"] == LUIGID_CFG.read_text()
    pod = kinds["Deployment", "facegan-luigid"]["spec"]["template"]["spec"]
    assert {"name": "LUIGI_CONFIG_PATH", "value": "/etc/luigi/luigid.cfg"} in pod["containers"][0]["env"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state["persistentVolumeClaim"]["claimName"] == "facegan-luigid-state"
    luigid_cfg = configparser.ConfigParser(interpolation=None)
    luigid_cfg.read_string(LUIGID_CFG.read_text())
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "state")["mountPath"]
    assert luigid_cfg["scheduler"]["state_path"].startswith(mount + "/")
    assert luigid_cfg["task_history"]["db_connection"] == f"sqlite:///{mount}/task-history.db"


def test_k8s_state_in_an_emptydir_makes_no_claim(capsys):
    import kubernetes_validate

    docs = _k8s(capsys, "--state-volume", "emptydir")
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert {"name": "state", "emptyDir": {}} in pod["volumes"]


def test_the_worker_command_and_config_are_what_luigi_reads(tmp_path, capsys):
    """Luigi's own parser takes every flag of the command, and the ConfigMap's file, as
    LUIGI_CONFIG_PATH, wins over the repository's luigi.cfg."""
    docs = _k8s(capsys)
    job = next(d for d in docs if d["kind"] == "Job")
    (worker,) = job["spec"]["template"]["spec"]["containers"]
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(next(d for d in docs if d["metadata"]["name"] == "facegan-workers"
                        and d["kind"] == "ConfigMap")["data"]["luigi.cfg"])
    code = ("import sys, luigi.interface, luigi.retcodes, tasks\n"
            "from luigi.cmdline_parser import CmdlineParser\n"
            "from tasks.common import paths\n"
            "with CmdlineParser.global_instance(sys.argv[1:]) as cp:\n"
            "    task = cp.get_task_obj()\n"
            "    core, rc = luigi.interface.core(), luigi.retcodes.retcode()\n"
            "    print(task.task_family, task.dataset, core.scheduler_host, core.scheduler_port, core.workers,\n"
            "          rc.already_running, rc.not_run, rc.task_failed, paths().raw, paths().processed)\n")
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg)}
    out = subprocess.run([sys.executable, "-c", code, *worker["command"][3:]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["BuildTFRecords", "celeba", "luigid", "8082", "4", "0", "0", "30",
                                  "s3://faces/celeba/raw", "s3://faces/celeba/processed"]


def test_luigid_systemd_unit_is_valid(tmp_path, capsys):
    executable = Path(sys.executable).with_name("luigid")
    unit = _render(capsys, ["luigid-systemd", "--workdir", str(ROOT), "--user", "root",
                            "--executable", str(executable)])
    assert "${" not in unit
    assert f"Environment=LUIGI_CONFIG_PATH={ROOT}/deploy/luigid.cfg" in unit
    assert f"ExecStart={executable} --port 8082 --address 0.0.0.0" in unit
    assert "StateDirectory=luigi" in unit  # /var/lib/luigi, where deploy/luigid.cfg keeps state and history
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on this machine")
    path = tmp_path / "luigid.service"
    path.write_text(unit)
    out = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if str(path) in line
                and any(word in line for word in ("Unknown", "Invalid", "Failed", "not executable",
                                                  "Missing", "bad"))]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr


def test_bad_counts_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["k8s", "--pods", "0", "--image", "x", "--raw", "s3://b/r", "--processed", "s3://b/p"])
    assert "--pods and --workers must be at least 1" in capsys.readouterr().err
