"""`parley up`: a newcomer's one command. On a fresh directory with no settings it brings up the
API, a worker and beat; a message sent over HTTP reaches a consumer; SIGTERM stops everything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from parley.config import load_settings
from parley.db import create_sync_db_engine
from tests.workers.conftest import REPO_ROOT, TEST_CONSUMERS, Processes, free_port, wait_until
from tests.workers.consumers import CONTROL_DIR_ENV, create_effects_table, effect_rows

STARTUP_TIMEOUT = 60.0
STOP_LIMIT = 10.0


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        pass
    else:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_parley_up_runs_everything_and_stops_everything(tmp_path: Path, processes: Processes) -> None:
    # The test consumer writes its effect into a table of its own; everything else `parley up`
    # creates itself, from no settings at all.
    database = create_sync_db_engine(load_settings(database_url=f"sqlite:///{tmp_path / 'var' / 'parley.db'}"))
    create_effects_table(database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_EXTRA_CONSUMERS=TEST_CONSUMERS, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    env[CONTROL_DIR_ENV] = str(tmp_path)
    port = free_port()
    argv = [sys.executable, "-m", "parley.cli", "up", "--demo", "--port", str(port)]
    up = processes.start("up", argv, env, cwd=tmp_path)

    wait_until(lambda: "Press Ctrl-C to stop." in up.output(), timeout=STARTUP_TIMEOUT, what="parley up", log=up.output)
    output = up.output()
    assert f"http://127.0.0.1:{port}/api/v1" in output
    token = re.search(r"alice\s+id \w+\s+token (\S+)", output)
    conversation = re.search(r"/api/v1/conversations/(\w+)/messages", output)
    assert token and conversation, output
    children = [int(pid) for pid in re.findall(r'"event": "stack.started", "child": "\w+", "pid": (\d+)', output)]
    assert len(children) == 3

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/conversations/{conversation.group(1)}/messages",
        data=json.dumps({"content": "Hello Bob"}).encode(),
        headers={"Authorization": f"Bearer {token.group(1)}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        assert json.load(response)["content"] == "Hello Bob"

    def message_effect() -> bool:
        return any(e for e, _, _ in effect_rows(database, "test-ordered"))

    wait_until(message_effect, timeout=30, what="the consumer's effect of the message", log=up.output)
    assert len(effect_rows(database, "test-ordered")) == 1
    database.dispose()

    up.popen.send_signal(signal.SIGTERM)
    try:
        returncode = up.popen.wait(timeout=STOP_LIMIT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"parley up still running {STOP_LIMIT:g} s after SIGTERM\n{up.output()[-4000:]}") from None
    assert returncode == 0, up.output()[-4000:]
    assert all(_gone(pid) for pid in children), "no process of the stack is left"
