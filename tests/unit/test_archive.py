"""Safe ZIP listing and capped reading (pure logic on in-memory archives)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from shared.archive import (
    ArchiveLimits,
    ArchiveLimitsExceeded,
    BadArchive,
    EntryError,
    list_entries,
    open_zip,
    read_entry,
    verify_sizes,
)
from tests.zips import build_zip, lying_zip_bomb

LIMITS = ArchiveLimits(max_entries=100, max_entry_bytes=1 << 20, max_total_bytes=4 << 20)


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    return path


def test_unsafe_and_non_image_entries_are_skipped_and_counted(tmp_path: Path) -> None:
    data = build_zip(
        [
            ("a.jpg", b"jpeg-bytes"),
            ("dir/", b""),
            ("../evil.jpg", b"x"),
            ("/abs.jpg", b"x"),
            ("__MACOSX/._a.jpg", b"x"),
            (".hidden.png", b"x"),
            ("inner.zip", b"PK"),
            ("notes.txt", b"hello"),
            ("link.jpg", b"/etc/passwd"),
            ("sub/b.PNG", b"png-bytes"),
        ],
        symlinks=("link.jpg",),
    )
    with open_zip(_write(tmp_path, data)) as archive:
        listing = list_entries(archive, LIMITS)
    assert [(e.position, e.name) for e in listing.entries] == [(0, "a.jpg"), (1, "sub/b.PNG")]
    assert dict(listing.skipped) == {
        "directory": 1,
        "unsafe_path": 2,
        "hidden": 2,
        "nested_archive": 1,
        "not_an_image": 1,
        "symlink": 1,
    }


def test_entries_read_back_exactly(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1000
    with open_zip(_write(tmp_path, build_zip([("x.jpg", payload)]))) as archive:
        assert read_entry(archive, "x.jpg", LIMITS.max_entry_bytes) == payload


def test_not_a_zip_is_a_bad_archive(tmp_path: Path) -> None:
    with pytest.raises(BadArchive):
        open_zip(_write(tmp_path, b"PK\x03\x04 but then nothing"))


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    data = build_zip([(f"{i}.jpg", b"x") for i in range(5)])
    with open_zip(_write(tmp_path, data)) as archive, pytest.raises(ArchiveLimitsExceeded):
        list_entries(archive, ArchiveLimits(4, 1 << 20, 1 << 20))


def test_lying_zip_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    # Each entry declares 1 kB but inflates to 8 MiB: 32 MiB in all, far past the caps.
    path = _write(tmp_path, lying_zip_bomb(entry_count=4, real_size=8 << 20))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    with open_zip(path) as archive:
        listing = list_entries(archive, LIMITS)  # the headers look harmless
        assert len(listing.entries) == 4
        with pytest.raises(ArchiveLimitsExceeded, match="inflates past"):
            verify_sizes(archive, listing, LIMITS)
        with pytest.raises(ArchiveLimitsExceeded):
            read_entry(archive, "img_0.jpg", LIMITS.max_entry_bytes)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20  # never holds an inflated entry


def test_corrupt_entry_is_an_entry_error_not_an_archive_error(tmp_path: Path) -> None:
    data = bytearray(build_zip([("good.jpg", b"a" * 5000), ("bad.jpg", bytes(range(200)) * 50)]))
    local = data.find(b"PK\x03\x04", 10)  # the second entry's local header
    data[local + 60 : local + 90] = b"\xff" * 30  # scribble over its deflate stream
    with open_zip(_write(tmp_path, bytes(data))) as archive:
        listing = list_entries(archive, LIMITS)
        assert verify_sizes(archive, listing, LIMITS) == 5000
        assert read_entry(archive, "good.jpg", LIMITS.max_entry_bytes) == b"a" * 5000
        with pytest.raises(EntryError):
            read_entry(archive, "bad.jpg", LIMITS.max_entry_bytes)
