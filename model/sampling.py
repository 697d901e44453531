"""Sampling an exported generator: noise, images and grids."""
from __future__ import annotations

import numpy as np


def noise(n: int, z_dim: int = 100, dist: str = "normal", seed: int = 0) -> np.ndarray:
    """A reproducible ``(n, z_dim) float32`` noise batch."""
    rng = np.random.default_rng(seed)
    if dist == "uniform":
        return rng.uniform(-1.0, 1.0, (n, z_dim)).astype(np.float32)
    return rng.standard_normal((n, z_dim)).astype(np.float32)


def to_uint8(images) -> np.ndarray:
    """Generator output in [-1, 1] -> ``uint8`` in [0, 255]."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def generate(generator, z: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Images ``(n, H, W, C) uint8`` for the noise rows of ``z``."""
    out = [to_uint8(generator(z[i:i + batch_size], training=False)) for i in range(0, len(z), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


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
