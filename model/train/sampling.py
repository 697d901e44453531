"""Sampling an exported generator: noise, images, grids, interpolations, GIFs, and the
sample export of a run (what each of its declared inputs does)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path


def to_uint8(images) -> np.ndarray:
    """Generator output in [-1, 1] -> ``uint8`` in [0, 255]."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def generate(generator, inputs, batch_size: int = 64) -> np.ndarray:
    """Images ``(n, H, W, C) uint8`` for the rows of ``inputs``: a ``(n, z_dim)`` noise
    array, or ``{name: (n, size)}`` with every input of the generator (see
    :mod:`model.card`; a z-only generator also takes ``{"z": z}``)."""
    if isinstance(inputs, dict) and len(generator.inputs) == 1:
        inputs = inputs["z"]
    if isinstance(inputs, dict):
        n = len(inputs["z"])
        chunks = ({k: v[i:i + batch_size] for k, v in inputs.items()} for i in range(0, n, batch_size))
    else:
        n = len(inputs)
        chunks = (inputs[i:i + batch_size] for i in range(0, n, batch_size))
    out = [to_uint8(generator(chunk, training=False)) for chunk in chunks]
    return np.concatenate(out)


def grid(images: np.ndarray, rows: int, cols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile ``rows * cols`` images ``(n, H, W, C)`` into one image with ``pad`` px gaps."""
    n, h, w, c = images.shape
    if n < rows * cols:
        raise ValueError(f"a {rows}x{cols} grid needs {rows * cols} images, got {n}")
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, np.uint8)
    for i in range(rows * cols):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        out[y:y + h, x:x + w] = images[i]
    return out


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between noise vectors ``a`` and ``b`` at fractions ``t``.

    Unlike a straight line, it keeps the norm typical of the prior, so the
    middle images are not washed out (White, "Sampling Generative Networks", 2016).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    t = np.asarray(t, np.float64)[:, None]
    if omega < 1e-6:  # (anti)parallel: fall back to a straight line
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


def save_png(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write an ``(H, W, C) uint8`` array as PNG, atomically (gray if C == 1)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(tmp, format="PNG")


def save_gif(frames: list[str | os.PathLike], path: str | os.PathLike, ms_per_frame: int = 400) -> None:
    """Animate PNG ``frames`` into a looping GIF (the last frame is held longer)."""
    from PIL import Image

    images = [Image.open(f).convert("RGB") for f in frames]
    durations = [ms_per_frame] * (len(images) - 1) + [ms_per_frame * 4]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)


def vary_input(card, name: str, values, count: int, seed: int = 0, dim: int = 0) -> dict[str, np.ndarray]:
    """Inputs for a ``count x len(values)`` grid, row-major: row ``r`` holds one draw of
    every input (:func:`model.card.sample_inputs`), and along the row input ``name``
    takes each of ``values``: a class index for a ``onehot`` input, else the value of
    its component ``dim`` (the other components keep the row's draw)."""
    from model.card import sample_inputs

    spec = card.input(name)
    values = np.asarray(values)
    base = sample_inputs(card, count, seed)
    out = {k: np.repeat(v, len(values), axis=0) for k, v in base.items()}
    if spec.kind == "onehot":
        out[name] = np.tile(np.eye(spec.size, dtype=np.float32)[values.astype(int)], (count, 1))
    else:
        out[name][:, dim] = np.tile(values.astype(np.float32), count)
    return out


def input_grids(card, generator, seed: int = 0, rows: int = 8, columns: int = 10) -> dict[str, tuple[np.ndarray, str]]:
    """What each declared extra input does, as grids ``{file name: (image, caption)}``:
    a ``onehot`` input gives one row per class (the same noise down each column); a
    ``continuous`` or ``attribute`` input gives, per component, ``rows`` draws with that
    component swept along the row (an EGAN sweep). A ``continuous`` input of a generator
    that also takes a ``onehot`` input (InfoGAN's codes) gives the paper's traversal
    instead: one row per value of the one-hot input, z and the other codes fixed across
    the whole grid. A sweep spans the input's ``meta["sweep"]`` when the card gives one
    (InfoGAN: [-2, 2], beyond the training range [-1, 1]), else its ``range``."""
    grids = {}
    onehot = next((s for s in card.extra_inputs if s.kind == "onehot"), None)
    for spec in card.extra_inputs:
        if spec.kind == "onehot":
            classes = min(spec.size, 16)
            images = generate(generator, vary_input(card, spec.name, np.arange(classes), columns, seed))
            h, w, c = images.shape[1:]
            by_class = images.reshape(columns, classes, h, w, c).transpose(1, 0, 2, 3, 4).reshape(-1, h, w, c)
            names = ", ".join(spec.labels[:classes]) if spec.labels else f"0..{classes - 1}"
            grids[f"{spec.name}_rows.png"] = (grid(by_class, classes, columns),
                                              f"one row per value of {spec.name} ({names}); the same draw "
                                              f"of the other inputs down each column")
            continue
        low, high = spec.meta.get("sweep", spec.range)
        values = np.linspace(low, high, columns)
        for dim in range(spec.size):
            label = spec.labels[dim] if spec.labels else str(dim)
            if onehot is not None and spec.kind == "continuous":
                classes = min(onehot.size, 16)
                one = vary_input(card, spec.name, values, 1, seed, dim)  # one draw, swept along the row
                inputs = {k: np.tile(v, (classes, 1)) for k, v in one.items()}
                inputs[onehot.name] = np.repeat(np.eye(onehot.size, dtype=np.float32)[:classes], columns, axis=0)
                grids[f"{spec.name}_{label}_sweep.png"] = (
                    grid(generate(generator, inputs), classes, columns),
                    f"{spec.name}[{label}] from {low:g} to {high:g} along each row, one row per value of "
                    f"{onehot.name}; z and the other codes fixed for the whole grid")
                continue
            grids[f"{spec.name}_{label}_sweep.png"] = (
                sweep(card, generator, spec.name, dim, values, rows, seed),
                f"{spec.name}[{label}] from {low:g} to {high:g} along each row; the other inputs fixed per row")
    return grids


def sweep(card, generator, name: str, dim: int, values, rows: int, seed: int = 0) -> np.ndarray:
    """A ``rows x len(values)`` grid image: input ``name``'s component ``dim`` set to each of
    ``values`` along every row, the other inputs one draw per row."""
    return grid(generate(generator, vary_input(card, name, values, rows, seed, dim)), rows, len(values))


def attribute_sweeps(run_dir, out_dir, high: float, rows: int = 8, columns: int = 11, seed: int = 0) -> dict:
    """One sweep grid per component of every ``attribute`` input of a run (EGAN's c), from 0 to
    ``high``, into the existing folder ``out_dir`` as ``{input}_{label}.png``, plus
    ``sweeps.json``. Raises ``ValueError`` when the run's card declares no such input."""
    from pathlib import Path

    from model.card import load_generator

    card, generator = load_generator(run_dir)
    specs = [s for s in card.extra_inputs if s.kind == "attribute"]
    if not specs:
        raise ValueError(f"{run_dir}: the model card declares no attribute input c (inputs: "
                         f"{[s.name for s in card.inputs]}); train an EGAN (TrainEGAN)")
    values = np.linspace(0.0, high, columns)
    index = {}
    for spec in specs:
        for dim in range(spec.size):
            label = spec.labels[dim] if spec.labels else str(dim)
            name = f"{spec.name}_{label}.png"
            save_png(sweep(card, generator, spec.name, dim, values, rows, seed), Path(out_dir) / name)
            index[name] = {"input": spec.name, "component": label, "values": [round(float(v), 4) for v in values],
                           "rows": rows, "seed": seed}
    (Path(out_dir) / "sweeps.json").write_text(json.dumps({"run": str(run_dir), "sweeps": index}, indent=2) + "\n")
    return index


def export_samples(run_dir, out_dir, n: int = 64, seed: int = 0, interpolations: int = 8,
                   interpolation_steps: int = 10) -> dict:
    """Samples of a run's exported generator (read through its model card) into the existing
    folder ``out_dir``: ``grid.png`` (8x8), ``samples/0000.png ...`` (``n`` images),
    ``interpolations.png`` (spherical, between random pairs of z; other inputs held at the
    pair's first draw), one grid per extra input (:func:`input_grids`), ``training.gif``
    (the fixed-noise grid over training, when the run kept it) and ``samples.json``
    (what each file shows). Returns that index."""
    from model.card import load_generator, sample_inputs

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    card, generator = load_generator(run_dir)
    images = generate(generator, sample_inputs(card, max(n, 64), seed))
    save_png(grid(images[:64], 8, 8), out_dir / "grid.png")
    for i in range(n):
        save_png(images[i], out_dir / "samples" / f"{i:04d}.png")
    ends = sample_inputs(card, 2 * interpolations, seed + 1)
    t = np.linspace(0.0, 1.0, interpolation_steps)
    path = {k: np.repeat(v[0::2], interpolation_steps, axis=0) for k, v in ends.items()}
    path["z"] = np.concatenate([slerp(ends["z"][2 * i], ends["z"][2 * i + 1], t) for i in range(interpolations)])
    save_png(grid(generate(generator, path), interpolations, interpolation_steps), out_dir / "interpolations.png")
    index = {"grid.png": "64 samples", "samples/": f"{n} samples, one PNG each",
             "interpolations.png": "one row per random pair of z, spherical interpolation"}
    for name, (image, caption) in input_grids(card, generator, seed).items():
        save_png(image, out_dir / name)
        index[name] = caption
    frames = sorted((run_dir / "progress").glob("step-*.png"))
    if frames:
        save_gif(frames, out_dir / "training.gif")
        index["training.gif"] = "the fixed-noise grid over training"
    (out_dir / "samples.json").write_text(json.dumps({"run": str(run_dir), "variant": card.variant,
                                                      "seed": seed, "files": index}, indent=2) + "\n")
    return index
