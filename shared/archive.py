"""Safe reading of uploaded ZIP archives, straight from the blob store.

Nothing is extracted to disk. The central directory is listed with caps on
entries and declared sizes; then every entry is inflated with a hard cap on
its output, because the sizes in the headers can lie (a zip bomb declares a
few bytes and inflates to gigabytes). Unsafe names (absolute paths, ``..``),
symlinks, nested archives, directories, ``__MACOSX`` and dotfiles are skipped
and counted, never read.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff"})
ARCHIVE_SUFFIXES = frozenset(
    {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".lz", ".cab", ".jar"}
)
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_READ_BLOCK = 1 << 20
_S_IFMT = 0o170000
_S_IFLNK = 0o120000


class ArchiveError(Exception):
    """An archive the service refuses as a whole; ``code`` is the API's error code."""

    code = "bad_archive"


class BadArchive(ArchiveError):
    code = "bad_archive"


class ArchiveLimitsExceeded(ArchiveError):
    code = "archive_limits_exceeded"


class EntryError(Exception):
    """One entry that cannot be read; the rest of the archive goes on."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_entry_bytes: int
    max_total_bytes: int


@dataclass(frozen=True)
class ArchiveEntry:
    position: int  # order among the images of the archive
    name: str


@dataclass
class ArchiveListing:
    entries: list[ArchiveEntry] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def looks_like_zip(head: bytes) -> bool:
    """Local-file or empty-archive signature at the start of the bytes."""
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def skip_reason(info: zipfile.ZipInfo) -> str | None:
    """Why an entry is not an image to process, or None if it is one."""
    name = info.filename.replace("\\", "/")
    if info.is_dir():
        return "directory"
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        return "unsafe_path"
    if (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        return "symlink"
    if any(part == "__MACOSX" or part.startswith(".") for part in path.parts):
        return "hidden"
    suffix = path.suffix.lower()
    if suffix in ARCHIVE_SUFFIXES:
        return "nested_archive"
    if suffix not in IMAGE_SUFFIXES:
        return "not_an_image"
    if info.flag_bits & 0x1:
        return "encrypted"
    return None


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise BadArchive(f"not a readable ZIP archive: {exc}") from exc


def list_entries(archive: zipfile.ZipFile, limits: ArchiveLimits) -> ArchiveListing:
    """Image entries in archive order plus skip counts, from the central directory."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise ArchiveLimitsExceeded(
            f"the archive lists {len(infos)} entries; the limit is {limits.max_entries}"
        )
    listing = ArchiveListing()
    declared_total = 0
    for info in infos:
        reason = skip_reason(info)
        if reason is not None:
            listing.skipped[reason] += 1
            continue
        if info.file_size > limits.max_entry_bytes:
            raise ArchiveLimitsExceeded(
                f"entry {info.filename!r} declares {info.file_size} bytes; "
                f"the limit per entry is {limits.max_entry_bytes}"
            )
        declared_total += info.file_size
        listing.entries.append(ArchiveEntry(len(listing.entries), info.filename))
    if declared_total > limits.max_total_bytes:
        raise ArchiveLimitsExceeded(
            f"the archive declares {declared_total} uncompressed bytes; "
            f"the limit is {limits.max_total_bytes}"
        )
    return listing


def _data_offset(handle: IO[bytes], info: zipfile.ZipInfo) -> int:
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size:
        raise EntryError("truncated local header")
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != _LOCAL_SIGNATURE:
        raise EntryError("bad local header signature")
    name_length, extra_length = fields[9], fields[10]
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _inflate_capped(
    handle: IO[bytes], info: zipfile.ZipInfo, cap: int, sink: bytearray | None
) -> int:
    """Inflate one entry's raw data, never producing more than ``cap`` bytes.

    Returns the inflated size. Raises ArchiveLimitsExceeded past the cap and
    EntryError when the data is corrupt, truncated or not as declared.
    """
    handle.seek(_data_offset(handle, info))
    deflated = info.compress_type == zipfile.ZIP_DEFLATED
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    remaining = info.compress_size
    produced = 0
    crc = 0

    def account(block: bytes) -> None:
        nonlocal produced, crc
        produced += len(block)
        if produced > cap:
            raise ArchiveLimitsExceeded(
                f"entry {info.filename!r} inflates past {cap} bytes (it declares {info.file_size})"
            )
        crc = zlib.crc32(block, crc)
        if sink is not None:
            sink.extend(block)

    try:
        while True:
            if deflated and inflater.unconsumed_tail:
                source = inflater.unconsumed_tail
            elif remaining > 0:
                source = handle.read(min(_READ_BLOCK, remaining))
                if not source:
                    raise EntryError("truncated entry data")
                remaining -= len(source)
            else:
                break
            # max_length bounds each step's output, so memory stays flat whatever
            # the compression ratio.
            account(inflater.decompress(source, _READ_BLOCK) if deflated else source)
            if deflated and inflater.eof:
                break
        if deflated and not inflater.eof:
            account(inflater.flush())
    except zlib.error as exc:
        raise EntryError(f"corrupt deflate data: {exc}") from exc
    if produced != info.file_size or crc != info.CRC:
        raise EntryError("entry data does not match its header (size or CRC)")
    return produced


def _read_other_method(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    # bzip2 and lzma entries go through zipfile, which never returns more than
    # the declared size; the declared size was already checked against the cap.
    try:
        with archive.open(info) as stream:
            data = stream.read(cap + 1)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, ValueError) as exc:
        raise EntryError(str(exc)) from exc
    if len(data) > cap:
        raise ArchiveLimitsExceeded(f"entry {info.filename!r} inflates past {cap} bytes")
    return data


def _is_inflatable(info: zipfile.ZipInfo) -> bool:
    return info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def verify_sizes(archive: zipfile.ZipFile, listing: ArchiveListing, limits: ArchiveLimits) -> int:
    """Inflate every listed entry (output discarded) and enforce the real sizes.

    A corrupt entry is left for the chunk that reads it to report; a lying
    size refuses the whole archive. Returns the real uncompressed total.
    """
    total = 0
    assert archive.fp is not None
    for entry in listing.entries:
        info = archive.getinfo(entry.name)
        if not _is_inflatable(info):
            total += info.file_size
            continue
        cap = min(limits.max_entry_bytes, limits.max_total_bytes - total)
        try:
            total += _inflate_capped(archive.fp, info, cap, None)
        except EntryError:
            continue
    return total


def read_entry(archive: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    """The bytes of one entry, inflated with a hard cap. Raises EntryError for
    a corrupt entry and ArchiveLimitsExceeded for one that inflates too far."""
    try:
        info = archive.getinfo(name)
    except KeyError as exc:
        raise EntryError(f"no entry named {name!r}") from exc
    if not _is_inflatable(info):
        return _read_other_method(archive, info, max_bytes)
    assert archive.fp is not None
    sink = bytearray()
    _inflate_capped(archive.fp, info, max_bytes, sink)
    return bytes(sink)
