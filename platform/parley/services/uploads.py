"""An upload on its way in: the body is written to a staging file as it arrives, counted against
PARLEY_MAX_UPLOAD_BYTES, and never held in memory; only its first bytes are kept, for sniffing."""

from __future__ import annotations

import os
import secrets
import unicodedata
from pathlib import Path
from typing import BinaryIO

from parley.errors import TooLarge
from parley.services.storage import StorageUnavailable

SNIFF_BYTES = 8192
MAX_NAME_CHARS = 200
_SPACES = "\t\n\r\x0b\x0c"


class UploadStaging:
    def __init__(self, directory: Path, limit: int) -> None:
        # A random name of our own: nothing the client sent reaches the filesystem.
        self.path = directory / f"upload-{secrets.token_hex(16)}"
        self.limit = limit
        self.size = 0
        self.head = b""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._file: BinaryIO | None = self.path.open("xb")
        except OSError as exc:
            raise StorageUnavailable("uploads cannot be staged", details={"error": type(exc).__name__}) from exc

    def add(self, chunk: bytes) -> None:
        """Append a chunk; past the limit the staged bytes are discarded and TooLarge raised."""
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise TooLarge(
                f"the file is larger than {self.limit} bytes",
                details={"max_bytes": self.limit},
            )
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
        assert self._file is not None
        try:
            self._file.write(chunk)
        except OSError as exc:  # the disk is full
            self.discard()
            raise StorageUnavailable("uploads cannot be staged", details={"error": type(exc).__name__}) from exc

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        self.finish()
        self.path.unlink(missing_ok=True)


def sanitize_name(raw: str | None, fallback_extension: str) -> str:
    """A file name safe to store and to show: its last path component only, no control or format
    characters, no leading dots, at most MAX_NAME_CHARS (the extension is kept when cutting)."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Line breaks and tabs become spaces; every other control or format character (bidi overrides
    # that disguise an extension, NUL, ...) goes.
    name = "".join(
        " " if ch in _SPACES or ch.isspace() and unicodedata.category(ch)[0] != "C" else ch
        for ch in name
        if ch in _SPACES or unicodedata.category(ch)[0] != "C"
    )
    name = " ".join(name.split()).lstrip(". ")
    if not name:
        name = f"file{fallback_extension}"
    if len(name) > MAX_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[: MAX_NAME_CHARS - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_NAME_CHARS]
    return name


def staging_directory(storage_path: str) -> Path:
    return Path(storage_path) / ".staging"


def remove_stale_staging(directory: Path, older_than: float, now: float) -> int:
    """Staging files a crashed process left behind."""
    removed = 0
    if not directory.is_dir():
        return 0
    for entry in os.scandir(directory):
        if entry.name.startswith("upload-") and entry.stat().st_mtime < now - older_than:
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed
