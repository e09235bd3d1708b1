"""Uploads on the local filesystem, under one root folder (PARLEY_STORAGE_PATH)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from parley.services.storage import LocalFile, Location, StorageUnavailable, StoredObjectMissing, check_key


@contextmanager
def _disk_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:  # disk full, permissions, a vanished mount
        raise StorageUnavailable(f"storage could not {action}", details={"error": type(exc).__name__}) from exc


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        # Keys are Parley's own (check_key), so this stays under the root; resolving again is the
        # belt to those braces.
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"key escapes the storage root: {key!r}")
        return path

    def store_file(self, key: str, source: Path, content_type: str) -> None:
        target = self._path(key)
        with _disk_errors("store the file"):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Staging lives under the root, so this is a rename: the object appears whole or not at all.
                os.replace(source, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # From another filesystem (a worker's temporary folder): copy beside it, then rename.
                partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
                shutil.copyfile(source, partial)
                os.replace(partial, target)
                source.unlink(missing_ok=True)

    def store_bytes(self, key: str, data: bytes, content_type: str) -> None:
        target = self._path(key)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        with _disk_errors("store the file"):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            os.replace(partial, target)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise StoredObjectMissing(key)
        yield path

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        folder = (self.root / prefix).resolve()
        if not folder.is_relative_to(self.root / "attachments") or folder == (self.root / "attachments"):
            raise ValueError(f"not an attachment's prefix: {prefix!r}")
        shutil.rmtree(folder, ignore_errors=True)

    def locate(self, key: str, *, content_type: str, disposition: str) -> Location:
        path = self._path(key)
        if not path.is_file():
            raise StoredObjectMissing(key)
        return LocalFile(path)

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        folder = base if base.is_dir() else base.parent
        if not folder.is_dir():
            return
        for path in sorted(folder.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.endswith(".partial"):
                yield key
