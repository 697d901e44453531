"""The holes a completion network is trained on, as small pure functions (numpy in, numpy out).

* :func:`free_form_mask`: random brush strokes, the free-form masks of DeepFill v2 (Yu et
  al. 2019, their Algorithm 1), scaled to an aligned face of side ``size``;
* :func:`training_mask`: one training hole: the center square, the eyes or mouth box (the
  boxes of :func:`make_mask`, moved and resized a little) or strokes;
* :func:`training_masks`: a batch of them from a seed and a batch index, so that a batch's
  holes depend on nothing else (a resumed run draws the very holes an uninterrupted one does).

Every mask is ``(size, size) bool``, ``True`` = missing; none is empty, none is all missing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: The kinds :func:`training_mask` draws, with their shares of a batch.
TRAINING_KINDS = {"center": 0.25, "eyes": 0.2, "mouth": 0.2, "free-form": 0.35}
#: Box masks are moved by up to this fraction of the side and scaled by up to 1 +- this.
BOX_JITTER = 0.06
#: DeepFill v2's stroke settings as fractions of the side: vertices per stroke, the largest
#: turn between segments (radians), segment length and brush width.
STROKE_VERTICES = (4, 12)
STROKE_ANGLE = 2 * np.pi / 5
STROKE_LENGTH = (0.04, 0.25)
STROKE_WIDTH = (0.04, 0.12)
#: Strokes per mask and the share of the face a free-form hole covers at most.
STROKES = (1, 4)
MAX_FREE_FORM = 0.6


def free_form_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """Random brush strokes, ``(size, size) bool`` (``True`` = missing): 1-4 strokes, each a
    polyline of 4-12 vertices turning by up to 72 degrees, drawn with round joints (DeepFill v2's
    generator, lengths and widths as fractions of ``size``). Never empty; a draw that
    covers more than :data:`MAX_FREE_FORM` of the image is drawn again."""
    import cv2

    while True:
        canvas = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(STROKES[0], STROKES[1] + 1)):
            x, y = rng.uniform(0, size, 2)
            width = max(1, int(round(rng.uniform(*STROKE_WIDTH) * size)))
            angle0 = rng.uniform(0, 2 * np.pi)
            for k in range(rng.integers(STROKE_VERTICES[0], STROKE_VERTICES[1] + 1)):
                turn = rng.uniform(-STROKE_ANGLE, STROKE_ANGLE)
                angle = angle0 + turn + (np.pi if k % 2 else 0.0)  # DeepFill zig-zags back and forth
                length = rng.uniform(*STROKE_LENGTH) * size
                nx = float(np.clip(x + length * np.cos(angle), 0, size - 1))
                ny = float(np.clip(y + length * np.sin(angle), 0, size - 1))
                cv2.line(canvas, (int(x), int(y)), (int(nx), int(ny)), 1, width)
                cv2.circle(canvas, (int(nx), int(ny)), width // 2, 1, -1)
                x, y = nx, ny
        mask = canvas.astype(bool)
        if mask.any() and mask.mean() <= MAX_FREE_FORM:
            return mask


def box_mask(box: tuple[int, int, int, int], size: int, rng: np.random.Generator | None = None,
             jitter: float = BOX_JITTER) -> np.ndarray:
    """``(size, size) bool`` with the box ``(y0, y1, x0, x1)`` missing; with ``rng`` the box is
    moved by up to ``jitter * size`` pixels each way and its sides scaled by up to ``1 +- jitter``,
    clipped to the image (at least 2 pixels a side)."""
    y0, y1, x0, x1 = box
    if rng is not None:
        h, w = (y1 - y0) * rng.uniform(1 - jitter, 1 + jitter), (x1 - x0) * rng.uniform(1 - jitter, 1 + jitter)
        cy = (y0 + y1) / 2 + rng.uniform(-jitter, jitter) * size
        cx = (x0 + x1) / 2 + rng.uniform(-jitter, jitter) * size
        y0, y1 = int(round(cy - h / 2)), int(round(cy + h / 2))
        x0, x1 = int(round(cx - w / 2)), int(round(cx + w / 2))
    y0, x0 = min(max(y0, 0), size - 2), min(max(x0, 0), size - 2)
    y1, x1 = min(max(y1, y0 + 2), size), min(max(x1, x0 + 2), size)
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding box ``(y0, y1, x0, x1)`` of a mask's missing pixels."""
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def training_mask(kind: str, size: int, rng: np.random.Generator, margin: float = 0.0) -> np.ndarray:
    """One training hole of ``kind`` (:data:`TRAINING_KINDS`): the ``center``, ``eyes`` or
    ``mouth`` box of :func:`make_mask` (at the aligner's ``margin``), moved
    and resized by :data:`BOX_JITTER` in half the draws and exact in the other half, or
    ``free-form`` strokes."""
    if kind == "free-form":
        return free_form_mask(size, rng)
    if kind not in TRAINING_KINDS:
        raise ValueError(f"training mask kind must be one of {tuple(TRAINING_KINDS)}, got {kind!r}")
    exact = make_mask(kind, size, margin=margin)
    return exact if rng.random() < 0.5 else box_mask(mask_box(exact), size, rng)


