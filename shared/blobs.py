"""The blob store: uploads on a directory that API and workers share.

References stored in the database are paths relative to the store's root, so
the shared volume may be mounted anywhere. Writes land atomically (temporary
file, then rename), so a worker never sees half a file.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoredBlob:
    ref: str
    size: int


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, ref: str) -> Path:
        """The file of a reference; a reference may not leave the store."""
        candidate = (self.root / ref).resolve()
        if not candidate.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob reference outside the store: {ref!r}")
        return candidate

    def temporary_file(self, kind: str) -> tempfile._TemporaryFileWrapper[bytes]:
        """A file in the store's own filesystem, so finishing it is a rename."""
        directory = self.root / kind
        directory.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=directory, prefix=".incoming-", delete=False)

    def adopt(self, temporary: Path, ref: str, *, size: int) -> StoredBlob:
        """Move a finished temporary file of the store into place."""
        target = self.path(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary.replace(target)
        return StoredBlob(ref, size)

    def save_bytes(self, data: bytes, ref: str) -> StoredBlob:
        with self.temporary_file(ref.split("/", 1)[0]) as handle:
            handle.write(data)
        return self.adopt(Path(handle.name), ref, size=len(data))

    def read_bytes(self, ref: str) -> bytes:
        return self.path(ref).read_bytes()

    def delete(self, ref: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(ref).unlink()


def upload_ref(job_id: str) -> str:
    return f"uploads/{job_id}.zip"


def single_image_ref(job_id: str) -> str:
    return f"images/{job_id}"
