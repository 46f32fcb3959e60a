"""Safe image decoding for every component (the API sniffs, workers decode).

Why this module exists instead of a bare ``Image.open``:

- The format is sniffed from magic bytes; a file name or Content-Type is never
  trusted, and only JPEG, PNG, WebP, BMP and TIFF are ever handed to Pillow.
- The pixel cap is ours, per call (``max_pixels``). Pillow's own
  decompression-bomb check reads a process-wide global and *warns* between its
  limit and twice that; changing the global would race between threads, so we
  construct the format's image class directly (which skips ``Image.open``'s
  check) and compare the header's size with the caller's cap before a single
  pixel is decoded.
- Pillow's ``LOAD_TRUNCATED_IMAGES`` stays False: truncated data is an error,
  never a half-grey picture.
- JPEGs are decoded with libjpeg's DCT scaling (``draft``) at the smallest
  scale still covering ``min_side``: a 12-MP photo needed at 512 px decodes at
  1/4 or 1/8 of the work.

Everything here is per call, so decoding is thread-safe; nothing at import
changes Pillow's global state. Only Pillow and the standard library are used:
the API process imports this module and must stay free of model libraries.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, ClassVar

from PIL import (
    BmpImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "SUPPORTED_FORMATS",
    "CorruptImage",
    "DecodedImage",
    "ImageError",
    "ImageTooLarge",
    "NotAnImage",
    "decode_image",
    "sniff_format",
]

SUPPORTED_FORMATS: tuple[str, ...] = ("jpeg", "png", "webp", "bmp", "tiff")

# Sizes a BMP info header can have; checking it keeps a text file that happens
# to start with "BM" from being called a bitmap.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME_ORIGINAL = 0x9003
_OFFSET_TIME_ORIGINAL = 0x9011
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4

# EXIF orientation value -> the transpositions that make the image upright.
_ORIENTATION_FIX: dict[int, tuple[Image.Transpose, ...]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}

_WHITE = (255, 255, 255)


class ImageError(Exception):
    """Base of every decoding failure; ``code`` is stable for APIs and rows."""

    code: ClassVar[str] = "image_error"


class NotAnImage(ImageError):
    """The bytes are not one of the supported image formats."""

    code = "not_an_image"


class CorruptImage(ImageError):
    """The bytes claim a supported format but cannot be decoded (truncated, broken)."""

    code = "corrupted_image"


class ImageTooLarge(ImageError):
    """The header announces more pixels than the cap (a decompression bomb or a huge scan)."""

    code = "image_too_large"

    def __init__(self, message: str, *, width: int, height: int) -> None:
        super().__init__(message)
        self.width = width
        self.height = height


@dataclass(frozen=True)
class DecodedImage:
    """A decoded, upright RGB image and what its header said.

    ``width``/``height`` are the original image's, after EXIF orientation (as a
    viewer shows it), even when ``image`` was decoded at a reduced JPEG scale.
    ``captured_at`` is EXIF DateTimeOriginal: timezone-aware when the camera
    wrote an offset, naive (camera-local time) otherwise.
    """

    image: Image.Image
    width: int
    height: int
    format: str
    captured_at: datetime | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None


def sniff_format(data: bytes) -> str | None:
    """The real format of ``data`` from its magic bytes, or None when unsupported."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18:
        (info_size,) = struct.unpack_from("<I", head, 14)
        if info_size in _BMP_HEADER_SIZES:
            return "bmp"
    return None


def _webp_factory() -> Callable[[io.BytesIO], ImageFile.ImageFile]:
    # Imported on use: the WebP plugin needs Pillow's optional _webp module.
    from PIL import WebPImagePlugin

    return WebPImagePlugin.WebPImageFile


def _open_header(data: bytes, fmt: str) -> ImageFile.ImageFile:
    """Parse the header only, through the format's own class (no global bomb check)."""
    stream = io.BytesIO(data)
    factories: dict[str, Callable[[io.BytesIO], ImageFile.ImageFile]] = {
        "jpeg": JpegImagePlugin.JpegImageFile,
        "png": PngImagePlugin.PngImageFile,
        "bmp": BmpImagePlugin.BmpImageFile,
        "tiff": TiffImagePlugin.TiffImageFile,
    }
    factory = factories[fmt] if fmt in factories else _webp_factory()
    return factory(stream)


def _pixel_cap(fmt: str, max_pixels: int) -> int:
    # Pillow's TIFF loader repeats the global bomb check while loading and would
    # warn above Pillow's limit; refusing such TIFFs keeps "never a warning" true
    # without touching the global. Reading the global is safe; writing is not.
    if fmt == "tiff" and Image.MAX_IMAGE_PIXELS is not None:
        return min(max_pixels, int(Image.MAX_IMAGE_PIXELS))
    return max_pixels


def _draft_request(
    size: tuple[int, int], min_side: int | None, min_long_side: int | None
) -> tuple[int, int] | None:
    """The size to ask libjpeg for so that the decoded image still covers both minimums."""
    width, height = size
    scale = 0.0
    if min_side:
        scale = max(scale, min_side / max(1, min(width, height)))
    if min_long_side:
        scale = max(scale, min_long_side / max(1, max(width, height)))
    if scale <= 0.0 or scale >= 1.0:
        return None
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is flattened onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if mode == "P":
        # Palette images keep transparency as an index or per-entry alpha.
        palette_mode = image.palette.mode if image.palette is not None else ""
        has_alpha = "transparency" in image.info or palette_mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow's conversions are exact enough.
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # convert("L") clips 16-bit values at 255 (a white picture); scale instead.
    if image.mode != "F":
        image = image.convert("I")
    extrema = image.getextrema()
    high = float(extrema[1]) if isinstance(extrema[1], int | float) else 255.0
    if image.mode == "F":
        factor = 255.0 if high <= 1.0 else 255.0 / max(high, 1.0)
    else:
        factor = 1.0 / 256.0 if high > 255 else 1.0
    scaled = image.point(lambda value: value * factor)
    return scaled.convert("L").convert("RGB")


def _apply_orientation(image: Image.Image, orientation: int | None) -> Image.Image:
    for method in _ORIENTATION_FIX.get(orientation or 1, ()):
        image = image.transpose(method)
    return image


def _ratio_to_float(value: object) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        numerator, denominator = value
        return float(numerator) / float(denominator)
    return float(value)  # type: ignore[arg-type]  # IFDRational and plain numbers


def _gps_coordinate(parts: object, ref: object, negative: str) -> float | None:
    if not isinstance(parts, tuple) or len(parts) != 3:
        return None
    degrees, minutes, seconds = (_ratio_to_float(p) for p in parts)
    value = degrees + minutes / 60.0 + seconds / 3600.0
    if not math.isfinite(value):
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    if isinstance(ref, str) and ref.strip().upper().startswith(negative):
        value = -value
    return round(value, 7)


def _capture_time(exif_ifd: dict[int, object]) -> datetime | None:
    raw = exif_ifd.get(_DATETIME_ORIGINAL)
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = exif_ifd.get(_OFFSET_TIME_ORIGINAL)
    if isinstance(offset, str) and len(offset.strip("\x00 ")) == 6:
        text = offset.strip("\x00 ")
        try:
            sign = -1 if text[0] == "-" else 1
            delta = timedelta(hours=int(text[1:3]), minutes=int(text[4:6]))
            moment = moment.replace(tzinfo=timezone(sign * delta))
        except ValueError:
            pass
    return moment


def _metadata(
    exif: Image.Exif,
) -> tuple[int | None, datetime | None, float | None, float | None]:
    """Orientation, capture time and GPS; broken EXIF never fails a decode."""
    try:
        orientation = exif.get(_EXIF_ORIENTATION)
        orientation = orientation if isinstance(orientation, int) else None
    except Exception:
        orientation = None
    captured_at = lat = lon = None
    try:
        captured_at = _capture_time(dict(exif.get_ifd(_EXIF_IFD)))
    except Exception:
        captured_at = None
    try:
        gps = dict(exif.get_ifd(_GPS_IFD))
        lat = _gps_coordinate(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "S")
        lon = _gps_coordinate(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "W")
        if lat is not None and not -90.0 <= lat <= 90.0:
            lat = None
        if lon is not None and not -180.0 <= lon <= 180.0:
            lon = None
    except Exception:
        lat = lon = None
    return orientation, captured_at, lat, lon


def decode_image(
    data: bytes,
    *,
    min_side: int | None = None,
    max_pixels: int,
    min_long_side: int | None = None,
) -> DecodedImage:
    """Decode ``data`` into an upright RGB image, refusing anything unsafe.

    ``min_side``: JPEGs are decoded at the smallest DCT scale (1, 1/2, 1/4, 1/8)
    whose shorter side is still at least this; ``min_long_side`` likewise for
    the longer side (callers that return a picture of a given size ask for it).
    Other formats decode at full size. ``max_pixels`` caps width x height as the
    header announces it, before decoding.

    Raises :class:`NotAnImage`, :class:`ImageTooLarge` or :class:`CorruptImage`.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise NotAnImage("not a JPEG, PNG, WebP, BMP or TIFF image")
    try:
        image = _open_header(data, fmt)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc), width=0, height=0) from exc
    except Exception as exc:
        raise CorruptImage(f"unreadable {fmt} header: {exc}") from exc

    stored_width, stored_height = image.size
    cap = _pixel_cap(fmt, max_pixels)
    if stored_width <= 0 or stored_height <= 0:
        raise CorruptImage(f"{fmt} header announces an empty image")
    if stored_width * stored_height > cap:
        raise ImageTooLarge(
            f"{stored_width}x{stored_height} pixels exceeds the cap of {cap}",
            width=stored_width,
            height=stored_height,
        )

    try:
        if fmt == "jpeg":
            request = _draft_request(image.size, min_side, min_long_side)
            if request is not None:
                image.draft("RGB", request)
        image.load()
        orientation, captured_at, lat, lon = _metadata(image.getexif())
        rgb = _apply_orientation(_to_rgb(image), orientation)
        if rgb is image:
            # Detach from the parser's file object so the result is self-contained.
            rgb = image.copy()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc), width=stored_width, height=stored_height) from exc
    except Exception as exc:  # Pillow plugins raise OSError, SyntaxError, ValueError, ...
        raise CorruptImage(f"broken {fmt} data: {exc}") from exc
    finally:
        image.close()

    swapped = orientation in (5, 6, 7, 8)
    width, height = (stored_height, stored_width) if swapped else (stored_width, stored_height)
    return DecodedImage(
        image=rgb,
        width=width,
        height=height,
        format=fmt,
        captured_at=captured_at,
        gps_lat=lat,
        gps_lon=lon,
    )
