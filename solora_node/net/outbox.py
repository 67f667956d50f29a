"""The only writer of an exchange stream, and the error that ends an exchange.

Control frames (want, ack) overtake queued chunks, so a side that is reading never
waits behind its own chunks: two sides pushing at once cannot deadlock on HTTP/2 flow
control (net/session.py).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from solora_node._proto import exchange_pb2
from solora_node.net.frames import OutFrame
from solora_node.protocol.reasons import Reason

WriteFrame = Callable[[OutFrame], Awaitable[None]]

# Chunks queued ahead of the writer: enough to keep the socket busy, little memory.
_DATA_DEPTH = 4


class SessionAborted(Exception):
    """The exchange cannot go on (peer vanished, protocol violation, deadline)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Outbox:
    """The only writer of a stream. Control frames (want, ack) overtake queued chunks."""

    def __init__(self, write: WriteFrame, on_written: Callable[[OutFrame, int], None]) -> None:
        self._write = write
        self._on_written = on_written
        self._control: collections.deque[tuple[OutFrame, int]] = collections.deque()
        self._data: collections.deque[tuple[OutFrame, int]] = collections.deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._closing = False
        self.error: BaseException | None = None

    def control(self, frame: exchange_pb2.Frame) -> None:
        self._control.append((frame, frame.ByteSize()))
        self._wake.set()

    async def data(self, frame: OutFrame, size: int) -> None:
        while len(self._data) >= _DATA_DEPTH and self.error is None:
            self._space.clear()
            await self._space.wait()
        if self.error is not None:
            raise SessionAborted(Reason.UNAVAILABLE, f"stream write failed: {self.error!r}")
        self._data.append((frame, size))
        self._wake.set()

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._closing = True
        self._wake.set()

    def drop_data(self) -> None:
        """Aborting: forget queued chunks, but still write queued acks, then stop."""
        self._data.clear()
        self.close()

    async def run(self) -> None:
        try:
            while True:
                if self._control:
                    frame, size = self._control.popleft()
                elif self._data:
                    frame, size = self._data.popleft()
                    self._space.set()
                elif self._closing:
                    return
                else:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._write(frame)
                self._on_written(frame, size)
        except BaseException as exc:
            self.error = exc
            self._space.set()
            raise
