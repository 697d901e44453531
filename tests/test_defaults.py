"""Defaults stated once: a setting's default lives in pipeline/ (or, for a task-only
setting, in the task), and luigi.cfg, the parameter table of docs/parameters.md and the
command line either take it from there or agree with it, as checked here."""
from __future__ import annotations

import configparser
import dataclasses
import re
from pathlib import Path

import luigi

import tasks
from pipeline.align.aligner import FaceAligner
from pipeline.align.cli import build_parser
from pipeline.crawl.crawler import CrawlConfig
from pipeline.net.httpclient import CRAWL, Policy

ROOT = Path(__file__).resolve().parents[1]
#: The tasks and configs whose defaults are checked here: the pipeline side, training,
#: tuning, evaluation and export.
OWNED = {"Sample": tasks.Sample, "DetectAlignFaces": tasks.DetectAlignFaces,
         "AlignShard": tasks.AlignShard, "BuildTFRecords": tasks.BuildTFRecords,
         "RecordShard": tasks.RecordShard, "RecordsDaily": tasks.RecordsDaily,
         "CrawlImages": tasks.CrawlImages, "CrawlDays": tasks.CrawlDays,
         "DownloadCelebA": tasks.DownloadCelebA, "DownloadLSUN": tasks.DownloadLSUN,
         "ImportImageNet": tasks.ImportImageNet, "lsun": tasks.lsun, "paths": tasks.paths,
         "TrainGAN": tasks.TrainGAN, "TrainDCGAN": tasks.TrainDCGAN, "TrainEGAN": tasks.TrainEGAN,
         "TuneGAN": tasks.TuneGAN, "EvaluateGenerator": tasks.EvaluateGenerator,
         "CompareRuns": tasks.CompareRuns, "ExportSamples": tasks.ExportSamples,
         "ExportAttributeSweep": tasks.ExportAttributeSweep,
         "TrainAttributeClassifier": tasks.TrainAttributeClassifier,
         "FitAttributeDirections": tasks.FitAttributeDirections, "CompleteFaces": tasks.CompleteFaces,
         "CompareGANs": tasks.CompareGANs, "TrainClassifier": tasks.TrainClassifier,
         "TrainEncoder": tasks.TrainEncoder, "DownloadMNIST": tasks.DownloadMNIST,
         "DownloadCIFAR10": tasks.DownloadCIFAR10, "TrainCompletion": tasks.TrainCompletion}
#: docs/parameters.md cells that describe a default too long for the table (luigi.cfg states it).
DESCRIBED = {("TrainAttributeClassifier", "attributes"), ("FitAttributeDirections", "attributes"),
             ("DownloadMNIST", "files"), ("DownloadCIFAR10", "files"), ("DownloadCIFAR10", "batches")}
#: A table default that is a note in parentheses: ``(empty...)`` is the empty value (None
#: for an optional parameter), ``(required)`` a parameter without a default.
EMPTY, REQUIRED = "", object()


def same(param: luigi.Parameter, text: str) -> bool:
    """Whether the luigi.cfg / docs/parameters.md ``text`` is the parameter's default."""
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
            if not same(params[key], value):
                differ.append(f"[{section}] {key} = {value} (code: {params[key]._default!r})")
    assert differ == []


PARAMETERS_DOC = ROOT / "docs" / "parameters.md"


def readme_rows() -> list[tuple[str, str, object]]:
    """``(task, parameter, default)`` from the parameter table (docs/parameters.md, moved
    there from the README): a row names one or
    more tasks (``TrainGAN`` / ``TrainDCGAN``; an empty first cell continues the tasks above)
    and states one default per parameter it names, comma separated; a note in parentheses
    after a value (``0 (all)``) is not part of it."""
    rows, names = [], []
    text = PARAMETERS_DOC.read_text()
    table = text[text.index("| Task | Parameter | Default | Meaning |"):]
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0]) or names
        params = re.findall(r"`(\w+)`", cells[1])
        values = [cells[2]] if len(params) == 1 else re.split(r",\s*(?![^(]*\))", cells[2])
        assert len(values) == len(params), f"docs/parameters.md row {line!r}: one default per parameter"
        rows += [(task, p, default_of(v)) for task in names for p, v in zip(params, values)]
    return rows


def default_of(cell: str):
    """The default a table value states: ``60 (sample)`` -> ``60``, ``(empty: lr)`` -> EMPTY,
    ``(required)`` -> REQUIRED, an empty cell -> None (none stated); anything else as it is."""
    if not cell.strip():
        return None
    value, note = re.fullmatch(r"(.*?)\s*(?:\((.*)\))?", cell.strip()).groups()
    if value or note is None:
        return value
    if note.startswith("empty"):
        return EMPTY
    return REQUIRED if note == "required" else cell


