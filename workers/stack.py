"""`parley up`: the API, a Celery worker and beat as child processes of one command, stopped
together.

Each child runs in its own session (process group): Ctrl-C reaches only this supervisor, which
then stops the children in order of its choosing, and a child's own children (the worker's pool
processes) are stopped with it. On Linux each child is also told to receive SIGTERM if this
process dies without cleaning up (SIGKILL), so nothing is left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("parley.stack")

READY_TIMEOUT_SECONDS = 60.0
# Stop within 10 s: SIGTERM, this long for warm shutdowns (a running task finishes), then SIGKILL.
STOP_GRACE_SECONDS = 8.0
_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def group_alive(self) -> bool:
        """Whether anything of this child's process group (it, or processes it started) remains."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


def stack_children(host: str, port: int, concurrency: int) -> list[Child]:
    python = sys.executable
    return [
        Child("api", [python, "-m", "parley.cli", "serve", "--no-migrate", "--host", host, "--port", str(port)]),
        Child(
            "worker",
            [python, "-m", "parley.cli", "worker", "--concurrency", str(concurrency),
             "--hostname", f"parley-up-{os.getpid()}@%h"],
        ),
        Child("beat", [python, "-m", "parley.cli", "beat"]),
    ]


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def prepare() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return prepare


class Stack:
    def __init__(self, children: list[Child]) -> None:
        self.children = children

    def start(self) -> None:
        prepare = _die_with_parent(os.getpid())
        for child in self.children:
            child.process = subprocess.Popen(child.argv, start_new_session=True, preexec_fn=prepare)
            log.info("stack.started", extra={"child": child.name, "pid": child.process.pid})

    def exited(self) -> Child | None:
        return next((c for c in self.children if not c.running), None)

    def wait_ready(self, url: str, stop: threading.Event) -> bool:
        """Poll the API's readiness URL until it answers 200; False if a child exits, a stop is
        asked for, or the deadline passes first."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not stop.is_set():
            if self.exited() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            stop.wait(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM every child, wait for them up to the grace period, SIGKILL what is left of each
        child's process group."""
        # Only the child itself: it stops its own processes. (A worker whose pool processes are
        # signalled directly as well can hang in its warm shutdown.)
        for child in reversed(self.children):
            if child.running and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("stack.kill", extra={"child": child.name, "pid": child.process.pid})
        for child in self.children:
            # A child that exited may leave processes of its own behind (a pool process): kill them.
            if child.group_alive():
                child.signal_group(signal.SIGKILL)
            if child.process is not None:
                child.process.wait()
            returncode = child.process.returncode if child.process is not None else None
            log.info("stack.stopped", extra={"child": child.name, "returncode": returncode})


def _say_stopping() -> None:
    print("Stopping...", flush=True)


def run_stack(
    children: list[Child],
    ready_url: str,
    on_ready: Callable[[], None],
    on_stopping: Callable[[], None] = _say_stopping,
) -> int:
    """Start the children, call `on_ready` once the API answers, and run until SIGINT or SIGTERM
    (exit 0) or until a child exits on its own (exit 1). Every child is stopped either way; a stop
    asked for is announced with `on_stopping` at once, since stopping takes a few seconds."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(children)
    try:
        stack.start()
        if not stack.wait_ready(ready_url, stop):
            if stop.is_set():
                return 0
            failed = stack.exited()
            log.error("stack.not_ready", extra={"child": failed.name if failed else None, "url": ready_url})
            return 1
        on_ready()
        while not stop.wait(0.5):
            failed = stack.exited()
            if failed is not None:
                returncode = failed.process.returncode if failed.process is not None else None
                log.error("stack.child_exited", extra={"child": failed.name, "returncode": returncode})
                return 1
        return 0
    finally:
        if stop.is_set():
            on_stopping()
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
