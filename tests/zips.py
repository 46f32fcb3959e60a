"""Builders of test ZIP archives, including hostile ones."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path


def build_zip(entries: list[tuple[str, bytes]], *, symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = 0o120777 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def lying_zip_bomb(entry_count: int, real_size: int, declared_size: int = 1000) -> bytes:
    """Entries of zeros that declare ``declared_size`` bytes but inflate to ``real_size``."""
    data = build_zip([(f"img_{i}.jpg", bytes(real_size)) for i in range(entry_count)])
    patched = bytearray(data)
    # Rewrite the uncompressed size in every local header (offset 22) and every
    # central directory record (offset 24).
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (found := patched.find(signature, start)) != -1:
            struct.pack_into("<I", patched, found + offset, declared_size)
            start = found + 4
    return bytes(patched)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def sample_zip(images: list[Path], extra: list[tuple[str, bytes]] | None = None) -> bytes:
    return build_zip([(path.name, path.read_bytes()) for path in images] + (extra or []))
