"""Putting a completion into the known pixels: exact Poisson blending on the hole, or a paste
(``BLENDS``); known pixels always come out exactly as they went in."""
from __future__ import annotations

import numpy as np

BLENDS = ("poisson", "paste")


def blend(images: np.ndarray, completed: np.ndarray, masks: np.ndarray, method: str = "poisson") -> np.ndarray:
    """The completion blended into the known pixels: ``(n, S, S, C) uint8`` (or one
    ``(H, W, C)`` image with an ``(H, W)`` mask).

    ``paste``: completed pixels in the hole, the known pixels as they are. ``poisson``:
    the hole gets the completion's gradients with the known pixels around it as the
    boundary (:func:`_poisson`). Either way the hole's own pixels in ``images`` are
    never read (they are replaced by the completion first) and every known pixel comes
    out exactly as it went in."""
    if method not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {method!r}")
    images, completed, masks = np.asarray(images), np.asarray(completed), np.asarray(masks, bool)
    if images.ndim == 3:
        return blend(images[None], completed[None], masks[None], method)[0]
    known = np.where(masks[..., None], completed, images)  # the only image OpenCV gets
    if method == "paste":
        return known
    return np.stack([_poisson(k, c, m) for k, c, m in zip(known, completed, masks)])


def _poisson(known: np.ndarray, completed: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``known`` ``(H, W, C) uint8`` with the hole filled by the Poisson equation (Pérez et
    al. 2003): inside ``hole`` ``(H, W) bool`` the Laplacian of ``completed``, on the hole's
    border the known pixels (Dirichlet), at the image's edge no flux (Neumann).

    Solved exactly on the hole's pixels (one sparse LU, every channel at once). OpenCV's
    ``seamlessClone`` is not used: it reads the destination under the mask, so with the
    hole's pixels hidden from it (the completion pasted there) it returned the completion
    unchanged, a paste (docs/completion.md)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    if not hole.any():
        return known
    if hole.all():  # every other hole (a 4-connected part) borders a known pixel: one solution
        raise ValueError("Poisson blending needs known pixels around the hole; the mask hides the whole image")
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    count = len(ys)
    index = np.full((h, w), -1)
    index[ys, xs] = np.arange(count)
    known_f, guide = known.astype(np.float64), completed.astype(np.float64)
    diagonal = np.zeros(count)
    b = np.zeros((count, known.shape[-1]))
    rows, cols = [], []
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ny, nx = ys + dy, xs + dx
        p = np.nonzero((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w))[0]  # the edge's neighbour is in the image
        qy, qx = ny[p], nx[p]
        diagonal[p] += 1
        b[p] += guide[ys[p], xs[p]] - guide[qy, qx]  # the completion's gradient across this edge
        q = index[qy, qx]
        inner = q >= 0
        rows.append(p[inner])
        cols.append(q[inner])
        np.add.at(b, p[~inner], known_f[qy[~inner], qx[~inner]])  # a known neighbour: the boundary value
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = coo_matrix((np.concatenate([diagonal, -np.ones(len(rows))]),
                         (np.concatenate([np.arange(count), rows]), np.concatenate([np.arange(count), cols]))),
                        shape=(count, count)).tocsc()
    solved = splu(matrix).solve(b)
    out = known.copy()
    out[ys, xs] = np.clip(np.rint(solved), 0, 255).astype(known.dtype)
    return out
