from __future__ import annotations

from parley.api.app import all_endpoints, init_app
from parley.config import load_settings
from tests.conftest import POSTGRES_ADMIN_URL


async def test_health_and_readiness(client) -> None:
    health = await client.get("/healthz")
    ready = await client.get("/readyz")
    assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert (ready.status, await ready.json()) == (200, {"status": "ok"})


async def test_the_openapi_document_describes_every_route_the_server_serves(client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()

    assert document["openapi"].startswith("3.1")
    served = {(e.method.lower(), e.path) for e in all_endpoints() if e.include_in_schema}
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert documented == served
    send = document["paths"]["/api/v1/conversations/{conversation_id}/messages"]["post"]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SendMessageBody"}
    assert {"200", "201", "401", "404", "422"} <= set(send["responses"])
    message = document["components"]["schemas"]["MessageOut"]
    assert {"id", "conversation_id", "sender", "attachments", "read_at", "deleted_at", "client_id"} <= set(message["properties"])


async def test_the_docs_page_renders_the_document_with_its_own_assets(client) -> None:
    page = await client.get("/docs")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "/openapi.json" in html
    script = await client.get("/docs/static/swagger-ui-bundle.js")
    assert script.status == 200 and len(await script.read()) > 100_000


async def test_readiness_fails_clearly_when_the_database_is_unreachable(aiohttp_client, tmp_path) -> None:
    missing = POSTGRES_ADMIN_URL.rpartition("/")[0] + "/parley_no_such_database"
    settings = load_settings(database_url=missing, broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    client = await aiohttp_client(init_app(settings))

    health = await client.get("/healthz")
    ready = await client.get("/readyz")

    assert health.status == 200
    assert ready.status == 503
    assert (await ready.json())["error"]["code"] == "database_unavailable"
