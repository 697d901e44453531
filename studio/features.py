"""Optional studio features, switched on by the installed code.

Projection (``model.apps.project.project_faces``) and completion
(``model.apps.complete.complete_faces``) are looked up, not imported unconditionally:
the studio shows their panels only when the functions exist. Alignment of an
uploaded photo uses the project's aligner and image decoder (always installed).
"""
from __future__ import annotations

import base64
import importlib
import importlib.util
import io
import threading

import numpy as np

#: Pixels an uploaded photo may have (decoded size); far above a phone photo (12 MP).
MAX_UPLOAD_PIXELS = 40_000_000
#: Faces returned by /api/align (the largest first).
MAX_FACES = 8
#: Where projection and completion live, when installed: (module, function).
PROJECT = ("model.apps.project", "project_faces")
COMPLETE = ("model.apps.complete", "complete_faces")


def optional(module: str, function: str):
    """``module.function`` when that module is installed and defines it, else None."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ModuleNotFoundError:  # the parent package is missing
        return None
    return getattr(importlib.import_module(module), function, None)


def available() -> dict[str, bool]:
    """Which optional panels the installed code supports."""
    return {"align": True, "project": optional(*PROJECT) is not None, "complete": optional(*COMPLETE) is not None}


def png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    """PNG of an ``(H, W, C) uint8`` image, enlarged ``scale`` times (nearest neighbour:
    the generator's own pixels, not invented detail)."""
    from PIL import Image

    img = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an ``(H, W, C) uint8`` image."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def decode_data_url(text: str, what: str, max_pixels: int = MAX_UPLOAD_PIXELS) -> np.ndarray:
    """An image data URL (or bare base64) -> ``(H, W, 3) uint8``; ``ValueError`` naming ``what``."""
    from pipeline.imaging import DecodeError, decode_rgb

    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise ValueError(f"{what}: not a base64 data URL") from None
    try:
        return decode_rgb(data, max_pixels)
    except DecodeError as exc:
        raise ValueError(f"{what}: {exc}") from None


def align_photo(data: bytes, size: int, max_pixels: int = MAX_UPLOAD_PIXELS) -> list[dict]:
    """The faces in an uploaded photo, aligned as the training data were:
    ``[{"image": (size, size, 3) uint8, "box", "score"}]``, largest first.
    Raises ``pipeline.imaging.DecodeError`` or ``pipeline.align.aligner.NoFace`` with a reason."""
    from pipeline.imaging import decode_rgb

    rgb = decode_rgb(data, max_pixels)
    with _ALIGN_LOCK:  # one dlib detector per size, shared by the request threads
        faces = _aligner(size).align(rgb, strict=True)
    return [{"image": f.image, "box": [int(v) for v in f.box], "score": round(float(f.score), 3)}
            for f in faces[:MAX_FACES]]


_ALIGNERS: dict = {}
_ALIGN_LOCK = threading.Lock()


def _aligner(size: int):
    from pipeline.align.aligner import FaceAligner

    if size not in _ALIGNERS:
        _ALIGNERS[size] = FaceAligner(size=size, all_faces=True)
    return _ALIGNERS[size]
