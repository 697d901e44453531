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


def _open(data: bytes, max_pixels: int, verify: bool = False) -> Image.Image:
    """The image, size checked (and with ``verify`` its structure: PNG chunk
    checksums), pixels not decoded yet."""
    if not data:
        raise DecodeError("empty", "zero bytes")
    img = Image.open(io.BytesIO(data), formats=FORMATS)
    if img.width * img.height > max_pixels:
        raise DecodeError("too_large", f"{img.width}x{img.height} is over the {max_pixels} pixel cap")
    if not verify:
        return img
    img.verify()  # leaves img unusable: open again
    return Image.open(io.BytesIO(data), formats=FORMATS)


def load_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The fully decoded PIL image of ``data``, as stored (no EXIF turn, any mode).

    Raises :class:`DecodeError` with reason ``empty``, ``undecodable``,
    ``truncated`` or ``too_large`` (checked from the header, before decoding).
    The structure is verified too (PNG chunk checksums): what the crawler keeps
    is whole.
    """
    with _decoding(data):
        img = _open(data, max_pixels, verify=True)
        img.load()
    return img


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``data`` to an upright ``(H, W, 3) uint8`` RGB array.

    EXIF orientation is applied. Raises :class:`DecodeError` as :func:`load_image`;
    :class:`Photo` decodes at reduced scale too.
    """
    return Photo(data, max_pixels).rgb(1)[0]


def upright_size(img: Image.Image, orientation: int | None = None) -> tuple[int, int]:
    """``(width, height)`` of ``img`` once its EXIF ``orientation`` (default:
    read from ``img``) is applied."""
    w, h = img.size
    orientation = _orientation(img) if orientation is None else orientation
    return (h, w) if orientation in _SWAPS_SIDES else (w, h)


def _orientation(img: Image.Image, header_only: bool = False) -> int:
    """The EXIF orientation (1 = upright), 1 when the EXIF data cannot be read.

    ``header_only``: for a PNG, only an eXIf chunk before the pixel data counts
    (Pillow would decode the whole image to look for one after it).
    """
    try:
        if header_only and img.format == "PNG":
            return _png_orientation(img.info.get("exif"))
        return int(img.getexif().get(ORIENTATION, 1))
    except Exception:
        return 1


def _png_orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    parsed = Image.Exif()
    parsed.load(exif)
    return int(parsed.get(ORIENTATION, 1))


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3) uint8`` array (lossless, for aligned faces)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


#: EXIF orientation -> numpy steps turning the stored pixels upright
#: (``rot`` quarter turns counter-clockwise after an optional transpose), as
#: Pillow's ``exif_transpose`` does.
_UPRIGHT = {2: (False, 0, True), 3: (False, 2, False), 4: (False, 2, True), 5: (True, 0, False),
            6: (False, 3, False), 7: (True, 2, False), 8: (False, 1, False)}


def _turn_upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    transpose, quarter_turns, mirror = _UPRIGHT.get(orientation, (False, 0, False))
    if transpose:
        pixels = pixels.transpose(1, 0, 2)
    pixels = np.rot90(pixels, quarter_turns)
    if mirror:
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(pixels)


class Photo:
    """One encoded photo: its header read once, its pixels decoded on demand.

    The constructor checks the format and the pixel cap (a bad file fails
    here with a :class:`DecodeError`) and knows the upright size. :meth:`rgb`
    decodes, ``factor`` (1, 2, 4 or 8) times smaller where the format allows
    it, upright, and returns the factor it used: decoded pixel ``p`` covers
    source pixels around ``(p + 0.5) * factor - 0.5``.

    Colour and grayscale JPEGs that end with their end-of-image marker are
    decoded by OpenCV straight into a numpy array (libjpeg-turbo, with its DCT
    scaling for smaller decodes): about a third of the time of Pillow's decode
    and copy into numpy. Everything else, truncated JPEGs included (so they
    are rejected as ``truncated``), goes through Pillow.
    """

    def __init__(self, data: bytes, max_pixels: int = MAX_PIXELS):
        self.data = data
        with _decoding(data):
            with _open(data, max_pixels) as img:
                self.format, self.mode = img.format, img.mode
                self.orientation = _orientation(img, header_only=True)
                self.width, self.height = upright_size(img, self.orientation)

    def _by_opencv(self) -> bool:
        return (self.format == "JPEG" and self.mode in ("RGB", "L")
                and self.data.rstrip(b"\0")[-2:] == b"\xff\xd9")

    def rgb(self, factor: int = 1) -> tuple[np.ndarray, int]:
        """``(H, W, 3) uint8`` RGB, ``factor`` times smaller where the format allows."""
        pixels, scale, order = self.pixels(factor)
        if order == "BGR":
            import cv2
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        return pixels, scale

    def pixels(self, factor: int = 1) -> tuple[np.ndarray, int, str]:
        """Like :meth:`rgb`, but in the decoder's channel order ("BGR" from
        OpenCV, "RGB" from Pillow): a conversion saved where the order does
        not matter until the end (landmarks come out the same either way)."""
        if self._by_opencv():
            import cv2
            scale = factor if factor in (2, 4, 8) else 1
            flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                     8: cv2.IMREAD_REDUCED_COLOR_8}[scale] | cv2.IMREAD_IGNORE_ORIENTATION
            bgr = cv2.imdecode(np.frombuffer(self.data, np.uint8), flags)
            if bgr is None:
                raise DecodeError("undecodable", "the JPEG decoder gave up on it")
            return _turn_upright(bgr, self.orientation), scale, "BGR"
        with _decoding(self.data):
            img = Image.open(io.BytesIO(self.data), formats=FORMATS)
            scale = 1
            if factor > 1 and img.format == "JPEG":
                if img.draft(None, (max(1, img.width // factor), max(1, img.height // factor))):
                    scale = img.decoderconfig[0] or 1
            img.load()
        # Loaded, a PNG's eXIf chunk after the pixel data is known too.
        self.orientation = _orientation(img)
        self.width, self.height = upright_size(img, self.orientation)
        if self.orientation != 1:
            try:
                ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the pixels
            except Exception:  # a corrupt EXIF block: the pixels are fine, keep them as stored
                pass
        return np.asarray(_to_rgb(img)), scale, "RGB"


class ArrayPhoto:
    """A decoded ``(H, W, 3) uint8`` image of a photo (channels in ``order``,
    "RGB" or "BGR") and its grayscale copy; ``factor`` says it is the source
    reduced that many times, and ``width``/``height`` are the source's."""

    def __init__(self, pixels: np.ndarray, factor: int = 1, order: str = "RGB"):
        self.pixels, self.factor, self.order = np.ascontiguousarray(pixels), factor, order
        self.height, self.width = pixels.shape[0] * factor, pixels.shape[1] * factor
        self._gray: np.ndarray | None = None

    def gray(self) -> np.ndarray:
        if self._gray is None:
            import cv2
            code = cv2.COLOR_BGR2GRAY if self.order == "BGR" else cv2.COLOR_RGB2GRAY
            self._gray = cv2.cvtColor(self.pixels, code)
        return self._gray

    def as_rgb(self, image: np.ndarray) -> np.ndarray:
        """``image`` (made from :attr:`pixels`) in RGB order."""
        return np.ascontiguousarray(image[..., ::-1]) if self.order == "BGR" else image
