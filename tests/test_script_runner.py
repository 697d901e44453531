"""tests/script_runner.py runs a program as ``python ...`` would: argv, working folder,
environment (temporary folder included), sys.path[0], stdout, stderr and exit code are the
program's, for a script, ``-c`` and ``-m``; several run side by side; nothing one program changes
reaches the next; a program past its timeout is killed with its children. (``zygote``, the
runner the other tests share, is tests/conftest.py's.)"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def test_a_script_runs_as_python_would_run_it_and_leaves_nothing_behind(zygote, tmp_path):
    import json

    script = tmp_path / "scripts" / "probe.py"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    for code in (3, 0):
        proc = zygote.run([script, code, "b c"], tmp_path, {**os.environ, "RUNNER_TEST": "x"}, timeout=60)
        assert proc.returncode == code and proc.stderr.strip().endswith("to stderr"), proc.stderr[-2000:]
        assert json.loads(proc.stdout) == {"argv": [str(code), "b c"], "cwd": str(tmp_path), "path0": True,
                                           "env": "x", "main": "__main__", "sum": 3.0, "seen": False}
        assert proc.args == [sys.executable, str(script), str(code), "b c"]


def test_an_exception_is_exit_code_1_with_its_traceback(zygote, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("raise ValueError('the reason')\n")
    proc = zygote.run([script], tmp_path, dict(os.environ), timeout=60)
    assert proc.returncode == 1 and "ValueError: the reason" in proc.stderr


def test_a_script_past_its_timeout_is_killed_with_its_children(zygote, tmp_path):
    script = tmp_path / "hangs.py"
    script.write_text("import subprocess, sys, time\n"
                      "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                      "print(child.pid, flush=True)\n"
                      "time.sleep(600)\n")
    start = time.monotonic()
    proc = zygote.run([script], tmp_path, dict(os.environ), timeout=3)
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
    assert zygote.run([ok], tmp_path, dict(os.environ), timeout=60).stdout == "fine\n"


def test_programs_run_side_by_side_as_python_c_and_python_m_would(zygote, tmp_path):
    """Two programs at once, each waiting for a file only the other writes (so neither can end
    until both run), with their own TMPDIR; then ``-m`` as python -m runs a module."""
    import json

    code = """
import json, os, sys, tempfile, time
mine, theirs = sys.argv[1:]
open(mine, "w").close()
for _ in range(600):
    if os.path.exists(theirs):
        break
    time.sleep(0.05)
else:
    sys.exit(9)
print(json.dumps({"argv0": sys.argv[0], "path0": sys.path[0], "tmp": tempfile.gettempdir(),
                  "main": __name__, "zygote": "child" in globals()}))
sys.exit(len(mine) % 7)
"""
    procs = {}
    for name, other in (("a", "bb"), ("bb", "a")):
        (tmp_path / f"tmp-{name}").mkdir()
        procs[name] = zygote.start(["-c", code, tmp_path / name, tmp_path / other], tmp_path,
                                   {**os.environ, "TMPDIR": str(tmp_path / f"tmp-{name}")}, tmp_path / f"{name}.out")
    for name, proc in procs.items():
        assert proc.wait(timeout=60) == len(str(tmp_path / name)) % 7, (tmp_path / f"{name}.out").read_text()
        assert json.loads((tmp_path / f"{name}.out").read_text()) == {
            "argv0": "-c", "path0": "", "tmp": str(tmp_path / f"tmp-{name}"), "main": "__main__", "zygote": False}
    assert procs["a"].args[:2] == [sys.executable, "-c"]

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tool.py").write_text("import sys\nprint(sys.argv, __name__)\nsys.exit(int(sys.argv[1]))\n")
    proc = zygote.start(["-m", "pkg.tool", 4], tmp_path, dict(os.environ), tmp_path / "m.out", tmp_path / "m.err")
    assert proc.wait(timeout=60) == 4, (tmp_path / "m.err").read_text()
    assert (tmp_path / "m.out").read_text() == f"{[str(package / 'tool.py'), '4']} __main__\n"


def test_a_started_program_can_be_waited_for_with_a_timeout_and_killed(zygote, tmp_path):
    proc = zygote.start(["-c", "import time; print('up', flush=True); time.sleep(600)"], tmp_path,
                        dict(os.environ), tmp_path / "out")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=1)
    assert proc.poll() is None and (tmp_path / "out").read_text() == "up\n"
    proc.kill()
    assert proc.wait(timeout=30) == -9 and proc.poll() == -9
