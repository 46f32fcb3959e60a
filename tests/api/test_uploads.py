"""Uploads stream to the blob store: a big archive never sits in API memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from flask import Flask

from shared.blobs import BlobStore
from shared.db.engine import Database
from shared.db.models import Job
from tests.api.conftest import client_for
from tests.api.helpers import wait_for_status
from tests.workers import WorkerProcess

ARCHIVE_MB = 64
PEAK_LIMIT_BYTES = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 MB ZIP of incompressible entries that are not images (skipped)."""
    path = tmp_path_factory.mktemp("uploads") / "big.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(ARCHIVE_MB // 8):
            archive.writestr(f"sensor_{index}.bin", os.urandom(8 * 1024 * 1024))
    return path


def _multipart_file(archive: Path, directory: Path, boundary: str) -> Path:
    """The multipart body of one `archive` part, written to disk."""
    body = directory / "body.multipart"
    with body.open("wb") as out, archive.open("rb") as source:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="archive"; '
            f'filename="big.zip"\r\nContent-Type: application/zip\r\n\r\n'.encode()
        )
        while block := source.read(1 << 20):
            out.write(block)
        out.write(f"\r\n--{boundary}--\r\n".encode())
    return body


@pytest.mark.parametrize("encoding", ["raw", "multipart"])
def test_a_big_archive_streams_to_disk_with_flat_memory(
    api_app: Flask,
    worker: WorkerProcess,
    database: Database,
    big_archive: Path,
    tmp_path: Path,
    encoding: str,
) -> None:
    client = client_for(api_app)
    if encoding == "raw":
        body, content_type = big_archive, "application/zip"
    else:
        boundary = "whales-test-boundary"
        body = _multipart_file(big_archive, tmp_path, boundary)
        content_type = f"multipart/form-data; boundary={boundary}"

    with body.open("rb") as stream:
        tracemalloc.start()
        try:
            response = client.post(
                "/v1/jobs",
                input_stream=stream,
                content_length=body.stat().st_size,
                content_type=content_type,
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert response.status_code == 202, response.get_json()
    assert peak < PEAK_LIMIT_BYTES, f"peak {peak / 1e6:.1f} MB for a {ARCHIVE_MB} MB upload"
    document = wait_for_status(client, response.headers["Location"])
    assert (document["status"], document["total"], document["skipped"]) == ("succeeded", 0, 8)
    with database.session() as session:
        job = session.get_one(Job, document["job_id"])
    assert job.archive_bytes == big_archive.stat().st_size
    stored = BlobStore(api_app.extensions["whales"].settings.blobs_path).path(job.archive_path)
    assert (
        hashlib.sha256(stored.read_bytes()).digest()
        == hashlib.sha256(big_archive.read_bytes()).digest()
    )
    # No spool is left behind in the store.
    assert not list(stored.parent.glob(".incoming-*"))
