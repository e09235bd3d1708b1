"""The `parley` command as a newcomer meets it: real subprocesses in an empty directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from parley.cli import main

PARLEY = str(Path(sys.executable).with_name("parley"))


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_http(url: str, deadline_s: float = 30.0) -> dict:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # polling interval, not synchronisation: the deadline bounds it


@pytest.mark.parametrize("command", [[], ["serve"], ["migrate"], ["users", "create"], ["tokens", "create"],
                                     ["digests", "send"], ["digests", "preview"]])
def test_every_command_explains_itself(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_serve_runs_on_the_embedded_defaults_in_a_fresh_directory(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen([PARLEY, "serve", "--port", str(port)], cwd=tmp_path, env=_clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _wait_for_http(f"http://127.0.0.1:{port}/readyz") == {"status": "ok"}
        assert (tmp_path / "var" / "parley.db").exists()

        created = subprocess.run([PARLEY, "users", "create", "--username", "newcomer", "--name", "New"],
                                 cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, check=True)
        user = json.loads(created.stdout)
        minted = subprocess.run([PARLEY, "tokens", "create", "--user", "NEWCOMER"], cwd=tmp_path, env=_clean_env(),
                                capture_output=True, text=True, check=True)
        token = json.loads(minted.stdout)["token"]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["id"] == user["id"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)


def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run([PARLEY, "serve"], cwd=tmp_path, env=_clean_env(PARLEY_PORT="eighty"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "PARLEY_PORT" in result.stderr


def test_several_api_processes_need_redis_and_say_so(tmp_path: Path) -> None:
    result = subprocess.run([PARLEY, "serve", "--workers", "2"], cwd=tmp_path, env=_clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "PARLEY_REDIS_URL" in result.stderr
    assert not (tmp_path / "var").exists()  # refused before touching anything


def test_tokens_for_an_unknown_user_fail_clearly(tmp_path: Path) -> None:
    subprocess.run([PARLEY, "migrate"], cwd=tmp_path, env=_clean_env(), check=True, capture_output=True)
    result = subprocess.run([PARLEY, "tokens", "create", "--user", "ghost"], cwd=tmp_path, env=_clean_env(),
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "not_found" in result.stderr
