"""Shared fixtures: an isolated Luigi configuration and data folders per test."""
from __future__ import annotations

import os
from pathlib import Path

import luigi
import luigi.configuration
import pytest

# With CI=true, a test skipped for a missing installed component (Chromium, torch, the FID
# Inception file, ...) fails instead: tests/components.py. Tests call its require() helpers.
from components import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401
from luigi.task_register import Register
from script_runner import ScriptRunner

from pipeline.console import tensorflow_defaults

ROOT = Path(__file__).resolve().parents[1]

# Keep TensorFlow quiet and on the CPU threads pytest leaves it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch's OpenMP threads spin while they wait for work; with four test workers on two cores the
# spinning takes the cores from the other workers (bench/torch_peer.py's smoke run beside three
# busy loops: 20.4 s of CPU spinning, 13.1 s passive, and a shorter wall time).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
tensorflow_defaults()  # TensorFlow's oneDNN kernels on every CPU kind, as every command has them
#: The environment the run started with: the zygote's, whatever a test has changed since.
START_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

#: The test files that take longest (35-390 s each with four workers on the 2-core AVX2-only
#: EPYC, 2026-12-04, third session), longest first. ``make test`` hands whole files to its workers
#: (``--dist loadfile``) in collection order (``--no-loadscope-reorder``: xdist would otherwise
#: hand out the files with the most tests first, and the longest files, which have few tests,
#: would start last and run alone at the end): these go first so that the last files handed out
#: are short ones.
LONGEST_FIRST = ("test_variants.py", "test_tune.py", "test_compare.py", "test_bench_smoke.py",
                 "test_console.py", "test_egan.py", "test_train_budget.py", "test_storage.py",
                 "test_multiworker.py", "test_train.py", "test_studio_browser.py", "test_ema_augment.py",
                 "test_core.py", "test_complete.py", "test_luigid.py", "test_studio_jobs.py",
                 "test_faces.py", "test_crash_recovery.py")


def pytest_collection_modifyitems(config, items):
    """The files of ``LONGEST_FIRST`` first, in its order; the rest after, in their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


def pytest_runtest_setup(item):
    """``ONEDNN_MAX_CPU_ISA=AVX2 make test`` runs the suite as an AVX2-only CPU would (the float32
    paths ``auto`` picks there). A CPU that really lacks bfloat16 units has TensorFlow emulate
    bfloat16; under the cap TensorFlow still sends it to oneDNN, which aborts the process
    (model/cpu.py ``capped_reason``). So a test whose id names bfloat16 is skipped under the cap,
    with that reason: a choice of the machine's settings, not a missing component."""
    if "bfloat16" in item.nodeid:
        from model.cpu import capped_reason
        reason = capped_reason("mixed_bfloat16")
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def zygote():
    """Programs run as ``python ...`` would, side by side, each forked from one process that
    imported TensorFlow once for the whole run of this pytest worker (tests/script_runner.py):
    for tests of what a program does, not of how it starts."""
    runner = ScriptRunner(START_ENV, ROOT)
    yield runner
    runner.close()


@pytest.fixture
def luigi_config(tmp_path):
    """Point raw/ and processed/ at ``tmp_path`` and let a test set config keys.

    Yields ``set(section, key, value)``; every key set is restored afterwards,
    and Luigi's task-instance cache is cleared so new values take effect.
    """
    config = luigi.configuration.get_config()
    saved = []

    def set_(section, key, value):
        if not config.has_section(section):
            config.add_section(section)
        old = config.get(section, key, None)
        saved.append((section, key, old))
        config.set(section, key, str(value))
        Register.clear_instance_cache()

    set_("paths", "raw", tmp_path / "raw")
    set_("paths", "processed", tmp_path / "processed")
    yield set_
    for section, key, old in reversed(saved):
        if old is None:
            config.remove_option(section, key)
        else:
            config.set(section, key, old)
    Register.clear_instance_cache()


@pytest.fixture
def started_tasks():
    """Records the task ids Luigi starts while the test runs."""
    started = []

    def on_start(task):
        started.append(task.task_id)

    luigi.Task.event_handler(luigi.Event.START)(on_start)
    yield started
    luigi.Task._event_callbacks[luigi.Task][luigi.Event.START].discard(on_start)


@pytest.fixture
def tiny_feature_network(tmp_path):
    """A small random-weight ``.keras`` feature network (16x16 RGB -> 8 features, seeded) for
    EvaluateGenerator settings, so that neither torch nor the Inception file is needed."""
    import keras
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                            keras.layers.GlobalAveragePooling2D()])
    path = tmp_path / "features.keras"
    net.save(path)
    return path
