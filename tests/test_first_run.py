"""The first run, as a newcomer meets it: a copied .env.example, a port already in use, --help of
every command, a bad username, a quiet start and a Ctrl-C that says what it does. Real `parley`
subprocesses in empty directories."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.workers.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PARLEY = str(Path(sys.executable).with_name("parley"))
BUSY_EXIT_SECONDS = 5.0


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


class _Output:
    """A subprocess's combined output, collected by a thread so it can be polled."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in iter(self.popen.stdout.readline, b""):
            self._chunks.append(line.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self._chunks)

    def wait_for(self, needle: str, timeout: float) -> float:
        """Seconds until `needle` appeared in the output; fails after `timeout`."""
        started = time.monotonic()
        while needle not in self.text():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{needle!r} not printed within {timeout:g} s:\n{self.text()[-4000:]}")
            time.sleep(0.05)  # polling interval; the deadline bounds the wait
        return time.monotonic() - started

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=15)


class _AnswersEverything(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port where another HTTP server already runs, and answers /readyz with 200."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AnswersEverything)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_copy_of_env_example_starts_as_the_defaults_do(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run([PARLEY, "migrate"], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "parley.db").exists()


@pytest.mark.parametrize(
    "command", [["serve"], ["serve", "--workers", "2"], ["up"]], ids=["serve", "serve-workers", "up"]
)
def test_a_busy_port_stops_start_up_at_once_in_one_line(tmp_path: Path, busy_port: int, command: list[str]) -> None:
    env = _clean_env(PARLEY_REDIS_URL="redis://127.0.0.1:6379/15")  # --workers 2 needs one; nothing is sent
    started = time.monotonic()
    try:
        result = subprocess.run([PARLEY, *command, "--port", str(busy_port)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=BUSY_EXIT_SECONDS, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"parley {' '.join(command)} still running after {BUSY_EXIT_SECONDS:g} s: {exc.output!r}")
    assert time.monotonic() - started < BUSY_EXIT_SECONDS
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{busy_port}: the address is already in use"
    assert not (tmp_path / "var").exists()  # refused before touching anything


def test_parley_up_says_it_is_stopping_at_once(tmp_path: Path) -> None:
    port = free_port()
    up = _Output([PARLEY, "up", "--port", str(port)], tmp_path, _clean_env())
    try:
        up.wait_for("Press Ctrl-C to stop.", timeout=90)
        os.kill(up.popen.pid, signal.SIGINT)
        assert up.wait_for("Stopping Parley", timeout=1.0) < 1.0
        assert up.popen.wait(timeout=15) == 0
    finally:
        up.stop()


def test_start_up_prints_no_noise(tmp_path: Path) -> None:
    port = free_port()
    serve = _Output([PARLEY, "serve", "--port", str(port)], tmp_path, _clean_env())
    try:
        serve.wait_for(f"Running on http://127.0.0.1:{port}", timeout=60)
    finally:
        serve.stop()
    output = serve.text()
    assert "Running upgrade" in output  # a fresh database was migrated
    assert "SAWarning" not in output and "Warning" not in output
    assert "setup plugin" not in output


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_worker_and_beat_help_is_parleys(tmp_path: Path, command: str) -> None:
    result = subprocess.run([PARLEY, command, "--help"], cwd=tmp_path, env=_clean_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: parley {command} ")
    assert "PARLEY_" in result.stdout and "--loglevel" in result.stdout
    assert "proj" not in result.stdout and "celery --app" not in result.stdout
    assert not (tmp_path / "var").exists()


def test_a_bad_username_gets_the_apis_message(tmp_path: Path) -> None:
    result = subprocess.run([PARLEY, "users", "create", "--username", "bad name!", "--name", "Bad"], cwd=tmp_path,
                            env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "Error: validation_error: invalid fields: username",
        "  --username: Value error, must be 1 to 40 letters, digits, '.', '_' or '-', starting and ending with a "
        "letter or digit",
    ]
