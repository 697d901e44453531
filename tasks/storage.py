"""Object storage for every task: ``[paths] raw`` / ``processed`` as ``s3://bucket/prefix``.

The one place tasks meet :mod:`pipeline.storage`. With local roots (the default) nothing here
does anything: :func:`target` is ``luigi.LocalTarget``. With a URL root:

* every task's outputs are :func:`target` objects whose ``exists()`` asks the bucket (a file's
  object; a folder's ``_MANIFEST.json``);
* :func:`install` wraps every task class's ``run()``: before it, the outputs of the tasks it
  requires (and of those it yields) are pulled into the local mirror; after it, what it wrote
  under its output folders (:func:`areas`) is pushed, markers last. A killed run pushes nothing;
* a raw task found complete is pulled while scheduling, since planning lists its photos;
* the first check of any output makes sure the bucket can be read and written (one line naming
  the setting to fix otherwise), before anything runs.

``[paths] cache`` holds the mirror and the content-addressed objects; ``[s3] endpoint_url`` the
endpoint of an S3-compatible server (MinIO, Ceph, moto); credentials come from the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or ``AWS_PROFILE``), never from luigi.cfg.
"""
from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path

import luigi
from luigi.task import flatten

from pipeline.storage import Root, StorageError, Store, is_url, mirror_folder
from tasks.common import paths
from tasks.errors import ConfigError

LOG = logging.getLogger("luigi-interface")


class s3(luigi.Config):
    """``[s3]``: the S3-compatible server behind ``s3://`` roots."""
    endpoint_url = luigi.Parameter(default="", description="Endpoint of an S3-compatible server, "
                                   "e.g. http://minio:9000; empty for AWS S3 itself.")


_STORES: dict[tuple, Store | None] = {}
_CHECKED: set[tuple] = set()


def store() -> Store | None:
    """The store of the current ``[paths]`` (None when both roots are local folders); checked
    against the bucket once per setting (:meth:`Store.check`), opened once per process."""
    p = paths()
    setting = (p.raw, p.processed, p.cache, s3().endpoint_url)
    key = (*setting, os.getpid())  # a forked worker opens its own connections
    if key not in _STORES:
        roots = [Root(name, url.rstrip("/"), mirror_folder(p.cache, url.rstrip("/")))
                 for name, url in (("raw", p.raw), ("processed", p.processed)) if is_url(url)]
        try:
            st = Store(roots, Path(p.cache), s3().endpoint_url) if roots else None
            if st is not None and setting not in _CHECKED:
                st.check()
                _CHECKED.add(setting)
        except StorageError as e:
            raise ConfigError(str(e)) from None
        _STORES[key] = st
    return _STORES[key]


class StoredTarget(luigi.LocalTarget):
    """A task output in the local mirror that exists when it is in the bucket."""

    def __init__(self, path, folder: bool = False):
        super().__init__(str(path))
        self.folder = folder

    def exists(self) -> bool:
        st = store()
        if st is None or st.root_of(self.path) is None:
            return super().exists()
        return st.done(self.path, self.folder)


def target(path, folder: bool = False) -> luigi.LocalTarget:
    """A task's output at ``path`` (under raw_dir/processed_dir); ``folder`` for an output
    written as a whole folder (its manifest marks it done in a bucket)."""
    if not (is_url(paths().raw) or is_url(paths().processed)):
        return luigi.LocalTarget(str(path))
    return StoredTarget(path, folder)


def stored_json(output: luigi.LocalTarget) -> dict | None:
    """The JSON object a task wrote at ``output``; None when it is missing or unreadable (a file
    cut short or not ours: the task runs again), for ``complete()`` checks of stored settings."""
    if not output.exists():
        return None
    try:
        return json.loads(Path(output.path).read_text())
    except ValueError:
        return None


def areas(task: luigi.Task) -> tuple[list[Path], list[Path], list[Path]]:
    """``(areas, folder outputs, file outputs)`` of ``task``: the folders whose new files are
    its output -- its folder outputs and the folders of its file outputs, unless the task names
    them (``store_areas()``: BuildTFRecords writes version folders beside its output file)."""
    folders, files = [], []
    for t in flatten(task.output()):
        (folders if getattr(t, "folder", False) else files).append(Path(t.path))
    custom = getattr(task, "store_areas", None)
    found = custom() if custom is not None else [*folders, *(f.parent for f in files)]
    return list(dict.fromkeys(map(Path, found))), folders, files


def pull_outputs(st: Store, tasks) -> int:
    """Pull the outputs of ``tasks`` into the mirror (of their requirements, for a task with no
    outputs of its own: a wrapper). Returns bytes downloaded."""
    fetched = 0
    for task in flatten(tasks):
        found = areas(task)[0]
        fetched += st.pull(found) if found else pull_outputs(st, task.requires())
    return fetched


def _run_stored(self, original):
    """Pull the inputs, run ``original`` (a generator: pull each batch of yielded tasks after
    Luigi has run them), push the outputs. A generator itself, so Luigi's dynamic dependencies
    pass through; an abandoned run (Luigi stops at a yield whose tasks are not done yet, or the
    task fails) pushes nothing."""
    st = store()
    clock = time.perf_counter()
    pulled = pull_outputs(st, self.requires())
    found, folders, files = areas(self)
    before = st.snapshot(found)
    spent = time.perf_counter() - clock
    self._store_running = True
    try:
        result = original(self)
        if inspect.isgenerator(result):
            sent = None
            while True:
                try:
                    deps = result.send(sent)
                except StopIteration:
                    break
                sent = yield deps
                clock = time.perf_counter()
                pulled += pull_outputs(st, deps)
                spent += time.perf_counter() - clock
    finally:
        self._store_running = False
    clock = time.perf_counter()
    pushed = st.push(found, folders, files, before)
    spent += time.perf_counter() - clock
    # One line per task; bench/object_store.py adds them up.
    LOG.info("%s storage: pulled %d bytes, pushed %d files %d bytes (%d server-side copies), %.2f s",
             self.get_task_family(), pulled, pushed["files"], pushed["bytes"], pushed["server_side_copies"], spent)


def _wrap_run(original):
    generator = inspect.isgeneratorfunction(original)

    def stored(self):
        return store() is not None and not getattr(self, "_store_running", False)

    if generator:
        @functools.wraps(original)
        def run(self):
            if not stored(self):
                return (yield from original(self))
            return (yield from _run_stored(self, original))
    else:
        @functools.wraps(original)
        def run(self):
            if not stored(self):
                return original(self)
            for _ in _run_stored(self, original):  # no yields: the original is no generator
                raise AssertionError("unreachable")
    run._stored = True
    return run


def _wrap_complete(original):
    @functools.wraps(original)
    def complete(self):
        done = original(self)
        st = store() if done else None
        if st is not None:
            pull_outputs(st, [self])  # planning lists a raw source's files
        return done
    complete._stored = True
    return complete


def install() -> None:
    """Wrap ``run()`` of every task class of the tasks package (and ``complete()`` of the raw
    tasks: those with a ``source()``), once."""
    for name, module in list(sys.modules.items()):
        if not (name == "tasks" or name.startswith("tasks.")) or module is None:
            continue
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == name):
                continue
            run = cls.__dict__.get("run")
            if run is not None and not getattr(run, "_stored", False):
                cls.run = _wrap_run(run)
            if hasattr(cls, "source") and issubclass(cls, luigi.Task) \
                    and not getattr(cls.complete, "_stored", False):
                cls.complete = _wrap_complete(cls.complete)
