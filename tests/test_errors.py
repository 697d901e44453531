"""Errors a user can read: `luigi --module tasks ...` with a bad setting prints one
line naming the parameter, the value and the fix, before anything runs; the
traceback only when asked for. Runs the real `luigi` command in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import luigi
import pytest

import tasks
from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def run_luigi(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m luigi --module tasks ARGS --local-scheduler`` from the repository
    root (its luigi.cfg), with raw/ and processed/ under ``tmp_path``."""
    cmd = [sys.executable, "-m", "luigi", "--module", "tasks", *args, "--local-scheduler",
           "--paths-raw", str(tmp_path / "raw"), "--paths-processed", str(tmp_path / "processed")]
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    environ.pop("FACEGAN_TRACEBACK", None) if "FACEGAN_TRACEBACK" not in env else None
    return subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)


def lines_with(proc: subprocess.CompletedProcess, text: str) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if text in line]


@pytest.mark.parametrize("args, where, says", [
    (["Sample", "--Sample-n", "0"], "[Sample] n = 0", "must be at least 1"),
    (["TrainDCGAN", "--TrainDCGAN-precision", "foo"], "[TrainDCGAN] precision = 'foo'",
     "not a valid choice"),
    (["DetectAlignFaces", "--DetectAlignFaces-size", "4"], "[DetectAlignFaces] size = 4",
     "must be at least 8"),
    (["BuildTFRecords", "--BuildTFRecords-splits", "train=0.9"], "[BuildTFRecords] splits",
     "add up to 1"),
    (["TrainGAN", "--precision", "foo"], "[TrainGAN] precision = 'foo'", "not a valid choice"),
    (["TrainGAN", "--batch-size", "0"], "[TrainGAN] batch_size = 0", "must be >= 1"),
    (["Sample", "--n", "x"], "[Sample] n = 'x'", "invalid literal"),
])
def test_a_bad_setting_is_one_line_naming_parameter_value_and_fix(tmp_path, args, where, says):
    proc = run_luigi(tmp_path, *args)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 40, output  # [retcode] unhandled_exception: the task could not be built
    assert "Traceback" not in output, output
    found = lines_with(proc, where)
    assert len(found) == 1, output
    flag = "--" + where[1:].split("]")[0] + "-" + where.split("] ")[1].split(" ")[0].replace("_", "-")
    assert says in found[0] and flag in found[0], found[0]
    assert not (tmp_path / "raw").exists()  # nothing ran


@pytest.mark.parametrize("flag, value, where", [
    ("--DetectAlignFaces-jobs", "-1", "[DetectAlignFaces] jobs = -1: must be at least 0"),
    ("--DetectAlignFaces-mode", "foo", "[DetectAlignFaces] mode = 'foo': foo is not a valid choice"),
])
def test_an_upstream_bad_setting_stops_the_run_before_anything_runs(tmp_path, flag, value, where):
    proc = run_luigi(tmp_path, "BuildTFRecords", flag, value, "--Sample-n", "4")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 35, output  # [retcode] scheduling_error
    assert "Traceback" not in output
    found = lines_with(proc, where)
    assert len(found) == 1 and flag in found[0]
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_traceback_is_printed_when_asked_for(tmp_path, how):
    if how == "flag":
        proc = run_luigi(tmp_path, "Sample", "--Sample-n", "0", "--errors-traceback")
    else:
        proc = run_luigi(tmp_path, "Sample", "--Sample-n", "0", FACEGAN_TRACEBACK="1")
    output = proc.stdout + proc.stderr
    assert "Traceback (most recent call last)" in output and "ConfigError" in output


def test_luigi_parameter_errors_read_from_a_formatted_traceback(luigi_config):
    """Luigi logs errors of complete() as text only: the same one line comes from it."""
    import traceback

    from tasks.errors import one_line_from_text
    luigi_config("DetectAlignFaces", "mode", "foo")
    try:
        tasks.DetectAlignFaces()
    except ValueError:
        text = traceback.format_exc()
    assert one_line_from_text(text).startswith("[DetectAlignFaces] mode: foo is not a valid choice")
    try:
        tasks.Sample(n=0)
    except ConfigError:
        text = traceback.format_exc()
    assert one_line_from_text(text).startswith("[Sample] n = 0: must be at least 1")


def test_tasks_refuse_bad_values_when_built(luigi_config):
    with pytest.raises(ConfigError, match=r"^\[Sample\] n = 0: must be at least 1"):
        tasks.Sample(n=0)
    for params, where in [({"size": 4}, "size"), ({"margin": 0.5}, "margin"),
                          ({"upsample": 9}, "upsample"), ({"shard_size": 0}, "shard_size"),
                          ({"jobs": -2}, "jobs"), ({"dataset": "nope"}, "dataset")]:
        with pytest.raises(ConfigError, match=rf"^\[DetectAlignFaces\] {where} = "):
            tasks.DetectAlignFaces(**params)
    with pytest.raises(ConfigError, match=r"^\[BuildTFRecords\] splits = 'train=2'"):
        tasks.BuildTFRecords(splits="train=2")
    with pytest.raises(ConfigError, match=r"^\[DownloadLSUN\] category = 'bedrooms'"):
        tasks.DownloadLSUN(category="bedrooms")
    with pytest.raises(ConfigError, match=r"^\[ImportImageNet\] synsets = 'cat'"):
        tasks.ImportImageNet(synsets="cat")
    with pytest.raises(ConfigError, match=r"^\[CrawlImages\] max_pages = 0"):
        tasks.CrawlImages(date=luigi.DateParameter().parse("2026-11-22"), max_pages=0)
    with pytest.raises(ConfigError, match=r"^\[DownloadCelebA\] timeout = 0"):
        tasks.DownloadCelebA(timeout=0)
