"""tests/script_runner.py runs a script as ``python script args`` would: argv, working
folder, environment, sys.path[0], stdout, stderr and exit code are the script's; nothing one
script changes reaches the next; a script past its timeout is killed with its children."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from script_runner import ScriptRunner

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """\
import json, os, sys
import tensorflow as tf
here = os.path.dirname(os.path.abspath(__file__))
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "path0": sys.path[0] == here,
                  "env": os.environ.get("RUNNER_TEST"), "main": __name__,
                  "sum": float(tf.reduce_sum(tf.ones(3))), "seen": hasattr(json, "touched")}))
json.touched = True  # a change to a shared module: the next script must not see it
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def runner():
    runner = ScriptRunner({**os.environ, "PYTHONPATH": str(ROOT)}, ROOT)
    yield runner
    runner.close()


def test_a_script_runs_as_python_would_run_it_and_leaves_nothing_behind(runner, tmp_path):
    import json

    script = tmp_path / "scripts" / "probe.py"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    for code in (3, 0):
        proc = runner.run(script, [code, "b c"], tmp_path, {**os.environ, "RUNNER_TEST": "x"}, timeout=60)
        assert proc.returncode == code and proc.stderr.strip().endswith("to stderr"), proc.stderr[-2000:]
        assert json.loads(proc.stdout) == {"argv": [str(code), "b c"], "cwd": str(tmp_path), "path0": True,
                                           "env": "x", "main": "__main__", "sum": 3.0, "seen": False}
        assert proc.args == [sys.executable, str(script), str(code), "b c"]


def test_an_exception_is_exit_code_1_with_its_traceback(runner, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("raise ValueError('the reason')\n")
    proc = runner.run(script, [], tmp_path, dict(os.environ), timeout=60)
    assert proc.returncode == 1 and "ValueError: the reason" in proc.stderr


def test_a_script_past_its_timeout_is_killed_with_its_children(runner, tmp_path):
    script = tmp_path / "hangs.py"
    script.write_text("import subprocess, sys, time\n"
                      "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                      "print(child.pid, flush=True)\n"
                      "time.sleep(600)\n")
    start = time.monotonic()
    proc = runner.run(script, [], tmp_path, dict(os.environ), timeout=3)
    assert proc.returncode is None and time.monotonic() - start < 30
    child = int(proc.stdout.split()[0])
    for _ in range(100):  # the grandchild went with the script's process group
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the script's child {child} outlived the timeout")
    # The runner still works after a kill.
    ok = tmp_path / "ok.py"
    ok.write_text("print('fine')\n")
    assert runner.run(ok, [], tmp_path, dict(os.environ), timeout=60).stdout == "fine\n"
