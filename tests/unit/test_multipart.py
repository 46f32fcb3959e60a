"""The streaming multipart parser keeps werkzeug's contract (pure parsing)."""

from __future__ import annotations

import io
import os

import pytest
from urllib3 import encode_multipart_formdata
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from api.multipart import StreamingFormDataParser


class _StreamingRequest(Request):
    form_data_parser_class = StreamingFormDataParser


class _WerkzeugRequest(Request):
    pass


def _requests(body: bytes, content_type: str, **limits: int) -> list[Request]:
    made = []
    for cls in (_StreamingRequest, _WerkzeugRequest):
        environ = EnvironBuilder(
            method="POST", input_stream=io.BytesIO(body), content_type=content_type,
            content_length=len(body),
        ).get_environ()  # fmt: skip
        request = cls(environ)
        for name, value in limits.items():
            setattr(request, name, value)
        made.append(request)
    return made


def _parsed(request: Request) -> tuple[list[tuple[str, str]], list[tuple[str, str, str, bytes]]]:
    fields = list(request.form.items(multi=True))
    files = [
        (name, f.filename or "", f.mimetype, f.stream.read())
        for name, f in request.files.items(multi=True)
    ]
    return fields, files


def test_fields_and_files_come_out_as_werkzeug_gives_them() -> None:
    photo = os.urandom(200_000)  # crosses several reads
    body, content_type = encode_multipart_formdata(
        [
            ("note", "Ярослав's flukes"),
            ("file", ("fluke ü.jpg", photo, "image/jpeg")),
            ("archive", ("empty.zip", b"", "application/zip")),
            ("note", "second"),
        ]
    )

    streaming, werkzeug = _requests(body, content_type)

    fields, files = _parsed(streaming)
    assert (fields, files) == _parsed(werkzeug)
    assert fields == [("note", "Ярослав's flukes"), ("note", "second")]
    assert [(n, f, t, len(d)) for n, f, t, d in files] == [
        ("file", "fluke ü.jpg", "image/jpeg", len(photo)),
        ("archive", "empty.zip", "application/zip", 0),
    ]
    assert files[0][3] == photo


@pytest.mark.parametrize(
    "cut",
    [
        lambda body: body[:-20],  # no closing boundary
        lambda body: body.replace(b"form-data;", b"attachment;", 1),
        lambda body: b"garbage without any boundary",
    ],
)
def test_a_malformed_body_gives_an_empty_form(cut: object) -> None:
    body, content_type = encode_multipart_formdata({"file": ("a.jpg", b"\xff\xd8data")})
    malformed = cut(body)  # type: ignore[operator]

    streaming, _ = _requests(malformed, content_type)

    assert (dict(streaming.form), dict(streaming.files)) == ({}, {})


def test_too_many_parts_is_413() -> None:
    body, content_type = encode_multipart_formdata([("f", str(i)) for i in range(5)])
    streaming, werkzeug = _requests(body, content_type, max_form_parts=4)

    for request in (streaming, werkzeug):
        with pytest.raises(RequestEntityTooLarge):
            request.form  # noqa: B018


def test_a_field_or_headers_over_the_memory_limit_is_413() -> None:
    big_field, field_type = encode_multipart_formdata({"note": "x" * 2000})
    big_header, header_type = encode_multipart_formdata({"file": ("n" * 2000 + ".jpg", b"x")})

    for body, content_type in ((big_field, field_type), (big_header, header_type)):
        streaming, _ = _requests(body, content_type, max_form_memory_size=1000)
        with pytest.raises(RequestEntityTooLarge):
            streaming.form  # noqa: B018
