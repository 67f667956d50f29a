"""Run the HTTP API for tests: `solora-node serve` as a process, or in-process on a loop
thread (so a test can hold the model's lock or swap experts), always on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from solora_node.config import ServingSection
from solora_node.serving.engine import ExpertEngine
from solora_node.serving.http import HttpServer
from solora_node.serving.service import start_api

T = TypeVar("T")
READY_S = 120.0


class ServeProcess:
    """`solora-node serve --port 0 --json` on a checkpoint; the first stdout line says the url."""

    def __init__(self, checkpoint: Path, *extra: str) -> None:
        argv = [sys.executable, "-m", "solora_node", "serve", "--checkpoint", str(checkpoint)]
        # A file, not a pipe: a full pipe would stall the server; closed with the object.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*argv, "--port", "0", "--json", "--threads", "1", *extra],
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_S)
        line = self.proc.stdout.readline() if ready else ""  # empty: it exited (or hangs)
        if not line:
            self.stop()
            raise AssertionError(f"serve did not start: {self.stderr()[-2000:]}")
        self.info = json.loads(line)
        self.url = str(self.info["url"])

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; a process that does not stop in time is killed (and reported)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9
        finally:
            assert self.proc.stdout is not None
            self.proc.stdout.close()


class LoopThread:
    """An asyncio loop in a daemon thread; `call` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class InProcessApi:
    def __init__(self, engine: ExpertEngine, max_queue: int = 16) -> None:
        self.engine = engine
        self.runner = LoopThread()
        settings = ServingSection(enabled=True, port=0, max_queue=max_queue)
        self.server: HttpServer = self.runner.call(start_api(engine, settings))
        self.url = f"http://127.0.0.1:{self.server.port}/v1"

    def close(self) -> None:
        self.runner.call(self.server.stop())
        self.runner.close()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
