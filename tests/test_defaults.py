"""Defaults stated once: a setting's default lives in pipeline/ (or, for a task-only
setting, in the task), and luigi.cfg, the README's table and the command line
either take it from there or agree with it, as checked here."""
from __future__ import annotations

import configparser
import dataclasses
import re
from pathlib import Path

import luigi

import tasks
from pipeline.crawl import CrawlConfig
from pipeline.faces import FaceAligner
from pipeline.faces_cli import build_parser
from pipeline.httpclient import Policy

ROOT = Path(__file__).resolve().parents[1]
#: The pipeline-side tasks and configs whose defaults are checked here.
OWNED = {"Sample": tasks.Sample, "DetectAlignFaces": tasks.DetectAlignFaces,
         "AlignShard": tasks.AlignShard, "BuildTFRecords": tasks.BuildTFRecords,
         "RecordShard": tasks.RecordShard, "RecordsDaily": tasks.RecordsDaily,
         "CrawlImages": tasks.CrawlImages, "CrawlDays": tasks.CrawlDays,
         "DownloadCelebA": tasks.DownloadCelebA, "DownloadLSUN": tasks.DownloadLSUN,
         "ImportImageNet": tasks.ImportImageNet, "lsun": tasks.lsun, "paths": tasks.paths}
#: Keys whose value is data, not a default: the list of CelebA's official files.
DATA_KEYS = {("DownloadCelebA", "files")}


def same(param: luigi.Parameter, text: str) -> bool:
    """Whether the luigi.cfg / README ``text`` is the parameter's default."""
    return param.normalize(param.parse(text)) == param.normalize(param._default)


def test_luigi_cfg_states_the_defaults_of_the_code():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "luigi.cfg")
    differ = []
    for section, task in OWNED.items():
        if not cfg.has_section(section):
            continue
        params = dict(task.get_params())
        for key, value in cfg[section].items():
            assert key in params, f"[{section}] {key} in luigi.cfg is no parameter"
            if (section, key) not in DATA_KEYS and not same(params[key], value):
                differ.append(f"[{section}] {key} = {value} (code: {params[key]._default!r})")
    assert differ == []


def readme_rows() -> list[tuple[str, str, str]]:
    """``(task, parameter, default)`` from the README's parameter table."""
    rows, task = [], None
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| Task | Parameter | Default | Meaning |"):]
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0])
        task = names[0] if names else task
        params = re.findall(r"`(\w+)`", cells[1])
        values = [cells[2]] if len(params) == 1 else [v.strip() for v in cells[2].split(",")]
        rows += [(task, p, v) for p, v in zip(params, values, strict=True)]
    return rows


def test_readme_table_states_the_defaults_of_the_code():
    rows = [(t, p, v) for t, p, v in readme_rows() if t in OWNED and v]
    assert len(rows) >= 20
    differ = [f"{t}.{p}: README {v}" for t, p, v in rows
              if not same(dict(OWNED[t].get_params())[p], v)]
    assert differ == []


def test_task_parameters_take_their_defaults_from_pipeline():
    aligner = {f.name: f.default for f in dataclasses.fields(FaceAligner) if f.init}
    for name, param in tasks.DetectAlignFaces.get_params():
        if name in aligner:
            assert param._default == aligner[name], name
    cli = build_parser()._subparsers._group_actions[0].choices["align"]
    for action in cli._actions:
        if action.dest in aligner and action.dest != "all_faces":
            assert action.default == aligner[action.dest], action.dest
    crawl = {f.name: f.default for f in dataclasses.fields(CrawlConfig)}
    assert dict(tasks.CrawlImages.get_params())["max_pixels"]._default == crawl["max_pixels"]
    fetch = dict(tasks.DownloadCelebA.get_params())
    assert (fetch["retries"]._default, fetch["timeout"]._default) == (Policy.retries, Policy.read_timeout)
