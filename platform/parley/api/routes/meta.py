"""Health checks and the API's own description."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import swagger_ui
from aiohttp import web
from sqlalchemy import text

from parley.api.endpoints import EndpointTable, respond
from parley.api.errors import ApiError
from parley.api.keys import ENGINE
from parley.api.schemas import HealthOut

endpoints = EndpointTable(tag="meta")

SWAGGER_STATIC = Path(swagger_ui.__file__).parent / "static"
OPENAPI_KEY = web.AppKey("openapi", dict)

_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Parley API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""


@endpoints.route("GET", "/healthz", summary="The process is up", auth="none", responses={200: HealthOut})
async def healthz(request: web.Request) -> web.Response:
    return respond(HealthOut(status="ok"))


@endpoints.route(
    "GET", "/readyz", summary="The database answers", auth="none", responses={200: HealthOut}, errors=(503,)
)
async def readyz(request: web.Request) -> web.Response:
    try:
        async with request.app[ENGINE].connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means "not ready"
        raise ApiError(503, "database_unavailable", "the database is not reachable",
                       {"reason": type(exc).__name__}) from None
    return respond(HealthOut(status="ok"))


@endpoints.route("GET", "/openapi.json", summary="This document", auth="none", responses={200: None},
                 include_in_schema=False)
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


@endpoints.route("GET", "/docs", summary="Interactive API documentation", auth="none", responses={200: None},
                 include_in_schema=False)
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_DOCS_PAGE, content_type="text/html")


def parley_version() -> str:
    return version("parley")
