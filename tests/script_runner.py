"""Run Python scripts as ``python script args`` would, each in a process forked from one that
imported TensorFlow once.

Every fresh Python process pays TensorFlow's import (4-5 s of CPU on the 2-core AVX2 EPYC),
which was most of what a tiny benchmark smoke run costs. :class:`ScriptRunner` starts one
process (the *zygote*) that imports TensorFlow and Keras and runs nothing; each script runs
in a child forked from it: its own process group, working folder, environment, argv,
``sys.path[0]`` (the script's folder), stdout/stderr and exit code, and a fresh copy of the
zygote's memory, so nothing one script does reaches the next. TensorFlow's runtime starts in
the child (the zygote never runs an op), which is why forking after the import is safe.

The difference from a fresh interpreter: a script cannot change what TensorFlow reads at
import (``TF_*`` environment variables): the zygote's environment decides those.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

#: The zygote: reads one JSON request per line from stdin, forks, answers ``{"pid"}`` at
#: once and ``{"returncode"}`` when the child ends; ends at EOF.
ZYGOTE = r'''
import atexit, json, os, runpy, sys, traceback
from pipeline.console import tensorflow_defaults
tensorflow_defaults()
import tensorflow, keras  # noqa: F401  (the cost every child is spared)

def child(req):
    os.setsid()
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["stdout"], os.O_WRONLY),
                            (2, req["stderr"], os.O_WRONLY)):
        os.dup2(os.open(path, flags), fd)
    sys.argv = [req["script"], *req["args"]]
    sys.path[0] = os.path.dirname(os.path.abspath(req["script"]))
    try:
        runpy.run_path(req["script"], run_name="__main__")
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(req)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
'''


class ScriptRunner:
    """A zygote process (see the module docstring); :meth:`run` one script at a time."""

    def __init__(self, env: dict[str, str], root: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=root, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)

    def _answer(self, deadline: float | None) -> dict | None:
        """The zygote's next answer, or None when ``deadline`` (a monotonic time) passes first."""
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the script runner's zygote exited ({self.proc.wait()})")
        return json.loads(line)

    def run(self, script: Path, args: list, cwd: Path, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess:
        """``python script args`` in ``cwd`` with ``env``; after ``timeout`` s its process group
        is killed and ``returncode`` is None."""
        out, err = Path(cwd) / f".{script.stem}.stdout", Path(cwd) / f".{script.stem}.stderr"
        out.write_text("")
        err.write_text("")
        request = {"script": str(script), "args": [str(a) for a in args], "cwd": str(cwd), "env": env,
                   "stdout": str(out), "stderr": str(err)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = self._answer(None)["pid"]
        done = self._answer(time.monotonic() + timeout)
        returncode = None if done is None else done["returncode"]
        if done is None:
            os.killpg(pid, signal.SIGKILL)
            self._answer(None)
        command = [sys.executable, str(script), *map(str, args)]
        return subprocess.CompletedProcess(command, returncode, out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
