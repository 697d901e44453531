"""Decoding raw image bytes into upright 8-bit RGB arrays, with a reason on failure.

Photos arrive as JPEG with EXIF rotation tags, grayscale, RGBA, palette, CMYK,
16-bit PNG/TIFF or truncated files. Everything downstream wants one thing:
an upright ``(H, W, 3) uint8`` RGB array; everything else is a
:class:`DecodeError` whose ``reason`` goes into the rejection log.

This is the one decoder of the project: the crawler (which keeps images) and
alignment (which reads them) share its formats (:data:`FORMATS`), its pixel
cap (:data:`MAX_PIXELS`) and its reasons (``empty``, ``undecodable``,
``truncated``, ``too_large``), so the crawler keeps exactly what alignment
can read.
"""
from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Refuse images above this many pixels (far below Pillow's ~179 MP default);
#: a 64x64 face never needs more and bombs are cheap to make.
MAX_PIXELS = 80_000_000
#: The EXIF tag that says how to turn the stored pixels upright.
ORIENTATION = 0x0112


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


#: EXIF orientations that swap width and height (transpose, 90 and 270 degree turns).
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


#: The formats Pillow may decode here (PPM covers .ppm and .pgm). Others are
#: never opened: Pillow would hand EPS to Ghostscript, and PSD, ICO, ... add
#: attack surface for no image a face data set needs.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM")


@contextmanager
def _decoding(data: bytes):
    """Pillow's many failure modes as :class:`DecodeError` reasons."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except DecodeError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DecodeError("too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise DecodeError("undecodable", f"not a {'/'.join(FORMATS)} image (starts {data[:8]!r})") from None
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "undecodable"
        raise DecodeError(reason, str(exc) or type(exc).__name__) from None
    except Exception as exc:  # Pillow raises assorted errors on corrupt input
        raise DecodeError("undecodable", f"{type(exc).__name__}: {exc}") from None


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The image, structure verified and size checked, pixels not decoded yet."""
    if not data:
        raise DecodeError("empty", "zero bytes")
    with Image.open(io.BytesIO(data), formats=FORMATS) as probe:
        if probe.width * probe.height > max_pixels:
            raise DecodeError("too_large", f"{probe.width}x{probe.height} is over the "
                                           f"{max_pixels} pixel cap")
        probe.verify()  # checksums and chunk structure (PNG); leaves probe unusable
    return Image.open(io.BytesIO(data), formats=FORMATS)


def load_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The fully decoded PIL image of ``data``, as stored (no EXIF turn, any mode).

    Raises :class:`DecodeError` with reason ``empty``, ``undecodable``,
    ``truncated`` or ``too_large`` (checked from the header, before decoding).
    """
    with _decoding(data):
        img = _open(data, max_pixels)
        img.load()
    return img


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``data`` to an upright ``(H, W, 3) uint8`` RGB array.

    EXIF orientation is applied. Raises :class:`DecodeError` as :func:`load_image`.
    """
    return decode_reduced(data, None, max_pixels)[0]


def decode_reduced(data: bytes, factor_for: Callable[[int, int], int] | None = None,
                   max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, int]:
    """Like :func:`decode_rgb`, but a JPEG may be decoded ``factor`` times smaller.

    ``factor_for(width, height)`` gets the upright full size and returns 1, 2,
    4 or 8; libjpeg then skips that much of the inverse DCT (Pillow's
    ``draft``), much faster than decoding in full and resizing.
    Returns ``(rgb, factor)``: decoded pixel ``p`` covers source pixels around
    ``(p + 0.5) * factor - 0.5``. Other formats always decode in full (factor 1).
    """
    factor = 1
    with _decoding(data):
        img = _open(data, max_pixels)
        if factor_for is not None and img.format == "JPEG":
            w, h = upright_size(img)
            wanted = int(factor_for(w, h))
            if wanted > 1 and img.draft(None, (img.width // wanted, img.height // wanted)):
                factor = img.decoderconfig[0]  # the scale libjpeg will use
        img.load()
    if _orientation(img) != 1:
        try:
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the pixels
        except Exception:  # a corrupt EXIF block: the pixels are fine, keep them as stored
            pass
    return np.asarray(_to_rgb(img)), factor


def upright_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of ``img`` once its EXIF orientation is applied."""
    w, h = img.size
    return (h, w) if _orientation(img) in _SWAPS_SIDES else (w, h)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright), 1 when the EXIF data cannot be read."""
    try:
        return int(img.getexif().get(ORIENTATION, 1))
    except Exception:
        return 1


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3) uint8`` array (lossless, for aligned faces)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
