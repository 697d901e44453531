"""``facegan-studio`` stops cleanly on Ctrl+C (SIGINT) and on SIGTERM (how systemd and docker
stop a service): requests answered, jobs cancelled and models closed, then exit status 0 with
no traceback, and TensorFlow's AutoGraph files gone from its temporary folder (atexit ran)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import requests
from studio_runs import free_port, make_run, start_studio

ROOT = Path(__file__).resolve().parents[1]


def autograph_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("__autograph_generated_file*"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_studio_stops_cleanly_on_a_signal(zygote, tmp_path, sig):
    run = make_run(tmp_path / "models" / "celeba" / "dcgan-a")
    port, tmp, log = free_port(), tmp_path / "tmp", tmp_path / "studio.log"
    tmp.mkdir()
    url = f"http://127.0.0.1:{port}"
    proc = start_studio(zygote, run, tmp_path / "models", port, log, {"TMPDIR": str(tmp)})
    try:
        z = np.random.default_rng(0).uniform(-1, 1, 100).round(4).tolist()
        assert requests.post(f"{url}/api/generate", json={"z": z}, timeout=60, proxies={"http": None}).ok
        assert autograph_files(tmp), "the server traced no graph: nothing to clean up, nothing tested"
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert autograph_files(tmp) == []


def test_a_busy_port_is_one_line_and_exit_status_3(zygote, tmp_path):
    """The README's troubleshooting: uvicorn's bind error, then exit status 3, no traceback."""
    import socket

    run = make_run(tmp_path / "models" / "celeba" / "dcgan-a")
    log = tmp_path / "studio.log"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = zygote.start(["-m", "studio", "--model", run, "--models-root", tmp_path / "models", "--port", port],
                            ROOT, {**os.environ, "PYTHONPATH": str(ROOT)}, log)
        try:
            assert proc.wait(timeout=180) == 3, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "address already in use" in text and "Traceback" not in text, text[-3000:]
