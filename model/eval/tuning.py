"""Hyper-parameter search over training settings (plain Python, no TensorFlow): the trials of
a search space, the ranking of their scores and the report table. ``TuneGAN``
(tasks/tune.py) trains each trial as an ordinary training run, scores it on the
validation split and re-scores only the winner on the test split.

A search space maps a :class:`model.config.TrainConfig` field to its candidate values:

* a list: the values to try (``{"lr": [1e-4, 2e-4], "ema": [0, 0.999]}``);
* for random search also ``{"uniform": [low, high]}`` or ``{"log_uniform": [low, high]}``
  (drawn values are rounded to 3 significant digits, so that runs are readable and repeatable).

``grid`` takes every combination (or, with ``trials`` smaller than the grid, a seeded random
subset of it, in grid order); ``random`` draws ``trials`` distinct combinations with ``seed``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import MISSING, fields

import numpy as np

from model.config import TrainConfig
from pipeline.settings import one_of, require

SEARCHES = ("grid", "random")
#: Settings a search may not vary: what the run is (variant, networks, image shape, labels),
#: its budget (``steps``, set by the search) and bookkeeping that does not change the weights.
FIXED = ("variant", "discriminator", "generator", "resolution", "channels", "labels", "steps",
         "log_every", "checkpoint_every", "sample_every")
TUNABLE = tuple(f.name for f in fields(TrainConfig) if f.name not in FIXED)
#: Figures a search can select on (lower is better for both).
METRICS = ("fid", "kid")


def _check_space(space: dict, search: str) -> dict[str, list | dict]:
    one_of("search", search, SEARCHES)
    if not space:
        raise ValueError(f"the search space is empty: give settings and their values, e.g. "
                         f'{{"lr": [0.0001, 0.0002]}} (tunable: {", ".join(TUNABLE)})')
    out = {}
    for name in sorted(space):
        values = space[name]
        if name not in TUNABLE:
            raise ValueError(f"search space: {name!r} cannot be tuned; tunable settings: {', '.join(TUNABLE)}")
        if isinstance(values, (list, tuple)):
            if not values:
                raise ValueError(f"search space: {name!r} has no values")
            out[name] = list(values)
        elif isinstance(values, dict) and len(values) == 1 and next(iter(values)) in ("uniform", "log_uniform"):
            kind, bounds = next(iter(values.items()))
            if search == "grid":
                raise ValueError(f"search space: {name!r} is a range ({kind}); a grid search needs a list of "
                                 f"values (or use search=random)")
            low, high = (float(b) for b in bounds)
            if not low < high or (kind == "log_uniform" and low <= 0):
                raise ValueError(f"search space: {name!r} {kind} bounds must be 0 < low < high for log_uniform, "
                                 f"low < high otherwise, got {list(bounds)}")
            out[name] = {kind: [low, high]}
        else:
            raise ValueError(f"search space: {name!r} must be a list of values or "
                             f'{{"uniform": [low, high]}} / {{"log_uniform": [low, high]}}, got {values!r}')
    return out


def _draw(spec, rng: np.random.Generator):
    if isinstance(spec, list):
        return spec[int(rng.integers(len(spec)))]
    (kind, (low, high)), = spec.items()
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if kind == "log_uniform" else rng.uniform(low, high)
    return float(f"{value:.3g}")


def expand_space(space: dict, search: str = "grid", trials: int = 0, seed: int = 0,
                 base: dict | None = None) -> list[dict]:
    """The trials of a search: a list of ``{setting: value}`` (only the searched settings).

    ``trials``: grid: 0 = every combination, else a seeded subset of that many; random: how
    many distinct combinations to draw (required). Each trial, on top of ``base`` (e.g. a
    recipe), must make a valid :class:`TrainConfig`: a bad value is a ``ValueError`` naming it."""
    space = _check_space(space, search)
    names = list(space)
    rng = np.random.default_rng(seed)
    if search == "grid":
        grid = [dict(zip(names, combo)) for combo in itertools.product(*space.values())]
        require(trials >= 0, "trials", trials, ">= 0 (0 = the whole grid)")
        if trials and trials < len(grid):
            grid = [grid[i] for i in sorted(rng.choice(len(grid), trials, replace=False))]
        out = grid
    else:
        require(trials >= 1, "trials", trials, ">= 1 for a random search")
        out, seen = [], set()
        for _ in range(100 * trials):
            trial = {name: _draw(space[name], rng) for name in names}
            key = repr(sorted(trial.items()))
            if key not in seen:
                seen.add(key)
                out.append(trial)
            if len(out) == trials:
                break
    for trial in out:
        try:
            TrainConfig(**{**(base or {}), **trial})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"search space: trial {trial} is not a valid training setting: {exc}") from None
    return out


def rank(scores: list[dict], metric: str = "fid") -> list[dict]:
    """``scores`` (dicts with ``metric``) best first; ties keep their order."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return sorted(scores, key=lambda s: s[metric])


