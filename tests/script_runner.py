"""Run Python programs as ``python ...`` would, each in a process forked from one that imported
TensorFlow once; several at a time.

Every fresh Python process pays TensorFlow's import (4-6 s of CPU on the 2-core AVX2 EPYC),
which was most of what a tiny benchmark smoke run or a 4-step training costs. :class:`ScriptRunner`
starts one process (the *zygote*) that imports TensorFlow and Keras and runs nothing; each
program runs in a child forked from it: its own process group, working folder, environment,
argv, ``sys.path[0]``, stdout/stderr and exit code, and a fresh copy of the zygote's memory, so
nothing one program does reaches another. TensorFlow's runtime starts in the child (the zygote
never runs an op), which is why forking after the import is safe, and why each child may still
configure its devices, ``TF_CONFIG`` or threads as a fresh process would.

The difference from a fresh interpreter: a child cannot change what Python or TensorFlow read
when they start (``PYTHONPATH``, ``TF_CPP_MIN_LOG_LEVEL``, ``TF_ENABLE_ONEDNN_OPTS``): the
zygote's environment decides those. So a test of start-up itself needs a real process.
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

#: The zygote: reads one JSON request per line on stdin and forks a child for each, answering
#: ``{"started": pid}`` at once and ``{"exited": pid, "returncode": n}`` when that child ends
#: (children run side by side); at EOF it kills what still runs and ends.
ZYGOTE = r'''
import atexit, json, os, runpy, select, signal, sys, tempfile, traceback, types
from pipeline.console import tensorflow_defaults
tensorflow_defaults()
import tensorflow, keras  # noqa: F401  (the cost every child is spared)

def child(req):
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl+C as in a python run from a shell
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    tempfile.tempdir = None  # importing TensorFlow fixed it from the zygote's TMPDIR
    out = os.open(req["stdout"], os.O_WRONLY | os.O_APPEND)
    err = out if req["stderr"] == req["stdout"] else os.open(req["stderr"], os.O_WRONLY | os.O_APPEND)
    for fd, source in ((0, os.open(os.devnull, os.O_RDONLY)), (1, out), (2, err)):
        os.dup2(source, fd)
    argv = req["argv"]
    try:
        if argv[0] == "-c":  # as python -c: argv[0] "-c", the working folder first on the path
            sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
            main = sys.modules["__main__"] = types.ModuleType("__main__")
            exec(compile(argv[1], "<string>", "exec"), main.__dict__)
        elif argv[0] == "-m":  # as python -m: runpy puts the module's file in argv[0]
            sys.argv, sys.path[0] = ["-m", *argv[2:]], os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv, sys.path[0] = list(argv), os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
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

def say(answer):
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()  # empty before every fork, so no child writes it again

children, pending = set(), b""
while True:
    # Poll for ended children 20 times a second (no SIGCHLD handler for the children to inherit).
    if select.select([0], [], [], 0.05)[0]:
        data = os.read(0, 1 << 16)
        if not data:
            break
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            pid = os.fork()
            if pid == 0:
                child(json.loads(line))
            children.add(pid)
            say({"started": pid})
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        children.discard(pid)
        say({"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})
for pid in children:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
'''


class Child:
    """A program the zygote forked: the part of :class:`subprocess.Popen` the tests use (``pid``,
    ``args``, ``returncode``, :meth:`poll`, :meth:`wait`, :meth:`terminate`, :meth:`kill`); its process group is its
    pid. Its output is in the files it was started with."""

    def __init__(self, runner: ScriptRunner, pid: int, args: list[str]):
        self.runner, self.pid, self.args = runner, pid, args

    @property
    def returncode(self) -> int | None:
        return self.runner._exits.get(self.pid)

    def poll(self) -> int | None:
        """The exit code, or None while it runs; never waits (reads every answer already there,
        so an exit queued behind another child's answer is not missed)."""
        while self.returncode is None and self.runner._pump(time.monotonic()) is not None:
            pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; :class:`subprocess.TimeoutExpired` if it still runs after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            if not self.runner._pump(deadline):
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def terminate(self) -> None:
        """SIGTERM to the program alone, as :meth:`subprocess.Popen.terminate`."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL to its whole process group (what it started too)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ScriptRunner:
    """A zygote process (see the module docstring): :meth:`start` programs side by side, or
    :meth:`run` one to its end."""

    def __init__(self, env: dict[str, str], root: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=root, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self._exits: dict[int, int] = {}
        self._pending = b""
        self._runs = 0

    def _pump(self, deadline: float | None) -> dict | None:
        """Read the zygote's next answer (recording an exit), or None when ``deadline`` (a
        monotonic time) passes first."""
        while b"\n" not in self._pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.proc.stdout], [], [], wait)[0]:
                return None
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not data:
                raise RuntimeError(f"the script runner's zygote exited ({self.proc.wait()})")
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        answer = json.loads(line)
        if "exited" in answer:
            self._exits[answer["exited"]] = answer["returncode"]
        return answer

    def start(self, argv: list, cwd: Path, env: dict[str, str], stdout: Path,
              stderr: Path | None = None) -> Child:
        """``python *argv`` (``[script, ...]``, ``["-c", code, ...]`` or ``["-m", module, ...]``)
        in ``cwd`` with ``env``, writing to the files ``stdout`` and ``stderr`` (created or
        emptied; None: stderr into stdout's file), without waiting for it."""
        for path in {stdout, stderr or stdout}:
            Path(path).write_text("")
        request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "env": env, "stdout": str(stdout),
                   "stderr": str(stderr or stdout)}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        while "started" not in (answer := self._pump(None)):
            pass
        return Child(self, answer["started"], [sys.executable, *request["argv"]])

    def run(self, argv: list, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """``python *argv`` (as :meth:`start`) in ``cwd`` with ``env``, to its end, its output
        captured; after ``timeout`` s its process group is killed and ``returncode`` is None."""
        self._runs += 1
        out, err = (Path(cwd) / f".run-{os.getpid()}-{self._runs}.{name}" for name in ("stdout", "stderr"))
        child = self.start(argv, cwd, env, out, err)
        try:
            returncode = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            returncode = None
        try:
            return subprocess.CompletedProcess(child.args, returncode, out.read_text(), err.read_text())
        finally:
            out.unlink()
            err.unlink()

    def close(self) -> None:
        """End the zygote; it kills the process groups of the children still running."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
