"""OpenAPI 3.1 generated from the route table and the same pydantic models the handlers use."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from parley.api.endpoints import Endpoint
from parley.api.schemas import ErrorOut, message_content_pattern

_PATH_PARAM = re.compile(r"{(\w+)}")
_ERROR_TEXT = {
    400: "Malformed request (invalid_json, invalid_upload)",
    401: "Missing or unknown bearer token (unauthorized)",
    403: "Not allowed (admin_required, user_token_required: a user's route called with the admin token, not_sender, "
    "policy_denied with the reason in details, blocked, ...)",
    404: "Not found, or not yours to see (not_found, user_not_found, webhook_not_found, ...)",
    409: "Conflicts with existing data (username_taken, client_id_reused, webhook_disabled), or not ready "
    "(attachment_not_ready)",
    413: "Too large (payload_too_large: the body is over PARLEY_MAX_REQUEST_BYTES; upload_too_large)",
    415: "A type Parley does not accept (unsupported_media_type)",
    422: "Validation failed (validation_error naming the fields, cannot_message_self, invalid_cursor, "
    "contact_info_not_allowed naming the kinds found, ...)",
    426: "A WebSocket route called without the upgrade (upgrade_required)",
    503: "A dependency is unavailable",
}


def error_statuses(e: Endpoint) -> set[int]:
    """Every error status the route can answer: the ones it declares, and those that follow from
    its authentication, its path parameters and its input."""
    statuses = set(e.errors)
    if e.auth != "none":
        statuses.add(401)  # no token, or an unknown or revoked one
    if e.auth in ("user", "admin"):
        statuses.add(403)  # user routes refuse the admin token (user_token_required); admin routes user tokens
    if _PATH_PARAM.search(e.path):
        statuses.add(404)
    if e.body is not None:
        statuses |= {400, 413, 422}
    if e.query is not None:
        statuses.add(422)
    if e.upload_field is not None:
        statuses |= {400, 413, 415, 422}
    return statuses


def build_openapi(endpoints: Iterable[Endpoint], *, version: str, max_message_chars: int = 10_000) -> dict[str, Any]:
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
                {"name": name, "in": "path", "required": True, "schema": e.path_schemas.get(name, {"type": "string"})}
                for name in _PATH_PARAM.findall(e.path)
            ],
            "responses": {},
        }
        if e.query is not None:
            for name, info in e.query.model_fields.items():
                schema = _query_value(e.query.model_json_schema()["properties"][name])
                operation["parameters"].append(
                    {"name": name, "in": "query", "required": info.is_required(), "schema": schema,
                     "description": info.description or ""}
                )
        if e.body is not None:
            operation["requestBody"] = {
                "required": not e.body_optional,
                "content": {"application/json": {"schema": ref[e.body]}},
            }
        if e.upload_field is not None:
            file_schema = {"type": "string", "format": "binary", "minLength": 1, "description": "Not empty."}
            operation["requestBody"] = {
                "required": True,
                "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": [e.upload_field], "properties": {e.upload_field: file_schema},
                    "additionalProperties": False,
                }}},
            }
        if e.auth != "none":
            operation["security"] = [{"bearer": []}]
        for status, model in e.responses.items():
            response: dict[str, Any] = {"description": "Success" if status < 300 else ""}
            if model is not None:
                response["content"] = {"application/json": {"schema": ref[model]}}
            operation["responses"][str(status)] = response
        for status in sorted(error_statuses(e)):
            operation["responses"][str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": ref[ErrorOut]}},
            }
        paths.setdefault(e.path, {})[e.method.lower()] = operation

    schemas = definitions.get("$defs", {})
    if "SendMessageBody" in schemas:
        # The content rule depends on a setting: 1 to PARLEY_MAX_MESSAGE_CHARS characters after trimming.
        schemas["SendMessageBody"]["properties"]["content"]["pattern"] = message_content_pattern(max_message_chars)
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
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _query_value(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a string, never JSON null: drop the null branch of an
    optional parameter's schema."""
    variants = schema.get("anyOf")
    if variants is None:
        return schema
    shown = [v for v in variants if v.get("type") != "null"]
    if len(shown) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**shown[0], **rest}


def _is_request(model: type[BaseModel], endpoints: list[Endpoint]) -> bool:
    return any(e.body is model for e in endpoints)
