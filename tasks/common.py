"""What every task shares: the paths config, output versions, progress reporting."""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import luigi
from luigi.task import flatten

from pipeline.versions import digest

#: Non-public networks (or ``address:port`` entries) that downloads and crawls
#: may connect to. Empty: public addresses only. Tests on 127.0.0.1 set it; it
#: is deliberately no task parameter, so no luigi.cfg or command line can open
#: the address guard (pipeline/net/netguard.py).
ALLOW_NETWORKS: tuple[str, ...] = ()


class paths(luigi.Config):
    """Where inputs and derived data live (``[paths]`` in luigi.cfg)."""
    raw = luigi.Parameter(default="raw", description="Folder of downloaded, crawled and generated inputs.")
    processed = luigi.Parameter(default="processed", description="Folder of everything derived.")
    cache = luigi.Parameter(default="cache", description="Local mirror and object cache of raw/processed "
                            "when they are bucket URLs (s3://bucket/prefix; docs/scale.md).")


def defaults_of(cls) -> dict[str, object]:
    """The field defaults of a dataclass (``FaceAligner``, ``CrawlConfig``, ...).

    Task parameters take their defaults from the plain-Python object they
    configure, so every default is stated once, in pipeline/.
    """
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def _parameter(field: dataclasses.Field, default, **kw) -> luigi.Parameter:
    """The Luigi parameter of one settings field, typed by its annotation. An optional number
    (``int | None``) whose default is None becomes 0, meaning None (see :func:`values_of`)."""
    kind = str(field.type)
    help_ = field.metadata["help"]
    if kind.startswith("Sequence"):
        return luigi.ListParameter(default=list(default), description=help_, **kw)
    cls = (luigi.IntParameter if kind.startswith("int") else luigi.FloatParameter if kind.startswith("float")
           else luigi.Parameter)
    return cls(default=0 if default is None else default, description=help_, **kw)


def with_settings(*sources, **kw):
    """A class decorator adding one Luigi parameter per field of plain-Python settings, so a
    task states no default or description of its own: each source is a settings dataclass (its
    field defaults) or an instance of one (its values are the defaults), ``(source, skip)`` to
    leave fields out; only fields with a ``help`` in their metadata become parameters. ``kw``
    go to every parameter (e.g. ``significant=False``)."""
    def add(task_cls):
        for source in sources:
            source, skip = source if isinstance(source, tuple) else (source, ())
            for f in dataclasses.fields(source):
                if f.name not in skip and "help" in f.metadata:
                    default = f.default if isinstance(source, type) else getattr(source, f.name)
                    param = _parameter(f, default, **kw)
                    setattr(task_cls, f.name, param)
                    param.__set_name__(task_cls, f.name)  # what a class body's assignment does
        return task_cls
    return add


def values_of(task: luigi.Task, settings, skip=()) -> dict[str, object]:
    """The values of ``task``'s parameters made by :func:`with_settings` from ``settings``, as
    the dataclass takes them (0 -> None for an optional number, lists -> tuples)."""
    out = {}
    for f in dataclasses.fields(settings):
        if f.name in skip or "help" not in f.metadata:
            continue
        value = getattr(task, f.name)
        if "None" in str(f.type) and value == 0:
            value = None
        out[f.name] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


def _root(root: str) -> Path:
    """A ``[paths]`` root as a local folder: itself, or its mirror when it is a bucket URL."""
    from pipeline.storage import is_url, mirror_folder
    return mirror_folder(paths().cache, root.rstrip("/")) if is_url(root) else Path(root)


def raw_dir(*parts: str) -> Path:
    return Path(_root(paths().raw), *parts)


def processed_dir(*parts: str) -> Path:
    return Path(_root(paths().processed), *parts)


def upstream(task: luigi.Task) -> list[luigi.Task]:
    """The tasks whose outputs define ``task``'s: its ``requires()``, or its
    ``version_inputs()`` where some requirements are only how the work is cut
    (DetectAlignFaces requires its shard tasks; its raw task defines it)."""
    inputs = getattr(task, "version_inputs", None)
    return flatten(inputs() if inputs is not None else task.requires())


