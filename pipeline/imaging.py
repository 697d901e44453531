"""Decoding raw image bytes into upright 8-bit RGB arrays, with a reason on failure.

Photos arrive as JPEG with EXIF rotation tags, grayscale, RGBA, palette, CMYK,
16-bit PNG/TIFF or truncated files. Everything downstream wants one thing:
an upright ``(H, W, 3) uint8`` RGB array; everything else is a
:class:`DecodeError` whose ``reason`` goes into the rejection log.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

#: Refuse images above this many pixels (far below Pillow's ~179 MP default);
#: a 64x64 face never needs more and bombs are cheap to make.
MAX_PIXELS = 80_000_000


class DecodeError(ValueError):
    """The bytes are not a usable image; ``reason`` is a short log-friendly code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit gray: scale to 8 bits by the actual range (a plain
        # convert("L") clips everything above 255 to white).
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0
        scale = 255.0 / hi if hi > 255 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels go on white, as a viewer would show them.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, F, 1


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``data`` to an upright ``(H, W, 3) uint8`` RGB array.

    EXIF orientation is applied. Raises :class:`DecodeError` with reason
    ``empty``, ``undecodable``, ``truncated`` or ``too_large``.
    """
    if not data:
        raise DecodeError("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise DecodeError("too_large", f"{img.width}x{img.height} exceeds {max_pixels} pixels")
            img.load()
    except DecodeError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DecodeError("too_large", str(exc)) from None
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "undecodable"
        raise DecodeError(reason, str(exc) or type(exc).__name__) from None
    except Exception as exc:  # Pillow raises assorted errors on corrupt input
        raise DecodeError("undecodable", f"{type(exc).__name__}: {exc}") from None
    img = ImageOps.exif_transpose(img)
    return np.asarray(_to_rgb(img))


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3) uint8`` array (lossless, for aligned faces)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
