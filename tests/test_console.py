"""What a task run prints (tasks/console.py): the stages and the result, without Luigi's
scheduling lines or TensorFlow's start-up chatter, and everything again with --log-level DEBUG.
The same quiet start for every console script (pipeline/console.py). Real `luigi` command
lines, real console scripts and real TensorFlow imports, in subprocesses."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: TensorFlow's C++ log lines (I/W/E + date), absl's pre-initialisation notice, oneDNN's notice
#: and the CUDA probe.
CHATTER = re.compile(r"^[IWE]\d{4} |^WARNING: All log messages before absl|oneDNN custom operations|(?i:cuda)|cuInit",
                     re.MULTILINE)


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FACEGAN_VERBOSE")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_scheduling_lines_are_dropped_at_info_and_kept_at_debug():
    from tasks.console import QuietScheduling
    logger = logging.getLogger("luigi-interface")
    chatter = logging.LogRecord("luigi-interface", logging.INFO, "", 0,
                                "Informed scheduler that task   %s   has status   %s", ("X_1", "PENDING"), None)
    work = logging.LogRecord("luigi-interface", logging.INFO, "", 0, "[pid 1] Worker running   X()", (), None)
    level = logger.level
    try:
        logger.setLevel(logging.INFO)
        assert not QuietScheduling().filter(chatter) and QuietScheduling().filter(work)
        logger.setLevel(logging.DEBUG)
        assert QuietScheduling().filter(chatter)
    finally:
        logger.setLevel(level)


def test_a_task_run_prints_its_stages_not_the_scheduling(tmp_path):
    command = [sys.executable, "-m", "luigi", "--module", "tasks", "Sample", "--Sample-n", "2", "--local-scheduler",
               "--paths-raw", str(tmp_path / "raw"), "--paths-processed", str(tmp_path / "processed")]
    quiet = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "running   Sample(" in quiet.stderr and "done      Sample(" in quiet.stderr
    assert "Luigi Execution Summary" in quiet.stderr
    for line in ("Informed scheduler", "DEBUG:", "Done scheduling"):
        assert line not in quiet.stderr, quiet.stderr
    assert len(re.findall(r"done      Sample\(", quiet.stderr)) == 1  # each line once
    again = subprocess.run(command + ["--Sample-n", "3", "--log-level", "DEBUG"], cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Informed scheduler" in again.stderr and "DEBUG:" in again.stderr


@pytest.mark.slow
def test_tensorflow_starts_quietly_after_importing_tasks():
    code = ("import logging, sys\n"
            "{setup}\n"
            "import tensorflow as tf\n"
            "tf.reduce_sum(tf.ones(2)).numpy()\n"
            "from absl import logging as absl_logging\n"
            "absl_logging.warning('kept')\n")
    runs = {}
    for name, setup in (("quiet", "import tasks"),
                        ("verbose", "import tasks; logging.getLogger('luigi-interface').setLevel(logging.DEBUG)")):
        proc = subprocess.run([sys.executable, "-c", code.format(setup=setup)], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = proc.stderr
    assert "WARNING: kept" in runs["quiet"]  # real warnings still reach the console, once
    assert runs["quiet"].count("kept") == 1
    _no_chatter_without_the_switch(runs["quiet"], runs["verbose"], "luigi-interface at DEBUG")


#: Each console script of setup.cfg: arguments that make its main stop early (a missing
#: folder), after its quiet start, and its switch that shows everything.
SCRIPTS = {"facegan-align": (["align", "{tmp}/missing", "{tmp}/out"], ["--verbose"])}
#: Console scripts whose main loads TensorFlow itself: their quiet start has a test of its own
#: (the real script, up to loading a model), which covers what SCRIPTS' test would.
LOAD_TENSORFLOW = {"facegan-studio": "test_facegan_studio_starts_quietly"}


def _console_scripts() -> dict[str, str]:
    """``{name: "module:function"}`` of setup.cfg's console_scripts."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines if line.strip())


def _no_chatter_without_the_switch(quiet: str, verbose: str, what: str) -> None:
    """``quiet`` has none of TensorFlow's start-up lines; ``verbose`` (the same start with the
    switch on) shows them, so the first check checks something on this TensorFlow build."""
    assert not CHATTER.search(quiet), quiet
    if not CHATTER.search(verbose):
        pytest.skip(f"this TensorFlow build prints no start-up lines even with {what}: "
                    f"the quiet start was checked, but had nothing to hide")


