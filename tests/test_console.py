"""What a task run prints (tasks/console.py): the stages and the result, without Luigi's
scheduling lines or TensorFlow's start-up chatter, and everything again with --log-level DEBUG.
Real `luigi` command lines and real TensorFlow imports, in subprocesses."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: TensorFlow's C++ log lines (I/W/E + date) and absl's pre-initialisation notice.
CHATTER = re.compile(r"^[IWE]\d{4} |^WARNING: All log messages before absl|oneDNN custom operations|cuda",
                     re.MULTILINE)


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
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
    for name, setup in (("plain", ""), ("quiet", "import tasks"),
                        ("verbose", "import tasks; logging.getLogger('luigi-interface').setLevel(logging.DEBUG)")):
        proc = subprocess.run([sys.executable, "-c", code.format(setup=setup)], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = proc.stderr
    assert not CHATTER.search(runs["quiet"]), runs["quiet"]
    assert "WARNING: kept" in runs["quiet"]  # real warnings still reach the console, once
    assert runs["quiet"].count("kept") == 1
    if CHATTER.search(runs["plain"]):  # this TensorFlow build does chatter: --log-level DEBUG shows it
        assert CHATTER.search(runs["verbose"]), runs["verbose"]
