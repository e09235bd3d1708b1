"""The README's walkthrough runs as written on a fresh clone. Its shell blocks are taken from
README.md itself, so the README cannot drift from what works: the `server` block's exports start
`parley up` (what its `make up` runs) in an empty directory, and every `client` block runs, in
order, in one bash, where any curl that gets an error status stops the walk. Only the addresses
change: the API's port and the webhook receiver's are free ones."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.workers.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PARLEY = str(Path(sys.executable).with_name("parley"))
BLOCK = re.compile(r"<!-- walkthrough: (\w+)[^>]*-->\n```sh\n(.*?)```", re.DOTALL)
WALK_TIMEOUT_SECONDS = 120


def _blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) == text.count("```sh"), "every ```sh block of README.md needs a <!-- walkthrough: ... --> mark"
    return blocks


class _Process:
    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self._lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in iter(self.popen.stdout.readline, b""):
            self._lines.append(line.decode(errors="replace"))

    def output(self) -> str:
        return "".join(self._lines)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output():
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not seen within {timeout:g} s:\n{self.output()[-6000:]}")
            time.sleep(0.1)  # polling interval; the deadline bounds the wait

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        else:
            # The walk's background jobs (the webhook receiver) outlive its shell.
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_every_command_of_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = _blocks()
    (server,) = [code for kind, code in blocks if kind == "server"]
    clients = [code for kind, code in blocks if kind == "client"]
    assert clients
    exports = dict(re.findall(r"^export (PARLEY_\w+)=(\S+)", server, re.MULTILINE))
    assert "PARLEY_ADMIN_TOKEN" in exports
    assert re.search(r"^make up\b", server, re.MULTILINE), "the walkthrough starts Parley with `make up`"

    api_port, receiver_port = free_port(), free_port()
    walk = "\n".join(clients)
    assert "127.0.0.1:8080" in walk and ":9000" in walk
    walk = walk.replace("127.0.0.1:8080", f"127.0.0.1:{api_port}").replace(":9000", f":{receiver_port}")
    walk = walk.replace("--port 9000", f"--port {receiver_port}")

    # A fresh clone's working directory: its .venv and examples/, nothing else.
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(Path(sys.executable).parents[1])
    (clone / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env["PYTHONUNBUFFERED"] = "1"

    up = _Process([PARLEY, "up", "--port", str(api_port)], tmp_path / "clone", {**env, **exports})
    shell: _Process | None = None
    try:
        up.wait_for("Press Ctrl-C to stop.", timeout=90)
        script = (
            "set -euo pipefail\n"
            # An error status stops the walk, with the response shown, instead of feeding jq a null.
            "curl() { command curl --fail-with-body --max-time 30 \"$@\"; }\n"
            f"{walk}\n"
            "echo WALKTHROUGH-DONE\n"
        )
        shell = _Process(["bash", "-c", script], clone, env)
        shell.wait_for("WALKTHROUGH-DONE", timeout=WALK_TIMEOUT_SECONDS)
        assert shell.popen.wait(timeout=10) == 0, shell.output()[-6000:]
        output = shell.output()
        assert "This message was deleted" in output
        assert (clone / "photo.jpg").read_bytes().startswith(b"\xff\xd8")  # the picture, not an error
        assert (clone / "thumb.jpg").read_bytes().startswith(b"\xff\xd8")
        # The receiver, still running, got both events and could verify their signatures.
        shell.wait_for("webhook.test ", timeout=30)
        shell.wait_for("message.created ", timeout=30)
        received = [line for line in shell.output().splitlines() if line.startswith(("webhook.test", "message.created"))]
        assert received and all("signature ok" in line for line in received), received
    except AssertionError:
        if shell is not None:
            print(shell.output()[-6000:])
        print(up.output()[-6000:])
        raise
    finally:
        if shell is not None:
            shell.stop()
        up.stop()


@pytest.mark.parametrize("target", ["up", "jq"])
def test_the_walkthroughs_make_targets_exist(target: str) -> None:
    result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
