"""A real S3 endpoint for the tests: moto's server mode, on 127.0.0.1, spoken to over HTTP by boto3."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY = "parley-test-key"
SECRET_KEY = "parley-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Endpoint:
    url: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"parley-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def settings_for(self, bucket: str) -> dict[str, object]:
        return {
            "storage_backend": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": self.url,
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
        }


def start_s3_server() -> tuple[S3Endpoint, ThreadedMotoServer]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # 0: any free port
    server.start()
    host, port = server.get_host_and_port()
    return S3Endpoint(f"http://{host}:{port}"), server
