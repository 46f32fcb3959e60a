"""Receiving uploads: streamed to the blob store's disk, never whole in memory.

Werkzeug's multipart parser asks the request for a stream per file part; ours
(:class:`Spool`) is a temporary file inside the blob store, size-capped as
the bytes arrive. A finished upload then becomes a blob by a
rename on the same filesystem. A raw request body (``Content-Type:
image/jpeg`` or ``application/zip`` without multipart) goes into a spool the
same way, block by block. Whatever is not kept is deleted when the request
ends. So a 1 GB ZIP costs one 1 MB block of API memory, not 1 GB.

The size caps are enforced twice: ``max_content_length`` refuses a declared
(or streamed) body that is too large before the parser runs, and the spool
stops a file part that passes its own cap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import flask
from flask import g, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.multipart import StreamingFormDataParser
from shared.blobs import BlobStore, StoredBlob

_BLOCK = 1 << 20
_HEAD_BYTES = 64
# Room for multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# Also bounds the parser's own buffer, which holds a few 64 KiB reads at a time.
MAX_FORM_FIELD_BYTES = 1024 * 1024
MAX_FORM_PARTS = 16
_FILENAME_MAX = 255
_DISPOSITION_FILENAME = re.compile(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', re.IGNORECASE)


class Spool:
    """A file being received into the blob store's filesystem.

    It speaks enough of the file protocol for werkzeug's parser (write, seek,
    read), and counts the bytes and keeps the first ones as data arrives.
    """

    def __init__(self, store: BlobStore, max_bytes: int) -> None:
        self._file = store.temporary_file("uploads")
        self.path = Path(self._file.name)
        self.max_bytes = max_bytes
        self.size = 0
        self.head = b""
        self._kept = False
        self._closed = False

    # --- the file protocol werkzeug uses ------------------------------------
    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.max_bytes:
            self.close()
            raise RequestEntityTooLarge(f"the upload passes {self.max_bytes} bytes")
        if len(self.head) < _HEAD_BYTES:
            self.head += bytes(data[: _HEAD_BYTES - len(self.head)])
        return self._file.write(data)

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def readline(self, size: int = -1) -> bytes:
        return self._file.readline(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __iter__(self) -> Any:
        return iter(self._file)

    def close(self) -> None:
        """Close; a spool that was not kept as a blob is deleted."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        if not self._kept:
            self.path.unlink(missing_ok=True)

    # --- what the views use ------------------------------------------------------
    def read_all(self) -> bytes:
        """The whole content; only for uploads capped small (single images)."""
        self._file.flush()
        self._file.seek(0)
        return self._file.read()

    def keep(self, store: BlobStore, ref: str) -> StoredBlob:
        """Make the upload the blob ``ref`` (a rename, no copy)."""
        self._file.flush()
        self._file.close()
        blob = store.adopt(self.path, ref, size=self.size)
        self._kept = True
        self._closed = True
        return blob


class UploadRequest(flask.Request):
    """A request whose file parts stream into spools in the blob store."""

    form_data_parser_class = StreamingFormDataParser

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        from api.context import services

        cap = getattr(g, "upload_limit", None) or services().settings.max_archive_bytes
        return cast(IO[bytes], _tracked(Spool(services().blobs, cap)))


def _tracked(spool: Spool) -> Spool:
    """Remember a spool so that it is removed when the request ends."""
    spools: list[Spool] = g.setdefault("upload_spools", [])
    spools.append(spool)
    return spool


def discard_spools(_: BaseException | None = None) -> None:
    """Teardown: delete every spool of the request not kept as a blob."""
    for spool in g.pop("upload_spools", []):
        spool.close()


@dataclass(frozen=True)
class Upload:
    spool: Spool
    filename: str
    content_type: str  # the declared media type, lower case, "" when none


def limit_upload(max_bytes: int) -> None:
    """Caps of this request, set before anything reads its body."""
    g.upload_limit = max_bytes
    request.max_content_length = max_bytes + MULTIPART_OVERHEAD
    request.max_form_memory_size = MAX_FORM_FIELD_BYTES
    request.max_form_parts = MAX_FORM_PARTS


def is_multipart() -> bool:
    return request.mimetype == "multipart/form-data"


def receive_file_part(field: str) -> Upload | None:
    """The multipart file part ``field``, already on disk; None if absent."""
    storage = request.files.get(field)
    if storage is None:
        return None
    spool = storage.stream
    assert isinstance(spool, Spool), "file parts are received by UploadRequest"
    return Upload(spool, _clean_name(storage.filename, field), (storage.mimetype or "").lower())


def receive_raw_body(default_name: str) -> Upload:
    """The request body itself, copied block by block into a spool."""
    from api.context import services

    cap: int = g.upload_limit
    if request.content_length is not None and request.content_length > cap:
        raise RequestEntityTooLarge(f"the body passes {cap} bytes")
    spool = _tracked(Spool(services().blobs, cap))
    stream = request.stream
    while block := stream.read(_BLOCK):
        spool.write(block)
    spool.flush()
    return Upload(spool, _raw_filename(default_name), request.mimetype.lower())


def _raw_filename(default: str) -> str:
    disposition = request.headers.get("Content-Disposition", "")
    match = _DISPOSITION_FILENAME.search(disposition)
    return _clean_name(match.group(1) if match else None, default)


def _clean_name(name: str | None, default: str) -> str:
    """A client's file name is only a label; keep it printable and short."""
    cleaned = "".join(ch for ch in (name or "") if ch.isprintable()).strip()
    return cleaned[:_FILENAME_MAX] or default
