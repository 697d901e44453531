"""Errors a user can read: one line naming the parameter, the bad value and the fix.

* Tasks check their parameters when they are built, before anything runs:
  mix in :class:`Checked` and write ``validate()``; a bad value raises
  :class:`ConfigError` from the constructor (helpers: :func:`at_least`,
  :func:`check`, :func:`settings_of`). Checks that need the file system (a
  copy on disk, a seeds file) belong in ``complete()`` of a task not yet done,
  which Luigi calls while scheduling, also before anything runs.
* ``luigi --module tasks ...`` prints such an error as one line instead of a
  traceback, and so Luigi's own parameter errors (``--TrainDCGAN-precision foo``:
  not one of the choices; ``--Sample-n x``: not an integer; a required
  parameter missing): :func:`install` adds a filter to Luigi's
  ``luigi-interface`` logger, through which every such error passes.
* The traceback is printed when asked for: ``--errors-traceback`` on the
  command line, ``traceback = true`` under ``[errors]`` in luigi.cfg, or the
  environment variable ``FACEGAN_TRACEBACK=1``.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import luigi

from pipeline.settings import BadSetting

TRACEBACK_FLAG = "--errors-traceback"
TRACEBACK_ENV = "FACEGAN_TRACEBACK"


class errors(luigi.Config):
    """``[errors]``: how errors are shown on the command line."""
    traceback = luigi.BoolParameter(default=False, description="Print the Python traceback of "
                                    "configuration errors too (else one line says what to fix).")


class ConfigError(ValueError):
    """A setting a user has to fix; the message is one line saying which and how."""

    @classmethod
    def parameter(cls, task: luigi.Task, name: str, problem: str) -> ConfigError:
        """The error for parameter ``name`` of ``task``: ``[Family] name = value:
        problem; set --Family-name ... or name under [Family] in luigi.cfg``."""
        family = task.get_task_family()
        value = getattr(task, name, None)
        return cls(f"[{family}] {name} = {_shown(value)}: {problem}; set {flag(family, name)} "
                   f"on the command line or '{name} = ...' under [{family}] in luigi.cfg")


def flag(family: str, name: str) -> str:
    """The command-line flag of a parameter: ``--TrainDCGAN-batch-size``."""
    return f"--{family}-{name.replace('_', '-')}"


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


class Checked:
    """Task mixin: ``validate()`` runs when the task is built (put it first in
    the bases: ``class Sample(Checked, luigi.Task)``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a parameter value the task cannot run with."""


def check(task: luigi.Task, name: str, ok: bool, problem: str) -> None:
    """Raise :meth:`ConfigError.parameter` for ``name`` unless ``ok``."""
    if not ok:
        raise ConfigError.parameter(task, name, problem)


def at_least(task: luigi.Task, name: str, minimum, why: str = "") -> None:
    """Parameter ``name`` must be >= ``minimum``."""
    check(task, name, getattr(task, name) >= minimum,
          f"must be at least {minimum}" + (f" ({why})" if why else ""))


@contextmanager
def settings_of(task: luigi.Task, name: str | None = None,
                rename: dict[str, str] | None = None) -> Iterator[None]:
    """Turn the ``ValueError`` of a pipeline/ check into a :class:`ConfigError`.

    A :class:`pipeline.settings.BadSetting` names its setting, which is the
    task parameter of that name (or ``rename[name]``); any other ValueError
    is about parameter ``name``.
    """
    try:
        yield
    except ConfigError:
        raise
    except BadSetting as exc:
        param = (rename or {}).get(exc.name, exc.name)
        raise ConfigError.parameter(task, param, f"must be {exc.must}") from None
    except ValueError as exc:
        if name is None:
            raise
        raise ConfigError.parameter(task, name, str(exc)) from None


# --- printing ------------------------------------------------------------------------

def traceback_wanted() -> bool:
    """Whether the user asked for tracebacks (flag, luigi.cfg or environment)."""
    if os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    if TRACEBACK_FLAG in sys.argv:
        return True
    try:
        return luigi.configuration.get_config().getboolean("errors", "traceback", False)
    except ValueError:
        return False


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _frames(exc: BaseException) -> Iterator:
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


_LUIGI = str(Path(luigi.__file__).parent)


def _parameter_error(exc: BaseException) -> str | None:
    """One line for an error Luigi raised while reading a parameter's value,
    from the frames of Luigi's own code (the task, the parameter, the value)."""
    family = name = value = None
    for error in _chain(exc):
        for frame in _frames(error):
            if not frame.f_code.co_filename.startswith(_LUIGI):
                continue
            local = frame.f_locals
            if frame.f_code.co_name == "get_param_values" and "param_name" in local:
                family, name = local.get("task_family"), local["param_name"]
            elif frame.f_code.co_name == "_get_task_kwargs" and "param_name" in local:
                # the command line task's own flags (--precision foo): parsed by luigi's CmdlineParser
                family, name = local["self"].known_args.root_task, local["param_name"]
            elif frame.f_code.co_name in ("_parse_or_no_value", "parse", "normalize") and "x" in local:
                value = local["x"]
    if family is None:
        return None
    cause = [e for e in _chain(exc)][-1]
    if isinstance(cause, luigi.parameter.MissingParameterException):
        return f"[{family}] {name} is required: set {flag(family, name)} on the command line or " \
               f"'{name} = ...' under [{family}] in luigi.cfg"
    if not isinstance(cause, (ValueError, TypeError)):
        return None
    shown = "" if value is None else f" = {_shown(value)}"
    return f"[{family}] {name}{shown}: {cause}; set {flag(family, name)} on the command line or " \
           f"'{name} = ...' under [{family}] in luigi.cfg"


def one_line(exc: BaseException | None) -> str | None:
    """The one-line message for a configuration error, or None for other errors."""
    for error in _chain(exc):
        if isinstance(error, ConfigError):
            return str(error)
    return _parameter_error(exc) if exc is not None else None


_CONFIG_LINE = re.compile(r"^[\w.]*\bConfigError: (.+)$", re.M)
_PARSING = re.compile(r"^\w*Error: (\w+)\[args=.*\]: Error when parsing the default value of "
                      r"'(\w+)'$", re.M)
_MISSING = re.compile(r"^[\w.]*MissingParameterException: (\w+)\[args=.*\]: requires the '(\w+)' "
                      r"parameter to be set$", re.M)
_CAUSE = re.compile(r"^\w*Error: (.+)\n\nThe above exception was the direct cause", re.M)


def one_line_from_text(text: str) -> str | None:
    """The same, from a formatted traceback: Luigi checks ``complete()`` apart
    and logs only the text of what it raised."""
    found = _CONFIG_LINE.findall(text)
    if found:
        return found[-1]
    if (m := _MISSING.search(text)) is not None:
        family, name = m.groups()
        return f"[{family}] {name} is required: set {flag(family, name)} on the command line or " \
               f"'{name} = ...' under [{family}] in luigi.cfg"
    if (m := _PARSING.search(text)) is not None:
        family, name = m.groups()
        cause = _CAUSE.search(text)
        why = cause.group(1) if cause else "cannot be read"
        return f"[{family}] {name}: {why}; set {flag(family, name)} on the command line or " \
               f"'{name} = ...' under [{family}] in luigi.cfg"
    return None


class OneLineErrors(logging.Filter):
    """Rewrites Luigi's log records of configuration errors to one line, dropping
    the traceback (unless :func:`traceback_wanted`). Other records pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not (record.exc_info or "Traceback (most recent call last)" in message):
            return True
        # Luigi formats scheduling errors into the message inside its except
        # block, so the exception is still the one being handled.
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        line = one_line(exc) or one_line_from_text(message)
        if line is None or traceback_wanted():
            return True
        head = message.split("\n", 1)[0].rstrip(":").rstrip()
        if head == "Uncaught exception in luigi":  # Luigi's words for an error building the task
            head = "Bad setting, nothing was run"
        record.msg, record.args = f"{head}: {line}", ()
        record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    """Add :class:`OneLineErrors` to Luigi's ``luigi-interface`` logger (once)."""
    logger = logging.getLogger("luigi-interface")
    if not any(isinstance(f, OneLineErrors) for f in logger.filters):
        logger.addFilter(OneLineErrors())
