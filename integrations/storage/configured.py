"""The storage PARLEY_STORAGE_BACKEND names, built from the settings."""

from __future__ import annotations

from pathlib import Path

from parley.config import Settings
from parley.services.storage import Storage


def storage_for(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        from integrations.storage.s3 import S3Storage, s3_client  # boto3 is imported only when used

        assert settings.s3_bucket is not None  # the settings insist on it
        signer = s3_client(settings, public=True) if settings.s3_public_endpoint_url else None
        return S3Storage(s3_client(settings), settings.s3_bucket, settings.presigned_url_seconds, signer)
    from integrations.storage.local import LocalStorage

    root = Path(settings.storage_path)
    root.mkdir(parents=True, exist_ok=True)
    return LocalStorage(root)
