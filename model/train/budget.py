"""A training budget in minutes (``TrainConfig.max_minutes``): the step count from the measured speed.

With a budget the loop (model/train/loop.py) times its first steps and then fixes
the run's step count once: the step reached plus as many steps as the rest of
the budget holds at the measured seconds per step, at most ``TrainConfig.steps``.
The budget counts from the loop's start (building the networks, restoring, tracing
the training step), snapshots and checkpoints included; the export after the last
step is not. The first ``WARMUP`` steps are not timed (the first traces the graph,
the next ones run slower while the input pipeline and the kernels' caches settle);
then at least ``MEASURE`` steps and ``MEASURE_SHARE`` of the budget are, unless fewer
than ``MEASURE`` steps are left by then. ``RESERVE`` of the budget is kept back for
what the timed steps do not show: the fixed-noise grids and checkpoints (a few percent
at ``make run``'s settings) and a machine whose load grows.

The choice is written to ``budget.json`` in the run folder before training goes
on, so a run interrupted and resumed ends at the same step (a run interrupted
before the choice measures again when it resumes). Nothing in training depends
on the total step count, so a budget run that chose N steps is the run
``steps=N`` without a budget, step for step: deterministic given its step count.
The model card's ``training["budget"]`` and ``result.json`` carry the record::

    {"max_minutes": 4.0, "steps": 1745, "cap": 2400, "seconds_per_step": 0.1215,
     "measured": [10, 205], "planned_at": 205, "elapsed": 33.1}

(``measured``: the steps timed, from one to the other; ``elapsed``: the budget's
seconds used when the choice was made.)
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

BUDGET_FILE = "budget.json"
#: Steps after the loop's start that are not timed: the first traces the training step, the
#: next ones run slower (measured: the 10th to 30th step 50% slower than the run's mean).
WARMUP = 10
#: The timing lasts at least this many steps and this share of the budget (fewer steps when
#: the budget ends first).
MEASURE = 20
MEASURE_SHARE = 0.1
#: Share of the budget not planned for: grids, checkpoints, the machine's load changing.
RESERVE = 0.05


def planned_seconds(minutes: float) -> float:
    """The seconds of a ``minutes`` budget that steps are planned into (``RESERVE`` kept back)."""
    return minutes * 60.0 * (1.0 - RESERVE)


def steps_within(budget_s: float, elapsed_s: float, step: int, seconds_per_step: float, cap: int) -> int:
    """The last step of a run at ``step`` after ``elapsed_s`` of its ``budget_s`` seconds, at
    ``seconds_per_step``: ``step`` plus the whole steps the rest holds, within ``[step, cap]``."""
    room = max(0.0, budget_s - elapsed_s)
    more = math.floor(room / seconds_per_step) if seconds_per_step > 0 else cap
    return int(max(step, min(cap, step + more)))


def read_plan(run_dir: str | os.PathLike) -> dict | None:
    """The step count a budget run chose (``budget.json``), or None when it has not chosen yet."""
    path = Path(run_dir) / BUDGET_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): delete it to measure the run's speed again") from None


class BudgetPlanner:
    """Times a budget run's steps and fixes its step count once (:func:`steps_within`).

    ``began`` is the ``clock()`` reading at the loop's start, ``start`` the step it starts
    from (0, or a resumed run's). :meth:`after_step` is called once per step, after the
    step's results are read (so the step has finished), and calls ``clock`` once; it
    returns the plan when it makes it, else None.
    """

    def __init__(self, minutes: float, cap: int, start: int, began: float,
                 clock: Callable[[], float]):
        self.budget, self.cap, self.start, self.began, self.clock = planned_seconds(minutes), cap, start, began, clock
        self.minutes = minutes
        self.window: tuple[int, float] | None = None  # (step, clock) where timing began

    def after_step(self, step: int) -> dict | None:
        now = self.clock()
        # budget.json's resolution (1 ms, 1 us): the step count is chosen from exactly the
        # figures the file records, so anyone can recompute it from the file.
        elapsed = round(now - self.began, 3)
        if self.window is None:
            if elapsed >= self.budget:  # the budget went on start-up and tracing
                return self._plan(step, step, None, elapsed)
            if step - self.start >= WARMUP:
                self.window = (step, now)
            return None
        first, t0 = self.window
        timed = step - first
        per_step = round((now - t0) / timed, 6)
        last = steps_within(self.budget, elapsed, step, per_step, self.cap)
        # Decide when the timing has lasted long enough, or earlier when no more than
        # MEASURE steps are left (the budget or the cap ends inside the timing).
        if (timed >= MEASURE and now - t0 >= MEASURE_SHARE * self.budget) or last - step <= MEASURE:
            return self._plan(step, last, per_step, elapsed)
        return None

    def _plan(self, step: int, last: int, per_step: float | None, elapsed: float) -> dict:
        measured = [self.window[0], step] if self.window else []
        return {"max_minutes": self.minutes, "steps": int(last), "cap": self.cap,
                "seconds_per_step": per_step, "measured": measured, "planned_at": step, "elapsed": elapsed}
