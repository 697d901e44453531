"""A plan of more tasks than one Luigi scheduler handles well (pipeline.align.shards.TASK_LIMIT)
is one warning line naming the count, the option and the shard size that fits."""
from __future__ import annotations

import functools
import logging
import re

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from pipeline.align import shards
from pipeline.align.shards import TASK_LIMIT, check_plan_size

OPTION = "--DetectAlignFaces-shard-size"


def test_a_plan_within_the_limit_is_quiet(caplog):
    with caplog.at_level(logging.WARNING):
        assert check_plan_size(TASK_LIMIT, 128 * TASK_LIMIT, OPTION, "DetectAlignFaces --dataset x") is None
        assert check_plan_size(1563, 200_000, OPTION, "DetectAlignFaces --dataset celeba") is None
    assert caplog.records == []


def test_imagenet_at_the_default_shard_size_is_one_warning_with_the_size_that_fits(caplog):
    with caplog.at_level(logging.WARNING):
        line = check_plan_size(10_000, 1_281_167, OPTION, "DetectAlignFaces --dataset imagenet")
    assert [r.getMessage() for r in caplog.records] == [line]
    assert TASK_LIMIT == 5000
    assert line == ("DetectAlignFaces --dataset imagenet plans 10,000 tasks for 1,281,167 images, more than "
                    "the 5,000 a Luigi scheduler handles well (it slows past that): set "
                    "--DetectAlignFaces-shard-size 257 or more (4,986 tasks)")
    # 256 would not do: 5,005 shards.
    assert -(-1_281_167 // 256) > TASK_LIMIT >= -(-1_281_167 // 257)


@pytest.mark.parametrize("tasks, images, per_shard, limit", [
    (5001, 5001, 1, 5000), (20_000, 1_280_000, 2, 5000), (7, 7, 1, 3), (10, 9, 2, 5), (3, 1, 1, 1), (4, 2, 2, 1)])
def test_the_size_named_is_the_smallest_that_fits(tasks, images, per_shard, limit):
    line = check_plan_size(tasks, images, OPTION, "X", per_shard=per_shard, limit=limit)
    size = int(re.search(rf"{OPTION} (\d+) or more", line).group(1))
    assert per_shard * -(-images // size) <= max(limit, per_shard)  # fits (a shard's own tasks at least)
    if size > 1 and limit >= per_shard:
        assert per_shard * -(-images // (size - 1)) > limit  # the smallest that fits


def test_detect_align_and_build_records_warn_when_their_plan_is_too_big(luigi_config, caplog, monkeypatch):
    """The tasks count their plans: with a limit of 3, eight photos in shards of two (four
    AlignShard tasks; eight tasks with their RecordShard tasks) warn once each."""
    import tasks
    import tasks.faces

    small = functools.partial(check_plan_size, limit=3)
    monkeypatch.setattr(tasks.faces, "check_plan_size", small)  # DetectAlignFaces' (imported by name)
    monkeypatch.setattr(shards, "check_plan_size", small)  # BuildTFRecords' (imported in run())
    luigi_config("Sample", "n", 8)
    luigi_config("DetectAlignFaces", "shard_size", 2)
    with caplog.at_level(logging.WARNING, logger="pipeline.align.shards"):
        result = luigi.build([tasks.BuildTFRecords(dataset="sample")], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.align.shards"]
    assert lines == [
        "DetectAlignFaces --dataset sample plans 4 tasks for 8 images, more than the 3 a Luigi scheduler "
        "handles well (it slows past that): set --DetectAlignFaces-shard-size 3 or more (3 tasks)",
        "BuildTFRecords --dataset sample (AlignShard and RecordShard) plans 8 tasks for 8 images, more than "
        "the 3 a Luigi scheduler handles well (it slows past that): set --DetectAlignFaces-shard-size 8 or "
        "more (2 tasks)"], lines