def training_masks(seed: int, index: int, n: int, size: int, margin: float = 0.0) -> np.ndarray:
    """The holes of training batch ``index``: ``(n, size, size) bool``, kinds drawn with the
    shares of :data:`TRAINING_KINDS`, everything from ``(seed, index)`` alone."""
    rng = np.random.default_rng([seed, index])
    kinds = list(TRAINING_KINDS)
    picks = rng.choice(len(kinds), n, p=list(TRAINING_KINDS.values()))
    return np.stack([training_mask(kinds[k], size, rng, margin) for k in picks])


# -- the completion masks (--mask) and the context weights ----------------------------------

#: Built-in masks (``--mask``); ``--mask-file`` gives any other.
MASKS = ("center", "left", "right", "eyes", "mouth", "free-form", "random-pixels", "grid")
#: Side of the window over which a known pixel counts missing neighbours (Yeh et al.: 7).
WINDOW = 7
#: Share of pixels missing in the ``random-pixels`` mask (Yeh et al.'s random mask: 80%).
RANDOM_MISSING = 0.8
#: Known pixels lie on a lattice of this pitch in the ``grid`` mask (bamos/dcgan-completion).
GRID_PITCH = 4
#: Border around the eye and mouth landmarks of the ``eyes``/``mouth`` masks, as a fraction of the side.
FEATURE_PAD = 0.0625
#: Landmark indices (dlib's 68) of the ``eyes`` and ``mouth`` masks.
FEATURE_LANDMARKS = {"eyes": range(36, 48), "mouth": range(48, 68)}


# -- masks --------------------------------------------------------------------------------------

def make_mask(kind: str, size: int, *, margin: float = 0.0, seed: int = 0,
              missing: float = RANDOM_MISSING) -> np.ndarray:
    """A ``(size, size) bool`` mask, ``True`` = missing, for an aligned face of side ``size``.

    ``center``: the central square of half the side (25% of the area); ``left`` /
    ``right``: that half of the image; ``eyes`` / ``mouth``: the box around those
    landmarks of the aligner's template (pipeline/align/aligner.py, at ``margin``) grown by
    :data:`FEATURE_PAD`; ``free-form``: random brush strokes (DeepFill v2's masks,
    model/apps/masks.py, seeded); ``random-pixels``: each pixel missing with probability
    ``missing`` (seeded); ``grid``: only every :data:`GRID_PITCH`-th pixel of every
    :data:`GRID_PITCH`-th row known."""
    mask = np.zeros((size, size), bool)
    half = size // 2
    if kind == "center":
        lo = (size - half) // 2
        mask[lo:lo + half, lo:lo + half] = True
    elif kind == "left":
        mask[:, :half] = True
    elif kind == "right":
        mask[:, half:] = True
    elif kind in FEATURE_LANDMARKS:
        from pipeline.align.aligner import template_points
        points = template_points(size, margin)[list(FEATURE_LANDMARKS[kind])]
        pad = FEATURE_PAD * size
        x0, y0 = np.floor(points.min(0) - pad).astype(int)
        x1, y1 = np.ceil(points.max(0) + pad).astype(int)
        mask[max(y0, 0):min(y1, size), max(x0, 0):min(x1, size)] = True
    elif kind == "free-form":
        from model.apps.masks import free_form_mask
        mask = free_form_mask(size, np.random.default_rng(seed))
    elif kind == "random-pixels":
        mask = np.random.default_rng(seed).random((size, size)) < missing
    elif kind == "grid":
        mask[:] = True
        mask[::GRID_PITCH, ::GRID_PITCH] = False
    else:
        raise ValueError(f"mask must be one of {', '.join(MASKS)} (or give --mask-file), got {kind!r}")
    return mask