def version(task: luigi.Task, family: str | None = None) -> str:
    """A short hash of the task's parameters and of everything upstream.

    Output folders are named by it, so changing any setting of any upstream
    stage (say, the alignment mode) writes new outputs instead of silently
    reusing stale ones, while re-running with the same settings finds them.
    ``family`` stands for the task's own family name where two task classes
    mean the same work (TrainDCGAN is TrainGAN with variant dcgan). A parameter a
    task gained later is a key of its ``added_later``, with the value every run made
    before it had (what the task did without it): left out while at that value, so
    those runs keep their folders, also if the parameter's default changes later.
    """
    params = task.to_str_params(only_significant=True)
    declared = dict(task.get_params())
    for name, before in getattr(task, "added_later", {}).items():
        if params.get(name) == declared[name].serialize(before):
            del params[name]
    return digest([family or task.get_task_family(), params,
                   sorted(version(t) for t in upstream(task))])


def describe(task: luigi.Task) -> dict:
    """Parameters of ``task`` and its upstream tasks, for a ``lineage.json``."""
    return {"task": task.get_task_family(), "params": task.to_str_params(only_significant=True),
            "requires": [describe(t) for t in upstream(task)]}


def report_records(path: str | Path, key: str, value) -> bool:
    """Whether the JSON report at ``path`` exists and holds ``value`` under ``key``: a
    report made from other inputs (photos, runs, settings) is out of date."""
    import json

    try:
        return json.loads(Path(path).read_text()).get(key) == value
    except (OSError, ValueError):
        return False


class Progress:
    """Reports ``done / total`` to the Luigi scheduler and, on a terminal, as a tqdm bar;
    elsewhere (a log, a pipe) as a log line at each quarter."""

    def __init__(self, task: luigi.Task, total: int, what: str, every: int = 1):
        from tqdm import tqdm
        self.task, self.total, self.what, self.every = task, max(total, 1), what, max(every, 1)
        self.bar = tqdm(total=total, desc=f"{task.get_task_family()} {what}",
                        disable=not sys.stderr.isatty(), leave=False)
        self.done = 0

    def __call__(self, done: int, total: int | None = None, extra: dict | None = None) -> None:
        if total and total != self.total:  # the total was fixed on the way (a training budget)
            self.total = self.bar.total = total
            self.bar.refresh()
        self.bar.update(done - self.done)
        if self.bar.disable and 4 * done // self.total > 4 * self.done // self.total:
            logging.getLogger("luigi-interface").info("%s %s: %d/%d", self.task.get_task_family(), self.what,
                                                      done, self.total)
        self.done = done
        if done % self.every == 0 or done == self.total:
            self.task.set_progress_percentage(round(100 * done / self.total, 1))
            note = "" if not extra else " " + " ".join(f"{k}={v:.3g}" for k, v in extra.items())
            self.task.set_status_message(f"{done}/{self.total} {self.what}{note}")

    def close(self) -> None:
        self.bar.close()


class Report:
    """Adapts a pipeline ``progress(done, total)`` callback to :class:`Progress`.

    A new Progress starts whenever the total changes (each file of a
    download); counts are divided by ``unit`` (bytes are shown in MiB) and
    forwarded only when the scaled count moves, so the scheduler is not
    called once per 64 KiB chunk.
    """

    def __init__(self, task: luigi.Task, what: str, unit: int = 1):
        self.task, self.what, self.unit = task, what, unit
        self.total: int | None = None
        self.progress: Progress | None = None
        self.last = -1

    def __call__(self, done: int, total: int | None) -> None:
        if self.progress is None or total != self.total:
            self.close()
            self.total, self.last = total, -1
            self.progress = Progress(self.task, max(1, (total or 0) // self.unit), self.what)
        scaled = done // self.unit
        if scaled != self.last:
            self.last = scaled
            self.progress(scaled)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
