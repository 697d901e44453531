"""A real ``luigid`` on 127.0.0.1 for tests: a free port, started in its own process group,
waited for until it listens, stopped with SIGTERM (which makes it write its state file).

    with running_luigid(tmp_path, config=path) as port:
        ...  # luigi --scheduler-host 127.0.0.1 --scheduler-port {port}

``scheduler_config(tmp_path)`` writes the repository's deploy/luigid.cfg with its state file
and task-history database moved into ``tmp_path``.
"""
from __future__ import annotations

import configparser
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The repository's scheduler settings (docs/scale.md).
LUIGID_CFG = ROOT / "deploy" / "luigid.cfg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "luigid exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "luigid did not start listening"
            time.sleep(0.1)


def luigid_command() -> list[str]:
    """``luigid`` beside this Python (the venv's), else Luigi's entry point through it."""
    exe = Path(sys.executable).with_name("luigid")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from luigi.cmdline import luigid; luigid()"]


def scheduler_config(folder: Path, source: Path = LUIGID_CFG, **scheduler) -> Path:
    """``source`` (deploy/luigid.cfg) with ``state_path`` and the SQLite history moved into
    ``folder`` and ``scheduler`` keys set over its ``[scheduler]``; the path of the new file."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(source)
    config["scheduler"]["state_path"] = str(folder / "luigi-state.pickle")
    config["task_history"]["db_connection"] = f"sqlite:///{folder / 'task-history.db'}"
    for key, value in scheduler.items():
        config["scheduler"][key] = str(value)
    path = folder / "luigid.cfg"
    with open(path, "w") as fh:
        config.write(fh)
    return path


@contextlib.contextmanager
def running_luigid(folder: Path, config: Path | None = None, timeout: float = 60):
    """A ``luigid`` listening on 127.0.0.1 at a free port (yielded), with ``config`` as its
    LUIGI_CONFIG_PATH (none: Luigi's defaults) and its working folder, state file and log
    (``luigid.log``) in ``folder``; stopped on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}
    if config is not None:
        env["LUIGI_CONFIG_PATH"] = str(config)
    (folder / "luigid-logs").mkdir(exist_ok=True)
    args = ["--port", str(port), "--address", "127.0.0.1", "--logdir", str(folder / "luigid-logs")]
    if config is None:  # else the config's state_path
        args += ["--state-path", str(folder / "luigi-state.pickle")]
    with open(folder / "luigid.log", "w") as log:
        proc = subprocess.Popen([*luigid_command(), *args], cwd=folder, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, proc, timeout)
            yield port
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
