"""Schemathesis hooks for tests/api/test_openapi_conformance.py (loaded through SCHEMATHESIS_HOOKS).

A webhook URL must also pass the SSRF guard: its host must resolve, to addresses the server may
reach. No schema can say which hosts resolve, and this machine has no DNS, so a schema-valid URL
of a webhook body is pointed at 127.0.0.1, which the test server allows
(PARLEY_WEBHOOK_ALLOWED_CIDRS). A URL that breaks the schema is left as it is, to be refused."""

from __future__ import annotations

import re
from typing import Any

import schemathesis

from parley.api.schemas import WEB_URL_PATTERN

LOCAL_RECEIVER = "http://127.0.0.1:9/hook"


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    if not case.operation.path.startswith("/api/v1/webhooks") or not isinstance(case.body, dict):
        return
    url = case.body.get("url")
    if isinstance(url, str) and len(url) <= 2048 and re.search(WEB_URL_PATTERN, url):
        case.body["url"] = LOCAL_RECEIVER
