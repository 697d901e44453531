"""Attribute directions in a generator's z space (InterFaceGAN, Shen et al., 2020).

Any generator, no retraining: sample many z, generate, score every face with an
attribute classifier (model/apps/attributes.py), and fit a linear boundary per attribute
in z. As InterFaceGAN, the faces the classifier ranks highest and lowest (``keep``
of them, half each side) are the positives and negatives; a logistic regression is
fitted on part of them and its accuracy measured on the rest (``holdout``, the same
number from each side, so chance is 0.5). The boundary's unit normal n is the
direction: moving z along n makes the attribute stronger. A boundary no better than
chance (held-out accuracy within 3 standard errors of it) is dropped, with the reason.

Editing (:func:`move`): an offset ``s`` moves z by ``s * scale * n`` where ``scale``
is the standard deviation of ``z . n`` over the sampled z (so ``s`` counts
standard deviations of the prior along n). Locked attributes keep their value: the
move of the unlocked ones is projected off the span of the locked normals
(InterFaceGAN's conditional manipulation, generalised to several locks).

The file format (``directions.json`` in the run folder) is documented in model/card.py.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from model.card import DIRECTIONS_FILE, ModelCard

FORMAT = "facegan-directions/1"
#: How many standard errors above chance a held-out accuracy must be to keep a direction.
MIN_SIGMAS = 3.0


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iterations: int = 50) -> tuple[np.ndarray, float]:
    """``(w, b)`` of an L2-regularised logistic regression ``P(y=1 | x) = sigmoid(x w + b)``
    by Newton's method (``x`` ``(n, d)``, ``y`` ``(n,)`` in {0, 1}; ``l2`` on ``w`` only)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2 * n)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ theta, -30, 30)))
        grad = xb.T @ (p - y) + reg * theta
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:d], float(theta[d])


def fit_direction(z: np.ndarray, scores: np.ndarray, keep: float = 0.5, holdout: float = 0.2,
                  seed: int = 0) -> dict:
    """One attribute: ``z`` ``(n, d)``, classifier ``scores`` ``(n,)``. Returns
    ``normal`` (unit, ``(d,)``), ``bias`` (of the unit-normal boundary ``z . n + bias = 0``),
    ``accuracy`` (held out), ``chance``, ``margin`` (3 standard errors), ``n_train``,
    ``n_holdout``, ``scale`` (std of ``z . n``) and ``keep``."""
    n = len(z)
    order = np.argsort(scores, kind="stable")
    side = max(int(n * keep / 2), 2)
    rng = np.random.default_rng(seed)
    low, high = rng.permutation(order[:side]), rng.permutation(order[-side:])
    hold = max(int(side * holdout), 1)  # the same number from each side: chance is exactly 0.5
    train = np.concatenate([low[hold:], high[hold:]])
    y_train = np.concatenate([np.zeros(side - hold), np.ones(side - hold)])
    test = np.concatenate([low[:hold], high[:hold]])
    y_test = np.concatenate([np.zeros(hold), np.ones(hold)])
    w, b = fit_logistic(z[train], y_train)
    norm = float(np.linalg.norm(w))
    normal = w / norm if norm > 0 else np.zeros_like(w)
    acc = float((((z[test] @ w + b) > 0) == (y_test > 0.5)).mean())
    chance = 0.5
    margin = MIN_SIGMAS * math.sqrt(chance * (1 - chance) / len(test))
    return {"normal": normal.astype(np.float32), "bias": b / norm if norm > 0 else 0.0, "accuracy": acc,
            "chance": chance, "margin": margin, "n_train": len(train), "n_holdout": len(test),
            "scale": float(np.std(z @ normal)), "keep": keep}


