"""The storage interface services and workers use for uploaded files, and the keys files live at.

Keys are made here from attachment ids alone (never from a file name or anything else a user
sent), so no input can reach outside the storage root or another attachment's files. Adapters in
integrations/storage implement the interface: the local filesystem and S3 (boto3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from parley.errors import Unavailable
from parley.ids import is_valid_id

_KEY = re.compile(r"^attachments/[0-9A-HJKMNP-TV-Z]{26}/[a-z0-9-]{1,40}$")


@dataclass(frozen=True)
class LocalFile:
    """Serve these bytes from this process (local storage: streamed, with Range support)."""

    path: Path


@dataclass(frozen=True)
class RedirectTo:
    """Send the client elsewhere for the bytes (S3: a presigned URL)."""

    url: str


Location = LocalFile | RedirectTo


class Storage(Protocol):
    def store_file(self, key: str, source: Path, content_type: str) -> None:
        """Store the file at `source` under `key` (the source may be moved or consumed)."""

    def store_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """The object as a local file for the length of the `with` block (workers read it)."""

    def delete(self, key: str) -> None:
        """Remove one object; removing a missing one is not an error."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix`; nothing there is not an error."""

    def locate(self, key: str, *, content_type: str, disposition: str) -> Location:
        """Where a client gets the object, served with these Content-Type and Content-Disposition."""

    def keys(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix` (tests and cleanup use it to see what is stored)."""


class StoredObjectMissing(Exception):
    """The object is not in storage (deleted meanwhile)."""


class StorageUnavailable(Unavailable):
    """Adapters raise this for the store's own failures (unreachable, refusing, disk full), so that
    callers need not know boto3's or the filesystem's exceptions: the API answers 503, tasks retry."""

    code = "storage_unavailable"


def attachment_prefix(attachment_id: str) -> str:
    if not is_valid_id(attachment_id):
        raise ValueError(f"not an attachment id: {attachment_id!r}")
    return f"attachments/{attachment_id}/"


def attachment_key(attachment_id: str, name: str) -> str:
    """`name` is one of Parley's own names (original, content, thumb-320, ...), never user input."""
    key = attachment_prefix(attachment_id) + name
    check_key(key)
    return key


def check_key(key: str) -> str:
    """Adapters call this before touching storage: a key that Parley did not make is refused."""
    if not _KEY.match(key):
        raise ValueError(f"not a storage key Parley makes: {key!r}")
    return key


def thumbnail_key(attachment_id: str, size: int) -> str:
    return attachment_key(attachment_id, f"thumb-{size}")


ORIGINAL = "original"  # the bytes as uploaded
CONTENT = "content"  # images: the cleaned copy that is served (orientation applied, metadata gone)
