"""Safe decoding: formats, bad inputs, the pixel cap, draft mode and EXIF metadata."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from shared.imaging import (
    CorruptImage,
    ImageTooLarge,
    NotAnImage,
    decode_image,
    sniff_format,
)
from tests.paths import originals

CAP = 50_000_000


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 4 % 256, y * 5 % 256, 128) for y in range(height) for x in range(width)])
    return image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR announces ``width`` x ``height`` followed by a tiny IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def exif_jpeg(image: Image.Image, **tags: object) -> bytes:
    exif = Image.Exif()
    if "orientation" in tags:
        exif[0x0112] = tags["orientation"]
    if "datetime" in tags:
        exif.get_ifd(0x8769)[0x9003] = tags["datetime"]
    if "offset" in tags:
        exif.get_ifd(0x8769)[0x9011] = tags["offset"]
    if "gps" in tags:
        gps = exif.get_ifd(0x8825)
        lat, lat_ref, lon, lon_ref = tags["gps"]  # type: ignore[misc]
        gps[1], gps[2], gps[3], gps[4] = lat_ref, lat, lon_ref, lon
    return encode(image, "JPEG", exif=exif, quality=90)


def dms(degrees: int, minutes: int, seconds: int) -> tuple[IFDRational, ...]:
    return tuple(IFDRational(value, 1) for value in (degrees, minutes, seconds))


# --- sniffing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")],
)
def test_sniff_recognises_each_supported_format(fmt: str, expected: str) -> None:
    assert sniff_format(encode(gradient(), fmt)) == expected


@pytest.mark.parametrize(
    "data", [b"", b"hello, world", b"BM but not a bitmap at all", b"GIF89a\x01\x00\x01\x00"]
)
def test_sniff_rejects_non_images(data: bytes) -> None:
    assert sniff_format(data) is None


# --- bad inputs ------------------------------------------------------------------


def test_empty_bytes_are_not_an_image() -> None:
    with pytest.raises(NotAnImage) as info:
        decode_image(b"", max_pixels=CAP)
    assert info.value.code == "not_an_image"


def test_text_is_not_an_image() -> None:
    with pytest.raises(NotAnImage):
        decode_image(b"just some text\nover two lines\n", max_pixels=CAP)


def test_truncated_jpeg_is_corrupt() -> None:
    data = encode(gradient(256, 256), "JPEG", quality=95)
    with pytest.raises(CorruptImage) as info:
        decode_image(data[: len(data) // 2], max_pixels=CAP)
    assert info.value.code == "corrupted_image"


def test_jpeg_with_only_a_header_is_corrupt() -> None:
    with pytest.raises(CorruptImage):
        decode_image(b"\xff\xd8\xff\xe0" + b"\x00" * 20, max_pixels=CAP)


def test_png_bomb_over_the_cap_is_refused_before_decoding() -> None:
    bomb = png_header_only(100_000, 100_000)  # 10 gigapixels announced in 100 bytes
    with pytest.raises(ImageTooLarge) as info:
        decode_image(bomb, max_pixels=CAP)
    assert (info.value.width, info.value.height) == (100_000, 100_000)
    assert info.value.code == "image_too_large"


def test_real_compressed_png_bomb_is_refused() -> None:
    # A genuinely decodable 8000x8000 black PNG, small on disk, over a small cap.
    data = encode(Image.new("L", (8000, 8000)), "PNG", optimize=True)
    assert len(data) < 200_000
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=10_000_000)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(encode(cmyk, "JPEG", quality=95), max_pixels=CAP)
    assert decoded.image.mode == "RGB"
    red, green, blue = decoded.image.getpixel((20, 15))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_png_keeps_its_range() -> None:
    deep = Image.new("I;16", (32, 32))
    deep.putdata([value * 64 for value in range(32 * 32)])  # 0 .. 65472
    decoded = decode_image(encode(deep, "PNG"), max_pixels=CAP)
    assert decoded.image.mode == "RGB"
    low, high = decoded.image.convert("L").getextrema()  # type: ignore[misc]
    # Scaled, not clipped: a clip at 255 would make almost every pixel white.
    assert low < 10 and 200 < high <= 255
    histogram = decoded.image.convert("L").histogram()
    assert histogram[255] < 32 * 32 // 10


def test_palette_png_with_transparency_is_flattened_on_white() -> None:
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    for x in range(8):
        for y in range(16):
            palette.putpixel((x, y), 1)
    data = encode(palette, "PNG", transparency=0)  # index 0 (red) is transparent
    decoded = decode_image(data, max_pixels=CAP)
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((2, 2)) == (0, 0, 255)
    assert decoded.image.getpixel((12, 2)) == (255, 255, 255)


def test_one_pixel_image_decodes() -> None:
    decoded = decode_image(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), max_pixels=CAP)
    assert (decoded.width, decoded.height) == (1, 1)
    assert decoded.image.getpixel((0, 0)) == (10, 20, 30)


def test_huge_but_legal_image_decodes_with_draft_mode() -> None:
    big = Image.new("RGB", (6000, 4000), (30, 90, 150))
    data = encode(big, "JPEG", quality=80)
    decoded = decode_image(data, min_side=512, max_pixels=CAP)
    assert (decoded.width, decoded.height) == (6000, 4000)
    # 1/4 scale still covers 512 on the short side; 1/8 would not (500 px).
    assert decoded.image.size == (1500, 1000)


def test_webp_bmp_tiff_decode() -> None:
    for fmt in ("WEBP", "BMP", "TIFF"):
        decoded = decode_image(encode(gradient(), fmt), max_pixels=CAP)
        assert decoded.image.size == (64, 48)
        assert decoded.format == fmt.lower()


# --- draft mode and orientation ------------------------------------------------------


@pytest.mark.parametrize("min_side", [64, 200, 512, 1000])
def test_draft_decodes_at_the_smallest_scale_covering_min_side(min_side: int) -> None:
    data = encode(gradient(1600, 1200), "JPEG", quality=90)
    decoded = decode_image(data, min_side=min_side, max_pixels=CAP)
    short = min(decoded.image.size)
    assert short >= min_side
    # The next smaller DCT scale (half) would have been too small.
    assert short // 2 < min_side or short == 1200 // 8
    assert (decoded.width, decoded.height) == (1600, 1200)


def test_draft_on_a_real_photo_is_smaller_and_covers_min_side() -> None:
    photo = max(originals(), key=lambda p: p.path.stat().st_size)
    data = photo.path.read_bytes()
    full = decode_image(data, max_pixels=CAP)
    drafted = decode_image(data, min_side=512, max_pixels=CAP)
    assert min(drafted.image.size) >= 512
    assert drafted.image.size[0] < full.image.size[0]
    assert (drafted.width, drafted.height) == (full.width, full.height)


def test_exif_rotation_is_applied_and_reported_sizes_are_upright() -> None:
    # Stored landscape with a marker in the top-left; orientation 6 means the
    # viewer rotates 90 degrees clockwise, so the marker ends up top-right.
    stored = Image.new("RGB", (1200, 800), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 200, 200))
    data = exif_jpeg(stored, orientation=6)
    decoded = decode_image(data, min_side=300, max_pixels=CAP)
    assert (decoded.width, decoded.height) == (800, 1200)
    width, height = decoded.image.size
    assert height > width and min(width, height) >= 300
    top_right = decoded.image.getpixel((width - 10, 10))
    top_left = decoded.image.getpixel((10, 10))
    assert sum(top_right) > 600 and sum(top_left) < 100  # type: ignore[arg-type]


# --- metadata ----------------------------------------------------------------------------


def test_capture_time_and_gps_are_extracted() -> None:
    data = exif_jpeg(
        gradient(),
        datetime="2021:07:14 09:30:05",
        offset="-03:00",
        gps=(dms(64, 30, 0), "N", dms(21, 54, 36), "W"),
    )
    decoded = decode_image(data, max_pixels=CAP)
    assert decoded.captured_at == datetime(
        2021, 7, 14, 9, 30, 5, tzinfo=timezone(timedelta(hours=-3))
    )
    assert decoded.gps_lat == pytest.approx(64.5)
    assert decoded.gps_lon == pytest.approx(-21.91)


def test_capture_time_without_offset_is_naive_and_missing_exif_is_none() -> None:
    naive = decode_image(exif_jpeg(gradient(), datetime="2020:01:02 03:04:05"), max_pixels=CAP)
    assert naive.captured_at == datetime(2020, 1, 2, 3, 4, 5)
    plain = decode_image(encode(gradient(), "JPEG"), max_pixels=CAP)
    assert plain.captured_at is None and plain.gps_lat is None and plain.gps_lon is None


def test_broken_exif_values_do_not_fail_the_decode() -> None:
    broken = (IFDRational(1, 0), IFDRational(0, 1), IFDRational(0, 1))
    data = exif_jpeg(gradient(), datetime="not a date", gps=(broken, "N", dms(1, 2, 3), "E"))
    decoded = decode_image(data, max_pixels=CAP)
    assert decoded.captured_at is None
    assert decoded.gps_lat is None
