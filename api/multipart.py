"""Multipart form parsing with python-multipart's streaming parser.

Werkzeug's parser compiles two regular expressions for each request's
boundary. Clients send a fresh boundary with every request, so that
compilation was most of the parser's cost: about half a millisecond of a
single image's time on a small host. python-multipart finds boundaries by
plain byte search.

This parser keeps werkzeug's contract, so the views cannot tell the two apart:
- the same form and files; file parts go to the request's stream factory
  (the spools of :mod:`api.uploads`);
- the same limits: ``max_form_memory_size`` for a field and for a part's
  headers, and ``max_form_parts``, each a 413;
- a malformed body is a ValueError, which werkzeug's silent parsing turns
  into an empty form.
"""

from __future__ import annotations

from typing import IO, Any

from python_multipart import MultipartParser
from werkzeug.datastructures import FileStorage, Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

_READ_BYTES = 64 * 1024
_SAFE_CHARSETS = frozenset({"ascii", "us-ascii", "utf-8", "iso-8859-1"})


class StreamingFormDataParser(FormDataParser):
    def _parse_multipart(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str],
    ) -> tuple[IO[bytes], Any, Any]:
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        parts = _Parts(self, content_length)
        parser = MultipartParser(boundary, callbacks=parts.callbacks())  # type: ignore[arg-type]
        while block := stream.read(_READ_BYTES):
            parser.write(block)
        if not parts.ended:
            raise ValueError("the multipart body ends before its closing boundary")
        return stream, self.cls(parts.fields), self.cls(parts.files)


class _Parts:
    """Collects the parts as python-multipart reports them."""

    def __init__(self, owner: FormDataParser, content_length: int | None) -> None:
        self._owner = owner
        self._content_length = content_length
        self._memory_limit = owner.max_form_memory_size
        self._parts_limit = owner.max_form_parts
        self.fields: list[tuple[str, str]] = []
        self.files: list[tuple[str, FileStorage]] = []
        self.ended = False
        self._count = 0
        self._header_bytes = 0
        self._name = bytearray()
        self._value = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._part: tuple[str, str | None, Headers] | None = None  # name, filename, headers
        self._field: bytearray | None = None
        self._file: IO[bytes] | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_name,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_end": self._finished,
        }

    def _begin(self) -> None:
        self._count += 1
        if self._parts_limit is not None and self._count > self._parts_limit:
            raise RequestEntityTooLarge()
        self._headers, self._header_bytes = [], 0  # the previous part's end cleared the rest

    def _header_name(self, data: bytes, start: int, end: int) -> None:
        self._grow_headers(end - start)
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._grow_headers(end - start)
        self._value += data[start:end]

    def _grow_headers(self, size: int) -> None:
        self._header_bytes += size
        if self._memory_limit is not None and self._header_bytes > self._memory_limit:
            raise RequestEntityTooLarge()

    def _header_end(self) -> None:
        # UTF-8, as werkzeug decodes part headers (file names may use it).
        self._headers.append((self._name.decode().strip(), self._value.decode().strip()))
        self._name.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        headers = Headers(self._headers)
        disposition, options = parse_options_header(headers.get("content-disposition"))
        if disposition != "form-data":
            raise ValueError("a part without form-data disposition")
        name = options.get("name", "")
        filename = options.get("filename")
        self._part = (name, filename, headers)
        if filename is None:
            self._field = bytearray()
            return
        self._file = self._owner.stream_factory(
            total_content_length=self._content_length,
            filename=filename,
            content_type=headers.get("content-type"),
            content_length=_declared_length(headers),
        )

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])
        elif self._field is not None:
            self._field += data[start:end]
            if self._memory_limit is not None and len(self._field) > self._memory_limit:
                raise RequestEntityTooLarge()

    def _end(self) -> None:
        if self._part is None:
            raise ValueError("a part ends before its headers")
        name, filename, headers = self._part
        if self._file is not None:
            self._file.seek(0)
            self.files.append((name, FileStorage(self._file, filename, name, headers=headers)))
        elif self._field is not None:
            self.fields.append((name, self._field.decode(_charset(headers), "replace")))
        self._part = self._field = self._file = None

    def _finished(self) -> None:
        self.ended = True


def _declared_length(headers: Headers) -> int:
    try:
        return max(0, int(headers.get("content-length", "0")))
    except ValueError:
        return 0


def _charset(headers: Headers) -> str:
    charset = parse_options_header(headers.get("content-type"))[1].get("charset", "").lower()
    return charset if charset in _SAFE_CHARSETS else "utf-8"
