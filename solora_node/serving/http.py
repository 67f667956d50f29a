"""Run the API with uvicorn inside an existing asyncio loop (the daemon's, or `serve`'s).

We bind the socket ourselves so that a taken port is a one-line error at start and port 0
reports the port it got; uvicorn's own signal capture is turned off because the process
that embeds the server owns SIGTERM/SIGINT (the daemon stops gracefully on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette

from solora_node.errors import SoloraError

STOP_TIMEOUT_S = 5
START_TIMEOUT_S = 10.0


class ServingError(SoloraError):
    """The HTTP API cannot start (address in use, bad host)."""


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServingError(
            f"serving on {host}:{port}: {exc.strerror}; expected a free port on a local address"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class HttpServer:
    """start() binds and serves in the background; stop() lets requests finish, then closes."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.app, self.host, self.port = app, host, port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        sock = bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=STOP_TIMEOUT_S,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-api")
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while not self._server.started and not self._task.done():
            if asyncio.get_running_loop().time() > deadline:
                raise ServingError(f"serving on {self.host}:{self.port}: uvicorn did not start")
            await asyncio.sleep(0.01)  # uvicorn sets `started` once it accepts connections
        if self._task.done():
            self._task.result()
        return self.port

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, STOP_TIMEOUT_S + 2)
