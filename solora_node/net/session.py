"""One exchange between two neighbours, after the handshake: the same state machine on both ends.

Each side offers what it holds, answers the other's offer with what it wants,
streams the wanted items as chunks, acknowledges every item it receives with
the validation result, and says done. Reading never waits on writing (acks go
through an outbox with priority over chunks), so two sides pushing at once
cannot deadlock on HTTP/2 flow control.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

from solora_node._proto import exchange_pb2
from solora_node.net.chunks import chunk_frame_size
from solora_node.net.convert import descriptor_to_proto
from solora_node.net.frames import ChunkFrame, as_chunk
from solora_node.net.observe import ByteKind
from solora_node.net.outbox import Outbox, SessionAborted
from solora_node.net.receiving import ReceivingHalf, checked_delta, checked_mask
from solora_node.net.sending import SendingHalf, encode_items
from solora_node.net.session_core import OutgoingItem, ReadFrame
from solora_node.protocol.messages import ExchangeResult
from solora_node.protocol.reasons import Reason, WireError

__all__ = [
    "ExchangeSession",
    "Outbox",
    "OutgoingItem",
    "ReadFrame",
    "SessionAborted",
    "checked_delta",
    "checked_mask",
    "encode_items",
]

T = TypeVar("T")

# On abort, how long we try to deliver queued acks before giving up on the stream.
_FLUSH_TIMEOUT_S = 0.5


class ExchangeSession(SendingHalf, ReceivingHalf):
    """Runs one exchange: the sending half (net/sending.py) and the receiving half
    (net/receiving.py) of the same state machine, driven by one reading loop."""

    def _finished(self) -> bool:
        return (
            self._done_sent and self._peer_done and not self._awaiting_ack and not self._validating
        )

    def _count_received(self, kind: ByteKind, size: int) -> None:
        self._bytes_received += size
        self.observer.bytes_moved(kind, "received", size)

    async def _dispatch(self, frame: exchange_pb2.Frame | ChunkFrame) -> None:
        chunk = as_chunk(frame)
        if chunk is not None:
            nbytes = len(chunk.data)
            self._count_received(
                "delta",
                chunk_frame_size(chunk.round, chunk.item_id, chunk.index, chunk.total, nbytes),
            )
            await self._on_chunk(chunk)
            return
        assert isinstance(frame, exchange_pb2.Frame)  # as_chunk took every ChunkFrame
        kind = frame.WhichOneof("body")
        self._count_received("control", frame.ByteSize())
        if kind == "ack":
            self._on_ack(frame.ack)
        elif kind == "offer":
            self._on_offer(frame.offer)
        elif kind == "want":
            self._on_want(frame.want)
        elif kind == "done":
            self._on_done()
        else:
            raise SessionAborted(
                Reason.PROTOCOL_ERROR, f"unexpected frame {kind!r} during an exchange"
            )

    def _remaining(self) -> float:
        return self._deadline - time.monotonic()

    async def _bounded(self, awaitable: Awaitable[T], limit: float, what: str) -> T:
        """Await within `limit` seconds and the exchange deadline, whichever ends first."""
        remaining = self._remaining()
        try:
            return await asyncio.wait_for(awaitable, max(0.0, min(limit, remaining)))
        except asyncio.TimeoutError:
            if remaining <= limit:
                detail = f"exchange took over {self.limits.exchange_deadline_s} s"
            else:
                detail = f"no progress {what} within {limit} s"
            self._abandon_incoming(Reason.TIMEOUT, detail)
            raise SessionAborted(Reason.TIMEOUT, detail) from None

    async def _next_frame(self) -> exchange_pb2.Frame | ChunkFrame | None:
        try:
            frame = await self._bounded(self._read(), self.limits.chunk_deadline_s, "reading")
        except SessionAborted as exc:
            self._abandon_incoming(Reason.TRUNCATED, f"stream broke mid-item: {exc.message}")
            raise
        if frame is None:
            if self._validating:  # our acks may be all the peer was waiting for
                await self._bounded(
                    self._to_validate.join(), self.limits.chunk_deadline_s, "validating"
                )
            if self._finished():
                return None  # our last step was sending; the peer has all it needed and left
            self._abandon_incoming(Reason.TRUNCATED, "stream closed mid-item")
            raise SessionAborted(
                Reason.TRUNCATED, "peer closed the stream before the exchange finished"
            )
        if frame.round < self.peer.hello.round:
            raise SessionAborted(
                Reason.PROTOCOL_ERROR,
                f"frame of round {frame.round} is older than the peer's hello "
                f"({self.peer.hello.round})",
            )
        return frame  # counted in _dispatch, which reads a chunk's bytes only once

    async def _exchange(self, writer: asyncio.Task[None]) -> None:
        descriptors = await self._prepare_offer()
        offer = exchange_pb2.Offer(items=[descriptor_to_proto(d) for d in descriptors])
        self._outbox.control(self._frame(offer=offer))
        while not self._finished():
            if writer.done() and self._outbox.error is not None:
                raise SessionAborted(
                    Reason.UNAVAILABLE, f"stream write failed: {self._outbox.error!r}"
                )
            frame = await self._next_frame()
            if frame is None:
                break
            await self._dispatch(frame)
        if self._sender is not None:
            await self._bounded(self._sender, self.limits.chunk_deadline_s, "sending")
        self._outbox.close()
        await self._bounded(writer, self.limits.chunk_deadline_s, "writing")

    async def run(self) -> ExchangeResult:
        """Exchange until both sides are done or the exchange deadline; never raises for
        peer problems: they end up in the result's reason (and the observer hears of it)."""
        started = time.monotonic()
        self._deadline = started + self.limits.exchange_deadline_s
        writer = asyncio.create_task(self._outbox.run())
        validator = asyncio.create_task(self._validate_in_order())
        reason, message = Reason.OK, ""
        cancelled = False
        try:
            await self._exchange(writer)
        except SessionAborted as exc:
            reason, message = exc.reason, exc.message
        except WireError as exc:
            reason, message = exc.reason, exc.detail
        except asyncio.CancelledError:
            # gRPC cancels a handler whose stream died (e.g. a message over the size limit):
            # still count the exchange, then let the cancellation go on.
            reason, message, cancelled = Reason.UNAVAILABLE, "stream cancelled", True
            self._abandon_incoming(Reason.TRUNCATED, "stream cancelled mid-item")
        finally:
            if self._sender is not None and not self._sender.done():
                self._sender.cancel()
            validator.cancel()
            await asyncio.gather(validator, return_exceptions=True)
            for item_id in list(self._validating):  # cut off before the store saw them
                self._validating.pop(item_id)
                self._refuse(item_id, WireError(Reason.TRUNCATED, "exchange ended first"))
            if not writer.done() and not cancelled:
                # Tell the peer why its items were refused, if the stream still lets us.
                self._outbox.drop_data()
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writer), _FLUSH_TIMEOUT_S)
            tasks = [t for t in (self._sender, writer) if t is not None]
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        result = self.result(reason, message, time.monotonic() - started)
        self.observer.exchange_finished(result)
        if cancelled:
            raise asyncio.CancelledError
        return result

    def result(self, reason: Reason, message: str, duration_s: float) -> ExchangeResult:
        return ExchangeResult(
            peer=self.peer_id,
            round=self._round,
            reason=reason,
            message=message,
            items_sent=self._sent_ok,
            items_received=self._received_ok,
            refused_by_peer=dict(self._refused_by_peer),
            refused_by_me=dict(self._refused_by_me),
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            finished_unix=time.time(),
            duration_s=duration_s,
            initiated=self.initiated,
        )
