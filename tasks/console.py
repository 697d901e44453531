"""What a task run prints: the stages, their progress and the result, not the machinery.

``luigi --module tasks ...`` imports this package before Luigi sets up logging, so this is
the place to quiet what would drown the progress (docs/training.md, "Console"):

* TensorFlow's start-up chatter: ``TF_CPP_MIN_LOG_LEVEL=2`` (unless already set) hides
  its C++ INFO and WARNING lines, and the lines it prints before that setting takes effect
  (oneDNN notes, the CUDA probe on a CPU-only machine) are sent to a temporary file while
  ``import tensorflow`` runs and its devices are listed; the file is printed if the import
  fails, deleted otherwise;
* Luigi's scheduling lines (``Informed scheduler that task ... has status PENDING``, one
  per task, and the like): dropped from the ``luigi-interface`` logger at INFO; luigi.cfg's
  ``[core] log_level = INFO`` drops its DEBUG lines;
* Luigi's lines printed twice: see :class:`OtherWarnings`.

``--log-level DEBUG`` (a Luigi option; ``make run LOG_LEVEL=DEBUG``) brings every line back,
TensorFlow's start-up included.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile

#: Beginnings of Luigi's INFO lines about scheduling rather than the work.
SCHEDULER_CHATTER = ("Informed scheduler that task", "Done scheduling tasks", "Running Worker with",
                     "Worker Worker(", "Starting pruning of task graph", "Done pruning task graph")

_LUIGI = "luigi-interface"


def verbose() -> bool:
    """Whether the full log was asked for (Luigi's log level is DEBUG)."""
    return logging.getLogger(_LUIGI).isEnabledFor(logging.DEBUG)


class QuietScheduling(logging.Filter):
    """Drops :data:`SCHEDULER_CHATTER` lines unless the log level is DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or verbose():
            return True
        return not str(record.msg).lstrip().startswith(SCHEDULER_CHATTER)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Imports ``tensorflow`` (once, wherever it is first imported) with file descriptor 2
    pointed at a temporary file; see the module docstring."""

    busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.busy or verbose():
            return None
        self.busy = True  # the real lookup below must not come back here
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.busy = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved = os.dup(2)
        fd, path = tempfile.mkstemp(prefix="tensorflow-startup-", suffix=".log")
        os.dup2(fd, 2)
        try:
            self.loader.exec_module(module)
            module.config.list_physical_devices()  # the CUDA probe prints here, not at the first op
        except BaseException:
            os.dup2(saved, 2)
            with open(path, errors="replace") as fh:
                sys.stderr.write(fh.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)
        os.unlink(path)
        if self.finder in sys.meta_path:  # imported: nothing more to quiet
            sys.meta_path.remove(self.finder)

    def __getattr__(self, name):  # anything else a loader is asked (resources, is_package, ...)
        return getattr(self.loader, name)


class OtherWarnings(logging.StreamHandler):
    """The root logger's handler: WARNING and worse of every logger but Luigi's (which has
    its own), to the current ``sys.stderr``. Without it, absl's first log call (TensorFlow
    logs through absl, e.g. when saving a checkpoint) runs ``logging.basicConfig()``, whose
    handler prints every Luigi line a second time."""

    def __init__(self):
        super().__init__()
        self.setLevel(logging.WARNING)
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        self.addFilter(lambda record: not record.name.startswith("luigi"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the current sys.stderr wins
        pass


def quiet() -> None:
    """Quiet TensorFlow's start-up and Luigi's scheduling lines (idempotent; imports neither
    TensorFlow nor anything heavy)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logger = logging.getLogger(_LUIGI)
    if not any(isinstance(f, QuietScheduling) for f in logger.filters):
        logger.addFilter(QuietScheduling())
    if not logging.root.handlers:
        logging.root.addHandler(OtherWarnings())
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


quiet()  # on import: tasks/__init__.py imports this module first
