"""The API process imports no Celery task module (and through them no Pillow or PyAV): it only
publishes nudges by task name. Checked in fresh interpreters, in empty directories, so nothing
this test session imported counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ADMIN_TOKEN, SECRET_KEY, empty_all_tables

REPO_ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("workers.tasks", "workers.media_tasks", "workers.webhook_tasks", "workers.celery_app", "PIL", "av")

# Prints the forbidden modules (or submodules of them) found in sys.modules, as JSON.
_REPORT = f"""
import json, sys
forbidden = {FORBIDDEN!r}
loaded = sorted(n for n in sys.modules if any(n == f or n.startswith(f + ".") for f in forbidden))
print("LOADED=" + json.dumps({{"forbidden": loaded, "app": "parley.api.app" in sys.modules}}))
"""

BUILD = """
from parley.api.app import init_app
from parley.config import load_settings
app = init_app(load_settings())
assert app.router.routes(), "the app has no routes"
""" + _REPORT

# Start the app for real (its cleanup contexts: database, nudger, realtime, storage), provision two
# users, start a conversation with a first message (a commit with events: the hook wakes realtime
# and publishes a nudge by task name), wait for the nudge to be sent, stop.
SERVE = """
import asyncio, os, time
import aiohttp
from aiohttp import web
from parley.api.app import OUTBOX_NUDGER, init_app
from parley.config import load_settings

async def main():
    app = init_app(load_settings())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/v1"
    admin = {"Authorization": "Bearer " + os.environ["PARLEY_ADMIN_TOKEN"]}
    try:
        async with aiohttp.ClientSession() as http:
            ids, tokens = [], []
            for name in ("alice", "bob"):
                async with http.post(base + "/users", json={"username": name, "name": name}, headers=admin) as r:
                    assert r.status == 201, await r.text()
                    ids.append((await r.json())["id"])
                async with http.post(f"{base}/users/{ids[-1]}/tokens", headers=admin) as r:
                    assert r.status == 201, await r.text()
                    tokens.append((await r.json())["token"])
            body = {"user_id": ids[1], "message": {"content": "hello"}}
            async with http.post(base + "/conversations", json=body, headers={"Authorization": "Bearer " + tokens[0]}) as r:
                assert r.status == 201, await r.text()
        nudger = app[OUTBOX_NUDGER]
        deadline = time.monotonic() + 20
        while nudger.sent + nudger.failed == 0:
            assert time.monotonic() < deadline, "no nudge was published"
            await asyncio.sleep(0.05)
        assert nudger.sent > 0, "the nudge failed"
    finally:
        await runner.cleanup()

asyncio.run(main())
""" + _REPORT


def _run(code: str, cwd: Path, **env: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    environment.update(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", **env)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("LOADED=")]
    return dict(json.loads(line.removeprefix("LOADED=")))


def test_building_the_api_app_imports_no_task_module_nor_media_library(tmp_path: Path) -> None:
    found = _run(BUILD, tmp_path)
    assert found == {"forbidden": [], "app": True}
    assert list(tmp_path.iterdir()) == []  # building the app writes nothing either


def test_a_running_api_that_committed_events_and_nudged_imported_none_either(tmp_path: Path, sqlite_url: str) -> None:
    empty_all_tables(sqlite_url)
    found = _run(
        SERVE,
        tmp_path,
        PARLEY_DATABASE_URL=sqlite_url,
        PARLEY_ADMIN_TOKEN=ADMIN_TOKEN,
        PARLEY_SECRET_KEY=SECRET_KEY,
        PARLEY_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        PARLEY_STORAGE_PATH=str(tmp_path / "storage"),
    )
    assert found == {"forbidden": [], "app": True}
