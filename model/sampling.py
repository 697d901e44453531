"""Sampling an exported generator: noise, images, grids, interpolations, GIFs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def noise(n: int, z_dim: int = 100, dist: str = "uniform", seed: int = 0) -> np.ndarray:
    """A reproducible ``(n, z_dim) float32`` noise batch."""
    rng = np.random.default_rng(seed)
    if dist == "uniform":
        return rng.uniform(-1.0, 1.0, (n, z_dim)).astype(np.float32)
    return rng.standard_normal((n, z_dim)).astype(np.float32)


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
    tmp = path.with_name(f".tmp-{path.name}")
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(tmp, format="PNG")
    os.replace(tmp, path)


def save_gif(frames: list[str | os.PathLike], path: str | os.PathLike, ms_per_frame: int = 400) -> None:
    """Animate PNG ``frames`` into a looping GIF (the last frame is held longer)."""
    from PIL import Image

    images = [Image.open(f).convert("RGB") for f in frames]
    durations = [ms_per_frame] * (len(images) - 1) + [ms_per_frame * 4]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