def test_every_console_script_is_covered():
    assert set(_console_scripts()) == set(SCRIPTS) | set(LOAD_TENSORFLOW)
    assert all(name in globals() for name in LOAD_TENSORFLOW.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_console_script_starts_quietly(name, tmp_path):
    """The script's main runs (and stops early at a missing folder); TensorFlow, imported after
    it in the same process as any later step would, starts without a line."""
    target = _console_scripts()[name]
    module, func = target.split(":")
    stop, switch = SCRIPTS[name]
    code = ("import sys\n"
            f"from {module} import {func} as main\n"
            "try:\n"
            "    rc = main(sys.argv[1:])\n"
            "except SystemExit as exc:\n"
            "    rc = exc.code\n"
            "print('rc', rc, flush=True)\n"
            "import tensorflow as tf\n"
            "tf.reduce_sum(tf.ones(2)).numpy()\n")
    args = [a.format(tmp=tmp_path) for a in stop]
    runs = {}
    for label, extra in (("quiet", []), ("verbose", switch)):
        proc = subprocess.run([sys.executable, "-c", code, *args, *extra], cwd=tmp_path, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "rc 2" in proc.stdout, proc.stdout + proc.stderr[-2000:]
        assert "missing" in proc.stderr  # the script's own one-line error still shows
        runs[label] = proc.stderr
    _no_chatter_without_the_switch(runs["quiet"], runs["verbose"], f"{name} {' '.join(switch)}")


@pytest.mark.slow
def test_facegan_studio_starts_quietly(tmp_path):
    """The real console scripts: ``--help`` of both, and a studio start that loads TensorFlow
    and then refuses an unreadable run folder; ``--log-level debug`` shows everything."""
    script = Path(sys.executable).parent / "facegan-studio"
    studio = [str(script)] if script.is_file() else [sys.executable, "-m", "studio"]
    for command in (studio + ["--help"], [sys.executable, "-m", "pipeline.align", "--help"],
                    [sys.executable, "-m", "pipeline.align", "align", "--help"]):
        proc = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr
        assert not CHATTER.search(proc.stderr), proc.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "generator.keras").write_bytes(b"not a model")
    (run / "model_card.json").write_text("{}")
    runs = {}
    for label, extra in (("quiet", []), ("verbose", ["--log-level", "debug"])):
        proc = subprocess.run(studio + ["--model", str(run), "--port", "1", *extra], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"facegan-studio: --model {run}: cannot load the generator" in proc.stderr, proc.stderr[-2000:]
        runs[label] = proc.stderr
    _no_chatter_without_the_switch(runs["quiet"], runs["verbose"], "--log-level debug")


@pytest.mark.parametrize("value, verbose", [("1", True), ("yes", True), ("0", False), ("false", False), ("", False)])
def test_facegan_verbose_turns_every_quiet_start_off(monkeypatch, value, verbose):
    """FACEGAN_VERBOSE, the switch every command shares: when set, quiet_start hides nothing
    (no import hook, TensorFlow's log level left as it is), whatever the command's own switch."""
    from pipeline.console import _QuietImport, quiet_start
    monkeypatch.setenv("FACEGAN_VERBOSE", value)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # as before the first import
    quiet_start(verbose=False)
    hooked = any(isinstance(f, _QuietImport) for f in sys.meta_path)
    assert hooked is not verbose and ("TF_CPP_MIN_LOG_LEVEL" in os.environ) is not verbose


@pytest.mark.parametrize("user_setting, enabled", [(None, True), ("0", False)])
def test_tensorflow_runs_onednn_on_every_cpu_kind_unless_the_user_says_no(user_setting, enabled):
    """TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI/BF16 or
    AMX (on AVX2 its Eigen matmul ran at half oneDNN's speed); importing model/ turns them on
    everywhere first, and a user's TF_ENABLE_ONEDNN_OPTS=0 is kept."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if user_setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_setting
    code = ("import model, tensorflow, os; from tensorflow.python.util import _pywrap_util_port as port; "
            "print(port.IsMklEnabled(), os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(enabled), "1" if enabled else "0"]