def _settings(settings: dict) -> str:
    if not settings:
        return "keeps every other setting at its default"
    return "has " + ", ".join(f"`{k}={v}`" for k, v in sorted(settings.items())) + " (the rest at the defaults)"


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def shared_settings(training: dict, searched) -> dict:
    """The settings every trial shares that are not their defaults: a trial run's
    ``TrainConfig`` as a dict (its model card's ``training``) less the ``searched`` settings,
    the run's identity and budget (:data:`FIXED`) and every setting at its default."""
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default_factory is MISSING}
    return {k: v for k, v in training.items()
            if k in defaults and k not in FIXED and k not in searched and v != defaults[k]}


def render_table(report: dict) -> str:
    """The Markdown report of a search (``tuning.json``'s content)."""
    names = report["searched"]
    val, test = report["select_split"], report["report_split"]
    winner = report["winner"]
    lines = [f"# Tuning {report['variant']} on {report['dataset']}", "",
             f"{len(report['trials'])} trials ({report['search']} search, seed {report['seed']}), "
             f"{report['steps_note']}, recipe `{report['recipe']}`; every trial also "
             f"{_settings(report.get('shared', report['base']))}. Selected on the "
             f"`{val}` split by {report['metric'].upper()} (n={report['trials'][0]['n']}); the winner alone "
             f"re-scored on the `{test}` split.", "",
             "| rank | " + " | ".join(names) + f" | steps | {val} FID | {val} KID | face rate | MS-SSIM | run |",
             "| --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- | --- | --- | --- |"]
    for k, t in enumerate(report["trials"], 1):
        mark = " (winner)" if t["run"] == winner["run"] else ""
        lines.append(f"| {k}{mark} | " + " | ".join(_fmt(t["params"][n]) for n in names)
                     + f" | {t['steps']} | {_fmt(t['fid'])} | {_fmt(t['kid'])} | {_fmt(t['face_detect_rate'], 3)} | "
                       f"{_fmt(t['ms_ssim'], 3)} | `{t['run_name']}` |")
    w = report["test"]
    lines += ["", f"## Winner on the `{test}` split", "",
              "| " + " | ".join(names) + " | FID | KID | face rate | MS-SSIM | n |",
              "| " + " | ".join("---" for _ in names) + " | --- | --- | --- | --- | --- |",
              "| " + " | ".join(_fmt(winner["params"][n]) for n in names)
              + f" | {_fmt(w['fid'])} | {_fmt(w['kid'])} | {_fmt(w['face_detect_rate'], 3)} | {_fmt(w['ms_ssim'], 3)} "
                f"| {w['n']} |", "",
              f"Winner's run: `{winner['run']}` (model card: `winner_card.json`; test report: `{w['report']}`).", ""]
    return "\n".join(lines)


#: Settings that do not change a step's time, left out of :func:`cached_step_seconds`' keys.
UNTIMED = ("steps", "log_every", "checkpoint_every", "sample_every")


def cached_step_seconds(path, configs: list, measure) -> list[float]:
    """Seconds per training step of each of ``configs`` (TrainConfig) on this CPU, from the JSON
    cache at ``path`` (keyed by the CPU model and every setting that changes a step's time), the
    missing ones measured by ``measure(configs) -> seconds`` and added: so that re-runs, and
    workers sharing ``processed/``, plan the very same trials."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    from model.cpu import cpu_model
    from pipeline.atomic import write_json

    path = Path(path)
    known = json.loads(path.read_text()) if path.exists() else {}
    keys = [json.dumps([cpu_model(), {k: v for k, v in asdict(c).items() if k not in UNTIMED}], sort_keys=True)
            for c in configs]
    missing = [k for k in range(len(keys)) if keys[k] not in known]
    if missing:
        known.update({keys[k]: s for k, s in zip(missing, measure([configs[k] for k in missing]))})
        write_json(path, known)
    return [known[k] for k in keys]


def trial_score(params: dict, report_path, split: str) -> dict:
    """One trial's row for :func:`rank`: its settings, steps, run folder and the figures of its
    EvaluateGenerator report at ``report_path``, which must be on ``split`` (selection never
    sees the split the winner is reported on)."""
    import json
    from pathlib import Path

    report = json.loads(Path(report_path).read_text())
    if report["split"] != split:  # EvaluateTrial refuses this; a guard for old reports
        raise ValueError(f"TuneGAN: trial {params} was scored on {report['split']!r}, not {split!r}")
    return {"params": params, "steps": report["steps"], "run": report["run_dir"],
            "run_name": Path(report["run_dir"]).name, "split": report["split"], "report": str(report_path),
            **{k: report[k] for k in ("fid", "kid", "face_detect_rate", "ms_ssim", "n")}}
