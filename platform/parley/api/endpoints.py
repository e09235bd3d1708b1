"""The route table. Each handler is registered with what it takes and returns, and that one
declaration both wires aiohttp and generates the OpenAPI document, so the two cannot drift."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from parley.api.errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["none", "user", "admin", "user_or_admin"]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: Auth
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    responses: dict[int, type[BaseModel] | None]
    errors: tuple[int, ...]
    tag: str
    include_in_schema: bool
    # Takes a multipart/form-data body with a file in this field, instead of a JSON `body`.
    upload_field: str | None = None
    # The JSON body may be left out (parse_body(..., optional=True)).
    body_optional: bool = False
    # Schemas of path parameters that are not plain strings (the default).
    path_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class EndpointTable:
    tag: str
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        responses: dict[int, type[BaseModel] | None],
        auth: Auth = "user",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        errors: tuple[int, ...] = (),
        include_in_schema: bool = True,
        upload_field: str | None = None,
        body_optional: bool = False,
        path_schemas: dict[str, dict[str, Any]] | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method, path, handler, summary, auth, body, query, responses, errors, self.tag, include_in_schema,
                    upload_field, body_optional, dict(path_schemas or {}),
                )
            )
            return handler

        return register


def _validation_details(exc: ValidationError) -> dict[str, Any]:
    return {
        "fields": [
            {"field": ".".join(str(part) for part in err["loc"]) or "body", "message": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
    }


def _validate(model: type[M], data: object) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = _validation_details(exc)
        names = ", ".join(f["field"] for f in details["fields"])
        raise ApiError(422, "validation_error", f"invalid fields: {names}", details) from None


async def parse_body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    raw = await request.read()
    if not raw.strip() and optional:
        return model()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return _validate(model, data)


def validate_fields(model: type[M], data: dict[str, Any]) -> M:
    """The model, or the ApiError the API answers with (422 validation_error naming the fields):
    for the CLI, which shows the same message."""
    return _validate(model, data)


def parse_query(request: web.Request, model: type[M]) -> M:
    return _validate(model, dict(request.query))


def respond(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(body=model.model_dump_json(), status=status, content_type="application/json")
