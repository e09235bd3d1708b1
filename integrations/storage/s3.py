"""Uploads in S3 or any S3-compatible store (MinIO, ...), through boto3."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from parley.config import Settings
from parley.services.storage import Location, RedirectTo, StorageUnavailable, StoredObjectMissing, check_key

# Large uploads go up in parts of this size (boto3 handles the multipart upload).
_TRANSFER = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024)


def s3_client(settings: Settings, *, public: bool = False) -> Any:
    """A client for the store; `public`: one that signs URLs for the endpoint browsers reach."""
    secret = settings.s3_secret_access_key
    endpoint = (settings.s3_public_endpoint_url or settings.s3_endpoint_url) if public else settings.s3_endpoint_url
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
        config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}),
    )


@contextmanager
def _s3_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        raise StorageUnavailable(f"S3 could not {action}", details={"error": type(exc).__name__}) from exc


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey")


class S3Storage:
    def __init__(self, client: Any, bucket: str, presigned_url_seconds: int, signer: Any | None = None) -> None:
        self.client = client
        self.signer = signer or client  # signs presigned URLs (for a public endpoint, if one is set)
        self.bucket = bucket
        self.presigned_url_seconds = presigned_url_seconds

    def store_file(self, key: str, source: Path, content_type: str) -> None:
        with _s3_errors("store the file"):
            self.client.upload_file(
                str(source), self.bucket, check_key(key), ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
            )

    def store_bytes(self, key: str, data: bytes, content_type: str) -> None:
        with _s3_errors("store the file"):
            self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        handle, name = tempfile.mkstemp(prefix="parley-s3-")
        os.close(handle)
        path = Path(name)
        try:
            try:
                self.client.download_file(self.bucket, check_key(key), name)
            except ClientError as exc:
                if _missing(exc):
                    raise StoredObjectMissing(key) from exc
                raise StorageUnavailable("S3 could not read the file", details={"error": "ClientError"}) from exc
            except BotoCoreError as exc:
                raise StorageUnavailable("S3 could not read the file", details={"error": type(exc).__name__}) from exc
            yield path
        finally:
            path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        with _s3_errors("delete the file"):
            self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    def delete_prefix(self, prefix: str) -> None:
        if not prefix.startswith("attachments/") or prefix == "attachments/":
            raise ValueError(f"not an attachment's prefix: {prefix!r}")
        with _s3_errors("delete the files"):
            keys = list(self.keys(prefix))
            for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def locate(self, key: str, *, content_type: str, disposition: str) -> Location:
        # Signing is local: no request to S3, so nothing here fails for S3's sake.
        url = self.signer.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": check_key(key),
                # S3 answers with these, so the browser sees the same headers local storage sends.
                "ResponseContentType": content_type,
                "ResponseContentDisposition": disposition,
            },
            ExpiresIn=self.presigned_url_seconds,
        )
        return RedirectTo(url)

    def keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]
