"""The embedded ``sample`` data set: varied photos made from two public-domain portraits.

It needs nothing outside the installed packages: scikit-image ships the NASA
portrait of astronaut Eileen Collins (``skimage.data.astronaut()``) and
matplotlib ships the US Navy portrait of Grace Hopper (``grace_hopper.jpg``).
Each photo puts one portrait, randomly rotated, scaled, flipped, colour
jittered and noised, on a random background and canvas, and re-encodes it as
JPEG at a random quality. It is honest smoke data for running the whole DAG
offline in minutes; it has two identities, so a model trained on it learns
little. Real training uses CelebA.

Photo ``i`` depends only on ``(seed, i)``: asking for more photos later keeps
the first ones byte-identical, so downstream stages re-process only new ones.
"""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from pipeline.atomic import atomic_file, locked
from pipeline.jsonl import read_jsonl, write_jsonl

PORTRAITS = ("astronaut", "grace_hopper")
INDEX = "index.jsonl"
MAX_ROTATION = 25.0  # degrees, either way


@lru_cache(maxsize=None)
def portrait(name: str) -> Image.Image:
    """One of :data:`PORTRAITS` as an RGB PIL image."""
    if name == "astronaut":
        from skimage import data
        return Image.fromarray(data.astronaut())
    if name == "grace_hopper":
        from matplotlib import cbook
        with cbook.get_sample_data("grace_hopper.jpg") as fh:
            return Image.open(fh).convert("RGB")
    raise ValueError(f"unknown portrait {name!r}; choose one of {PORTRAITS}")


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    kind = rng.integers(3)
    if kind == 0:  # flat colour
        return Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    if kind == 1:  # linear gradient between two colours
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        ramp = a + (b - a) * t[:, None]
        arr = np.broadcast_to(ramp[None] if len(t) == w else ramp[:, None], (h, w, 3))
        return Image.fromarray(arr.astype(np.uint8))
    # smooth coloured noise: a small random image blown up and blurred
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(8))


def make_photo(seed: int, index: int) -> tuple[bytes, dict]:
    """JPEG bytes of sample photo ``index`` and the parameters that made it."""
    rng = np.random.default_rng([seed, index])
    name = PORTRAITS[int(rng.integers(len(PORTRAITS)))]
    img = portrait(name)
    scale = float(rng.uniform(0.45, 1.0))
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    flip = bool(rng.random() < 0.5)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(float(rng.uniform(0.75, 1.25)))
    rotated = img.convert("RGBA").rotate(angle, resample=Image.BICUBIC, expand=True)

    canvas_w = int(rotated.width * rng.uniform(1.0, 1.6))
    canvas_h = int(rotated.height * rng.uniform(1.0, 1.6))
    canvas = _background(rng, (canvas_w, canvas_h))
    x = int(rng.integers(0, canvas_w - rotated.width + 1))
    y = int(rng.integers(0, canvas_h - rotated.height + 1))
    canvas.paste(rotated, (x, y), rotated)

    sigma = float(rng.uniform(0, 8))
    arr = np.asarray(canvas, dtype=np.float32) + rng.normal(0, sigma, (canvas_h, canvas_w, 3))
    quality = int(rng.integers(40, 96))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    params = {"portrait": name, "scale": round(scale, 4), "angle": round(angle, 3),
              "flip": flip, "offset": [x, y], "canvas": [canvas_w, canvas_h],
              "noise_sigma": round(sigma, 3), "jpeg_quality": quality}
    return buf.getvalue(), params


def sample_key(index: int) -> str:
    """The stable key (file name) of sample photo ``index``."""
    return f"sample_{index:05d}.jpg"


def index_row(seed: int, index: int, params: dict) -> dict:
    """The ``index.jsonl`` row of photo ``index``: how it was made, and its identity."""
    return {"key": sample_key(index), "source": "sample", "seed": seed,
            "identity": PORTRAITS.index(params["portrait"]), **params}


def write_sample(out_dir, n: int, seed: int,
                 progress: Callable[[int, int], None] | None = None) -> int:
    """Make the photos ``0..n-1`` that ``out_dir`` lacks and index them.

    Each photo is written atomically; their rows are merged into
    ``index.jsonl`` (sorted by key) under a lock, so runs asking for
    different ``n`` may overlap. ``progress(done, total)`` is called after
    each new photo. Returns how many were made.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / INDEX
    known = {row["key"] for row in read_jsonl(index)}
    todo = [i for i in range(n) if sample_key(i) not in known]
    rows = {}
    for done, i in enumerate(todo, 1):
        data, params = make_photo(seed, i)
        with atomic_file(out / sample_key(i)) as fh:
            fh.write(data)
        rows[sample_key(i)] = index_row(seed, i, params)
        if progress is not None:
            progress(done, len(todo))
    with locked(out / ".index.lock"):
        merged = {row["key"]: row for row in read_jsonl(index)} | rows
        write_jsonl(index, (merged[key] for key in sorted(merged)))
    return len(todo)
