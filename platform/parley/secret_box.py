"""Encryption at rest for secrets Parley must be able to read back (webhook signing secrets): they
sign every delivery, so unlike API tokens they cannot be stored as hashes.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key derived with HKDF from
PARLEY_SECRET_KEY. When that setting is unset, a random key is generated once into
./var/secret.key (mode 0600), like the embedded SQLite file beside it: fine for one machine, but
every process of a deployment must share the key, so a deployment sets PARLEY_SECRET_KEY.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from parley.config import Settings

log = logging.getLogger("parley.secrets")

KEY_FILE = Path("var") / "secret.key"
_HKDF_INFO = b"parley webhook signing secrets v1"


class SecretUnreadable(Exception):
    """A stored secret does not decrypt: PARLEY_SECRET_KEY changed since it was written."""


class SecretBox:
    def __init__(self, key_material: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            key_material.encode("utf-8")
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SecretUnreadable("a stored secret does not decrypt with this PARLEY_SECRET_KEY") from None


def secret_box(settings: Settings) -> SecretBox:
    if settings.secret_key is not None:
        return _box(settings.secret_key.get_secret_value())
    if not settings.is_sqlite:
        log.warning("secrets.key_file_in_use", extra={"path": str(KEY_FILE.resolve())})
    return _box(_key_from_file(KEY_FILE))


@lru_cache(maxsize=8)
def _box(key_material: str) -> SecretBox:
    return SecretBox(key_material)


def _key_from_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as key_file:
        key_file.write(secrets.token_urlsafe(48))
    try:
        # link() fails if the key exists: of two processes starting together, one key wins, whole.
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


def derived_key(settings: Settings, purpose: bytes) -> bytes:
    """A 32-byte key for `purpose` (e.g. signing unsubscribe links), derived with HKDF from the same
    key material as the box: PARLEY_SECRET_KEY, or ./var/secret.key when that is unset."""
    material = settings.secret_key.get_secret_value() if settings.secret_key is not None else _key_from_file(KEY_FILE)
    return _derive(material, purpose)


@lru_cache(maxsize=16)
def _derive(material: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"parley " + purpose).derive(
        material.encode("utf-8")
    )
