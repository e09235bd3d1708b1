"""/openapi.json tells the truth: schemathesis, with every check, against a live server, as the
admin and as a user. Every status a route answers is listed, every constraint it enforces is
stated: no server error, no undocumented status, no schema-valid request refused and no
schema-violating one accepted.

The run is bounded and reproducible: a fixed number of examples per operation, a fixed seed and
deterministic generation, one worker. `GET /api/v1/ws` is left out: it speaks WebSocket only,
which schemathesis does not."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from parley.api.app import init_app
from parley.config import Settings
from tests.api.conftest import ADMIN, provision

SCHEMATHESIS = str(Path(sys.executable).with_name("st"))
MAX_EXAMPLES = 25
SEED = 20261130
RUN_TIMEOUT_SECONDS = 300
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Webhook URLs of the run point at 127.0.0.1 (tests/api/openapi_hooks.py).
    return settings.model_copy(update={"webhook_allowed_cidrs": ["127.0.0.1/32"]})


async def _schemathesis(base_url: str, authorization: str, report: Path) -> tuple[int, str]:
    argv = [
        SCHEMATHESIS, "--config-file", str(CONFIG), "run", f"{base_url}/openapi.json",
        "--header", f"Authorization: {authorization}",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--generation-deterministic",
        "--workers", "1",
        "--exclude-path", "/api/v1/ws",
        "--no-color",
        "--report", "junit", "--report-dir", str(report),
    ]
    # Run from the test's own directory: schemathesis keeps a cache (.schemathesis/) in its working
    # directory, which must not land in the work tree.
    repo = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.openapi_hooks", "PYTHONPATH": pythonpath}
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=report.parent, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, output.decode(errors="replace")


@pytest.mark.timeout(2 * RUN_TIMEOUT_SECONDS + 60)
async def test_schemathesis_finds_nothing_as_the_admin_or_as_a_user(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    client = await aiohttp_client(init_app(settings))
    user = await provision(client, "carol")
    await provision(client, "dave")  # someone to talk to
    base_url = str(client.make_url("")).rstrip("/")

    for name, authorization in (("admin", ADMIN["Authorization"]), ("user", user.auth["Authorization"])):
        returncode, output = await _schemathesis(base_url, authorization, tmp_path / name)
        assert returncode == 0, f"schemathesis as the {name}:\n{output[-12000:]}"
        # Every operation but the WebSocket one was exercised.
        assert re.search(r"Tested: +47\b", output), output[-4000:]
