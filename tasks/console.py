"""What a task run prints: the stages, their progress and the result, not the machinery.

``luigi --module tasks ...`` imports this package before Luigi sets up logging, so this is
the place to quiet what would drown the progress (docs/training.md, "Console"):

* TensorFlow's start-up chatter (oneDNN notes, the CUDA probe on a CPU-only machine), as
  for every console script: :func:`pipeline.console.quiet_start`;
* Luigi's scheduling lines (``Informed scheduler that task ... has status PENDING``, one
  per task, and the like): dropped from the ``luigi-interface`` logger at INFO; luigi.cfg's
  ``[core] log_level = INFO`` drops its DEBUG lines;
* Luigi's lines printed twice: see :class:`OtherWarnings`.

``--log-level DEBUG`` (a Luigi option; ``make run LOG_LEVEL=DEBUG``) brings every line back,
TensorFlow's start-up included (so does ``FACEGAN_VERBOSE=1`` for TensorFlow's).
"""
from __future__ import annotations

import logging
import sys

from pipeline.console import quiet_start

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
    quiet_start(verbose)  # asked at TensorFlow's import: Luigi reads --log-level after this
    logger = logging.getLogger(_LUIGI)
    if not any(isinstance(f, QuietScheduling) for f in logger.filters):
        logger.addFilter(QuietScheduling())
    if not logging.root.handlers:
        logging.root.addHandler(OtherWarnings())


quiet()  # on import: tasks/__init__.py imports this module first
