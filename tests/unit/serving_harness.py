"""The HTTP API in the test's process, on a loop thread (so a test can hold the model's lock
or swap experts), on 127.0.0.1; `solora_node.serving.process` runs it as a process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from solora_node.config import ServingSection
from solora_node.serving.engine import ExpertEngine
from solora_node.serving.http import HttpServer
from solora_node.serving.service import start_api

T = TypeVar("T")


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