def test_readme_table_states_the_defaults_of_the_code():
    rows = [(t, p, v) for t, p, v in readme_rows() if t in OWNED and v is not None and (t, p) not in DESCRIBED]
    assert len(rows) >= 60
    assert {t for t, _, _ in rows} == set(OWNED) - {"CrawlImages", "CrawlDays", "DownloadCelebA", "DownloadLSUN",
                                                      "ImportImageNet", "RecordsDaily", "lsun", "CompareRuns"}
    differ = []
    for task, name, value in rows:
        params = dict(OWNED[task].get_params())
        assert name in params, f"docs/parameters.md: {task} has no parameter {name!r}"
        if value is REQUIRED:
            ok = params[name]._default is luigi.parameter._no_value
        else:
            ok = params[name]._default is not luigi.parameter._no_value and same(params[name], value)
        if not ok:
            differ.append(f"{task}.{name}: docs/parameters.md {value if value is not REQUIRED else '(required)'} "
                          f"(code: {params[name]._default!r})")
    assert differ == []


def test_file_lists_are_data_beside_their_sources():
    """URLs, sizes and checksums live in pipeline/sources/checksums/ (luigi.cfg only overrides)."""
    from pipeline.sources.base import checksums
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "luigi.cfg")
    for task, name in (("DownloadCelebA", "celeba"), ("DownloadMNIST", "mnist"), ("DownloadCIFAR10", "cifar10")):
        data = checksums(name)
        param = dict(OWNED[task].get_params())["files"]
        assert param.normalize(param._default) == param.normalize(data["files"]) and data["files"], task
        assert all(f["name"] and f["urls"] and f["size"] > 0 and (f.get("sha256") or f.get("md5"))
                   for f in data["files"]), task
        assert "files" not in cfg[task] and "batches" not in cfg[task], task
    assert len(checksums("cifar10")["batches"]) == 7


def test_task_parameters_take_their_defaults_from_pipeline():
    aligner = {f.name: f.default for f in dataclasses.fields(FaceAligner) if f.init}
    for name, param in tasks.DetectAlignFaces.get_params():
        if name in aligner:
            assert param._default == aligner[name], name
    cli = build_parser()._subparsers._group_actions[0].choices["align"]
    for action in cli._actions:
        if action.dest in aligner and action.dest != "all_faces":
            assert action.default == aligner[action.dest], action.dest
    # CrawlImages: one parameter per CrawlConfig field and per field of its fetch policy, same
    # default and description (tasks.common.with_settings); the policy's defaults are the crawl
    # preset of the one httpclient.Policy.
    params = dict(tasks.CrawlImages.get_params())
    fetch = {f.name: getattr(CrawlConfig.fetch, f.name) for f in dataclasses.fields(Policy)}
    crawl = {f.name: (f.default, f.metadata["help"]) for f in dataclasses.fields(CrawlConfig) if "help" in f.metadata}
    crawl |= {f.name: (fetch[f.name], f.metadata["help"]) for f in dataclasses.fields(Policy)}
    assert len(crawl) == 19 and CrawlConfig.fetch is CRAWL
    for name, (default, help_) in crawl.items():
        expected = 0 if default is None else list(default) if isinstance(default, tuple) else default
        assert (params[name]._default, params[name].description) == (expected, help_), name
        assert not params[name].significant, name
    from model.config import EGANOptions
    egan, options = dict(tasks.TrainEGAN.get_params()), EGANOptions()
    for name in ("weight", "mode", "c_max", "c_distribution"):
        assert egan[name]._default == getattr(options, name), name
    assert egan["extractor"]._default.split(",") == options.extractors
    fetch = dict(tasks.DownloadCelebA.get_params())
    assert (fetch["retries"]._default, fetch["timeout"]._default) == (Policy.retries, Policy.read_timeout)


def test_readme_shows_the_command_make_run_runs():
    make = (ROOT / "Makefile").read_text()
    sample_run = re.search(r"^SAMPLE_RUN := (.*?)(?<!\\)\n", make, re.M | re.S).group(1)
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"```sh\n(luigi --module tasks ExportSamples .*?)\n```", readme, re.S).group(1)
    flags = sample_run.replace("\\\n", " ").split()
    assert flags and " ".join(flags) in " ".join(command.replace("\\\n", " ").split())
