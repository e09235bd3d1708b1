"""OpenAPI 3.1 generated from the route table and the same pydantic models the handlers use."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from parley.api.endpoints import Endpoint
from parley.api.schemas import ErrorOut

_PATH_PARAM = re.compile(r"{(\w+)}")
_ERROR_TEXT = {
    400: "Malformed request (invalid_json)",
    401: "Missing or unknown bearer token (unauthorized)",
    403: "Not allowed (admin_required, not_sender, ...)",
    404: "Not found, or not yours to see (not_found, user_not_found)",
    409: "Conflicts with existing data (username_taken, client_id_reused), or not ready (attachment_not_ready)",
    413: "Too large (upload_too_large)",
    415: "A type Parley does not accept (unsupported_media_type)",
    422: "Validation failed (validation_error, cannot_message_self, ...)",
    503: "A dependency is unavailable",
}


def build_openapi(endpoints: Iterable[Endpoint], *, version: str) -> dict[str, Any]:
    endpoints = [e for e in endpoints if e.include_in_schema]
    models: set[type[BaseModel]] = {ErrorOut}
    for e in endpoints:
        models.update(m for m in e.responses.values() if m is not None)
        if e.body is not None:
            models.add(e.body)
    ordered = sorted(models, key=lambda m: m.__name__)
    keyed, definitions = models_json_schema(
        [(m, "validation" if _is_request(m, endpoints) else "serialization") for m in ordered],
        ref_template="#/components/schemas/{model}",
    )
    ref = {m: keyed[(m, mode)] for (m, mode) in keyed}

    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.handler.__name__,
            "tags": [e.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PATH_PARAM.findall(e.path)
            ],
            "responses": {},
        }
        if e.query is not None:
            for name, info in e.query.model_fields.items():
                schema = e.query.model_json_schema()["properties"][name]
                operation["parameters"].append(
                    {"name": name, "in": "query", "required": info.is_required(), "schema": schema,
                     "description": info.description or ""}
                )
        if e.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref[e.body]}},
            }
        if e.upload_field is not None:
            file_schema = {"type": "string", "format": "binary"}
            operation["requestBody"] = {
                "required": True,
                "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": [e.upload_field], "properties": {e.upload_field: file_schema},
                }}},
            }
        if e.auth != "none":
            operation["security"] = [{"bearer": []}]
        for status, model in e.responses.items():
            response: dict[str, Any] = {"description": "Success" if status < 300 else ""}
            if model is not None:
                response["content"] = {"application/json": {"schema": ref[model]}}
            operation["responses"][str(status)] = response
        error_statuses = set(e.errors) | ({401} if e.auth != "none" else set()) | ({403} if "admin" in e.auth else set())
        if e.body is not None or e.query is not None:
            error_statuses |= {400, 422}
        for status in sorted(error_statuses):
            operation["responses"][str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": ref[ErrorOut]}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley API",
            "version": version,
            "description": "1:1 conversations between the users of a host product. Authenticate with "
            "`Authorization: Bearer <token>`; the host product provisions users and mints their tokens "
            "with the admin token.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _is_request(model: type[BaseModel], endpoints: list[Endpoint]) -> bool:
    return any(e.body is model for e in endpoints)