def check_mask(mask, size: int, name: str = "mask") -> np.ndarray:
    """``mask`` as ``(size, size) bool`` with something missing and something known, else one
    clear ``ValueError`` naming ``name``."""
    mask = np.asarray(mask)
    if mask.shape != (size, size):
        raise ValueError(f"{name}: must be {size}x{size} (the aligned face's side), got shape {mask.shape}")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError(f"{name}: nothing is missing (no True/white pixel): nothing to complete; "
                         f"mark the pixels to fill")
    if mask.all():
        raise ValueError(f"{name}: every pixel is missing: nothing is known to complete from; "
                         f"leave some of the face unmasked (or use model.apps.project's sampling instead)")
    return mask


def read_mask_file(path: str | os.PathLike, size: int) -> np.ndarray:
    """A mask image (white/non-black = missing, black = known; any format Pillow reads, any
    mode) as ``(size, size) bool``; one clear error for an unreadable file, the wrong size, or a
    mask with nothing missing or nothing known."""
    from pipeline.imaging import DecodeError, decode_rgb

    try:
        rgb = decode_rgb(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"mask file {path}: cannot read it ({exc.strerror or exc})") from None
    except DecodeError as exc:
        raise ValueError(f"mask file {path}: not a readable image ({exc})") from None
    return check_mask(rgb.max(axis=2) > 127, size, f"mask file {path}")


def build_masks(kind: str, n: int, size: int, *, margin: float = 0.0, seed: int = 0) -> np.ndarray:
    """``(n, size, size) bool`` masks of ``kind``; ``random-pixels`` and ``free-form`` draw one per image."""
    if kind in ("random-pixels", "free-form"):
        return np.stack([make_mask(kind, size, seed=seed + i) for i in range(n)])
    return np.repeat(make_mask(kind, size, margin=margin, seed=seed)[None], n, axis=0)


def context_weights(masks: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Yeh et al.'s importance weights, ``(n, S, S) float32`` from ``(n, S, S)`` or ``(S, S)``
    bool masks (``True`` = missing): a known pixel weighs the share of missing pixels among
    the ``window x window`` pixels around it that lie in the image; a missing pixel weighs 0.
    Known pixels far from the hole weigh 0 too: only the hole's surroundings steer the fit."""
    masks = np.asarray(masks, bool)
    single = masks.ndim == 2
    m = masks[None] if single else masks
    r = window // 2

    def box_sum(a: np.ndarray) -> np.ndarray:  # sum over the window, by an integral image
        p = np.pad(a, ((0, 0), (r + 1, r), (r + 1, r)))
        c = p.cumsum(1).cumsum(2)
        return c[:, window:, window:] - c[:, :-window, window:] - c[:, window:, :-window] + c[:, :-window, :-window]

    missing = box_sum(m.astype(np.float64))
    inside = box_sum(np.ones_like(m, np.float64))
    w = np.where(m, 0.0, missing / inside).astype(np.float32)
    return w[0] if single else w
