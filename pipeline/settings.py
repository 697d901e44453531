"""One rule per setting of the plain-Python stages, with a message that names it.

``FaceAligner``, ``CrawlConfig``, ``httpclient.Policy`` and the other config
objects check their fields with :func:`require`; a bad value raises
:class:`BadSetting`, which carries the setting's name, so the command line
and the Luigi tasks (``tasks.errors``) can each say where to fix it without
restating the rule.
"""
from __future__ import annotations


class BadSetting(ValueError):
    """``name`` has a ``value`` it may not have; it ``must`` be something else."""

    def __init__(self, name: str, value, must: str):
        super().__init__(f"{name} must be {must}, got {value!r}")
        self.name, self.value, self.must = name, value, must


def require(ok: bool, name: str, value, must: str) -> None:
    """Raise :class:`BadSetting` unless ``ok``."""
    if not ok:
        raise BadSetting(name, value, must)


def one_of(name: str, value, choices) -> None:
    """``value`` must be one of ``choices``."""
    require(value in choices, name, value, f"one of {', '.join(map(str, choices))}")
