"""A quiet start for every command: TensorFlow's start-up chatter hidden, real warnings kept.

Imported on a machine without a GPU, TensorFlow prints lines that say nothing to the
person at the console: absl's ``WARNING: All log messages before absl::InitializeLog() is
called ...``, the oneDNN notice (``oneDNN custom operations are on ...``), the CUDA probe
(``Could not find cuda drivers``, ``failed call to cuInit``). Some come before
``TF_CPP_MIN_LOG_LEVEL`` takes effect, so :func:`quiet_start` also points file descriptor 2
at a temporary file while ``import tensorflow`` runs and its devices are listed (the probe
prints then, not at the first op); the file is printed if the import fails, deleted
otherwise. Python warnings and TensorFlow's later WARNING/ERROR lines still reach stderr.

Every console script calls it first thing in ``main`` (``facegan-studio``, ``facegan-align``,
the benches), as ``luigi --module tasks`` does through ``tasks/console.py``. The full start-up
comes back with the script's own switch (``facegan-studio --log-level debug``,
``facegan-align align --verbose``, Luigi's ``--log-level DEBUG``) or, for any of them, with
``FACEGAN_VERBOSE=1`` in the environment.

:func:`tensorflow_defaults` holds the one TensorFlow setting the project makes for speed,
called by :func:`quiet_start`, by ``model/__init__.py`` and by the tests' conftest, so it is
in place before TensorFlow is first imported, whatever the entry point.

Plain Python: it imports neither TensorFlow nor Luigi.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import tempfile
from typing import Callable

#: Set to anything but ``""``/``0``/``false``/``no``: every command starts verbosely.
VERBOSE_ENV = "FACEGAN_VERBOSE"


#: TensorFlow's own switch for its oneDNN kernels, read once when TensorFlow is imported.
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def tensorflow_defaults() -> None:
    """oneDNN kernels on every x86 CPU, not only where TensorFlow turns them on by itself.

    TensorFlow enables oneDNN by default only on CPUs with AVX-512 VNNI, BF16 or AMX; on an
    AVX2-only CPU it falls back to Eigen, whose float32 matmul ran at 62 GFLOP/s against
    oneDNN's 134 (2-core AMD EPYC, AVX2 only, 2026-12-03; the FMA peak is 157). A value the
    user set (``TF_ENABLE_ONEDNN_OPTS=0``) is kept. No effect once TensorFlow is imported."""
    os.environ.setdefault(ONEDNN_ENV, "1")


def verbose_env() -> bool:
    """Whether :data:`VERBOSE_ENV` asks for the full start-up."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def quiet_start(verbose: bool | Callable[[], bool] = False) -> None:
    """Quiet TensorFlow's start-up in this process, unless ``verbose`` (or :data:`VERBOSE_ENV`).

    Call it before TensorFlow is first imported; it imports nothing heavy and may be called
    again (the last ``verbose`` wins). ``verbose`` may be a function, asked when TensorFlow is
    imported (Luigi knows its ``--log-level`` only after importing the task modules). When
    verbose, ``TF_CPP_MIN_LOG_LEVEL`` is left as it is and nothing is hidden."""
    tensorflow_defaults()
    ask = verbose if callable(verbose) else (lambda: bool(verbose))
    for finder in [f for f in sys.meta_path if isinstance(f, _QuietImport)]:
        sys.meta_path.remove(finder)
    if verbose_env() or (not callable(verbose) and verbose):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietImport(ask))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Imports ``tensorflow`` (once, wherever it is first imported) with file descriptor 2
    pointed at a temporary file; see the module docstring."""

    def __init__(self, verbose: Callable[[], bool]):
        self.verbose = verbose
        self.busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.busy or self.verbose() or verbose_env():
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