def fit_directions(generator, card: ModelCard, score: Callable[[np.ndarray], np.ndarray],
                   names: Sequence[str], n: int = 10_000, seed: int = 0, keep: float = 0.5,
                   holdout: float = 0.2, batch_size: int = 250,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Sample ``n`` inputs of ``card`` (seed ``seed``), generate, ``score(images uint8)``
    -> ``(n, len(names))``, fit one direction per name. Returns the ``directions.json``
    dict (see model/card.py): kept ``directions`` and ``dropped`` ones with the reason."""
    from model.card import sample_inputs
    from model.train.sampling import generate

    inputs = sample_inputs(card, n, seed)
    scores = []
    for i in range(0, n, batch_size):
        chunk = {k: v[i:i + batch_size] for k, v in inputs.items()}
        scores.append(np.asarray(score(generate(generator, chunk, batch_size)), np.float32))
        if progress is not None:
            progress(min(i + batch_size, n), n)
    scores = np.concatenate(scores)
    if scores.shape != (n, len(names)):
        raise ValueError(f"score() returned shape {scores.shape}, expected {(n, len(names))}")
    z = inputs["z"]
    kept, dropped = [], []
    for i, name in enumerate(names):
        d = fit_direction(z, scores[:, i], keep, holdout, seed)
        entry = {"name": name, "accuracy": round(d["accuracy"], 4), "chance": round(d["chance"], 4),
                 "n_train": d["n_train"], "n_holdout": d["n_holdout"],
                 "score_mean": round(float(scores[:, i].mean()), 4), "score_std": round(float(scores[:, i].std()), 4)}
        if d["accuracy"] <= d["chance"] + d["margin"]:
            dropped.append({**entry, "reason": f"held-out accuracy {d['accuracy']:.3f} is not above chance "
                                               f"{d['chance']:.3f} + {MIN_SIGMAS:g} standard errors "
                                               f"({d['chance'] + d['margin']:.3f})"})
            continue
        kept.append({**entry, "normal": [round(float(v), 7) for v in d["normal"]],
                     "bias": round(d["bias"], 6), "scale": round(d["scale"], 6)})
    return {"format": FORMAT, "input": "z", "size": int(z.shape[1]), "samples": n, "seed": seed,
            "keep": keep, "holdout": holdout, "offset_range": [-3.0, 3.0],
            "directions": kept, "dropped": dropped, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_directions(run_dir: str | os.PathLike, directions: dict) -> Path:
    """Write ``directions`` as ``run_dir/directions.json`` atomically."""
    from pipeline.atomic import write_json

    path = Path(run_dir) / DIRECTIONS_FILE
    write_json(path, directions)
    return path


def read_directions(run_dir: str | os.PathLike, z_size: int | None = None) -> dict | None:
    """The run's ``directions.json`` (None when there is none); ``ValueError`` naming the
    file when it is unreadable or its normals do not match ``z_size``."""
    path = Path(run_dir) / DIRECTIONS_FILE
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if d.get("format") != FORMAT:
        raise ValueError(f"{path}: format {d.get('format')!r}, expected {FORMAT!r}")
    size = z_size or d.get("size")
    for entry in d.get("directions", []):
        if len(entry.get("normal", ())) != size:
            raise ValueError(f"{path}: direction {entry.get('name')!r} has {len(entry.get('normal', ()))} "
                             f"values, the model's z has {size}")
    return d


def move(z: np.ndarray, normals: np.ndarray, scales: np.ndarray, offsets: np.ndarray,
         locked: np.ndarray | None = None) -> np.ndarray:
    """``z`` ``(..., d)`` moved by ``offsets`` ``(k,)`` along unit ``normals`` ``(k, d)``
    (each in units of ``scales`` ``(k,)``). Moves of unlocked attributes are projected off
    the span of the ``locked`` ``(k,) bool`` normals; locked attributes' own offsets apply as given."""
    normals = np.asarray(normals, np.float64)
    steps = np.asarray(offsets, np.float64) * np.asarray(scales, np.float64)
    locked = np.zeros(len(normals), bool) if locked is None else np.asarray(locked, bool)
    free = steps[~locked] @ normals[~locked] if (~locked).any() else np.zeros(normals.shape[1])
    if locked.any() and (~locked).any():
        basis = normals[locked]
        coef, *_ = np.linalg.lstsq(basis.T, free, rcond=None)  # the part of the move inside the locked span
        free = free - basis.T @ coef
    fixed = steps[locked] @ normals[locked] if locked.any() else 0.0
    return (np.asarray(z, np.float64) + free + fixed).astype(np.float32)
