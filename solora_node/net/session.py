"""One exchange between two neighbours, after the handshake: the same state machine on both ends.

Each side offers what it holds, answers the other's offer with what it wants,
streams the wanted items as chunks, acknowledges every item it receives with
the validation result, and says done. Reading never waits on writing (acks go
through an outbox with priority over chunks), so two sides pushing at once
cannot deadlock on HTTP/2 flow control.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from solora_node._proto import exchange_pb2
from solora_node.net.chunks import Reassembler, chunk_count, chunk_frame_size, split_parts
from solora_node.net.codec import (
    checksum_parts,
    decode_delta,
    decode_mask,
    encode_delta_parts,
    encode_mask_parts,
)
from solora_node.net.convert import descriptor_from_proto, descriptor_to_proto, offer_from_proto
from solora_node.net.limits import WireLimits
from solora_node.net.observe import ByteKind, RefusalLog, WireObserver
from solora_node.net.port import BlockStore
from solora_node.net.validate import (
    check_checksum,
    check_offered,
    validate_delta,
    validate_mask,
)
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.messages import Descriptor, ExchangeResult, Expectation, PeerContext
from solora_node.protocol.reasons import Reason, WireError

T = TypeVar("T")
Frame = exchange_pb2.Frame
ReadFrame = Callable[[], Awaitable["exchange_pb2.Frame | None"]]
WriteFrame = Callable[[exchange_pb2.Frame], Awaitable[None]]

# Chunks queued ahead of the writer: enough to keep the socket busy, little memory.
_DATA_DEPTH = 4
# Complete items queued for validation while the next one is being received.
_VALIDATION_DEPTH = 2
# On abort, how long we try to deliver queued acks before giving up on the stream.
_FLUSH_TIMEOUT_S = 0.5


class SessionAborted(Exception):
    """The exchange cannot go on (peer vanished, protocol violation, deadline)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class OutgoingItem:
    """One encoded item this side offers: its descriptor and the parts whose concatenation
    is the encoded item (codec *_parts), chunked without being joined."""

    descriptor: Descriptor
    parts: Sequence[bytes]

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


def encode_items(items: list[BlockDelta | MaskRecord]) -> list[OutgoingItem]:
    """Encode and checksum offered items; item_id is the position (masks come first)."""
    encoded = []
    for item_id, item in enumerate(items):
        if isinstance(item, MaskRecord):
            parts = encode_mask_parts(item)
            nbytes, digest = sum(map(len, parts)), checksum_parts(parts)
            d = Descriptor(item_id, "mask", item.task, 0, "", item.mask_id, "", nbytes, digest)
        else:
            parts = encode_delta_parts(item)
            v = item.version
            d = Descriptor(
                item_id,
                "delta",
                v.task,
                v.round,
                v.origin,
                item.mask_id,
                item.encoding,
                sum(map(len, parts)),
                checksum_parts(parts),
                incarnation=v.incarnation,
            )
        encoded.append(OutgoingItem(d, parts))
    return encoded


def checked_mask(
    data: bytes, offered: Descriptor, shapes: Mapping[str, tuple[int, int]]
) -> MaskRecord:
    """Everything about a received mask that needs no store: checksum, decoding, layout."""
    check_checksum(data, offered.checksum)
    mask = decode_mask(data)
    validate_mask(mask, offered, shapes)
    return mask


def checked_delta(
    data: bytes,
    offered: Descriptor,
    expectation: Expectation,
    *,
    current_round: int,
    staleness_rounds: int,
    norm_bound: float,
    max_bytes: int,
) -> BlockDelta:
    """Everything about a received block that needs no store: checksum, decoding, checks."""
    check_checksum(data, offered.checksum)
    delta = decode_delta(data)
    validate_delta(
        delta,
        offered,
        expectation,
        current_round=current_round,
        staleness_rounds=staleness_rounds,
        norm_bound=norm_bound,
        max_bytes=max_bytes,
    )
    return delta


class Outbox:
    """The only writer of a stream. Control frames (want, ack) overtake queued chunks."""

    def __init__(
        self, write: WriteFrame, on_written: Callable[[exchange_pb2.Frame, int], None]
    ) -> None:
        self._write = write
        self._on_written = on_written
        self._control: collections.deque[tuple[exchange_pb2.Frame, int]] = collections.deque()
        self._data: collections.deque[tuple[exchange_pb2.Frame, int]] = collections.deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._closing = False
        self.error: BaseException | None = None

    def control(self, frame: exchange_pb2.Frame) -> None:
        self._control.append((frame, frame.ByteSize()))
        self._wake.set()

    async def data(self, frame: exchange_pb2.Frame, size: int) -> None:
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


class ExchangeSession:
    """Runs one exchange over a stream whose handshake already succeeded."""

    def __init__(
        self,
        store: BlockStore,
        peer: PeerContext,
        read: ReadFrame,
        write: WriteFrame,
        limits: WireLimits,
        observer: WireObserver,
        refusal_log: RefusalLog,
        *,
        initiated: bool,
    ) -> None:
        self.store = store
        self.peer = peer
        self.limits = limits
        self.observer = observer
        self.refusal_log = refusal_log
        self.initiated = initiated
        self._read = read
        self._outbox = Outbox(write, self._count_written)
        self._round = store.hello().round
        self._deadline = time.monotonic() + limits.exchange_deadline_s
        # What we send.
        self._outgoing: dict[int, OutgoingItem] = {}
        self._awaiting_ack: set[int] = set()
        self._acked: set[int] = set()
        self._want_seen = False
        self._done_sent = False
        self._sender: asyncio.Task[None] | None = None
        # What we receive.
        self._offer_seen = False
        self._incoming: dict[int, Descriptor] = {}  # wanted, not yet finished
        self._current: tuple[int, Reassembler] | None = None
        self._peer_done = False
        # Complete items waiting for (or in) validation; a small queue bounds the memory.
        self._to_validate: asyncio.Queue[tuple[Descriptor, bytes]] = asyncio.Queue(
            maxsize=_VALIDATION_DEPTH
        )
        self._validating: dict[int, Descriptor] = {}
        # Results.
        self._sent_ok = 0
        self._received_ok = 0
        self._refused_by_peer: Counter[Reason] = Counter()
        self._refused_by_me: Counter[Reason] = Counter()
        self._bytes_sent = 0
        self._bytes_received = 0

    @property
    def peer_id(self) -> str:
        return self.peer.hello.node_id

    # ------------------------------------------------------------ frames out

    def _frame(self, **body: object) -> exchange_pb2.Frame:
        return Frame(round=self._round, **body)  # type: ignore[arg-type]

    def _count_written(self, frame: exchange_pb2.Frame, size: int) -> None:
        self._bytes_sent += size
        self.observer.bytes_moved("delta" if frame.HasField("chunk") else "control", "sent", size)

    def _ack(self, item_id: int, reason: Reason, message: str = "") -> None:
        self._outbox.control(
            self._frame(
                ack=exchange_pb2.Ack(
                    item_id=item_id, reason=reason.to_proto(), message=message[:200]
                )
            )
        )

    def _refuse(self, item_id: int, error: WireError) -> None:
        self._refused_by_me[error.reason] += 1
        self.observer.item_refused(self.peer_id, error.reason, by_me=True)
        self.refusal_log.refused(self.peer_id, error.reason, error.detail)
        self._ack(item_id, error.reason, error.detail)

    # ------------------------------------------------------------ sending side

    async def _prepare_offer(self) -> list[Descriptor]:
        """Encode what the store offers (in a worker thread: big blocks must not stall the
        event loop); masks first so a receiver can check blocks against them."""
        deltas = list(self.store.offer(self.peer))
        masks: list[MaskRecord] = []
        for mask_id in dict.fromkeys(d.mask_id for d in deltas):
            record = self.store.mask(mask_id)
            if record is not None:
                masks.append(record)
        encoded = await asyncio.to_thread(encode_items, [*masks, *deltas])
        for outgoing in encoded:
            self._outgoing[outgoing.descriptor.item_id] = outgoing
        return [o.descriptor for o in encoded]

    def _chunk_frames(self, item: OutgoingItem) -> Iterator[exchange_pb2.Frame]:
        """The frames of one item, built as they are sent (one chunk in memory at a time);
        a test subclass may corrupt or truncate them."""
        total = chunk_count(sum(map(len, item.parts)), self.limits.chunk_bytes)
        for index, part in enumerate(split_parts(item.parts, self.limits.chunk_bytes)):
            frame = Frame(round=self._round)
            # Filling the frame's own sub-message avoids copying a built Chunk into it.
            chunk = frame.chunk
            chunk.item_id = item.descriptor.item_id
            chunk.index = index
            chunk.total = total
            chunk.data = part
            yield frame

    @staticmethod
    def _chunk_size(frame: exchange_pb2.Frame) -> int:
        """The frame's serialised size without ByteSize(), which serialises it once more."""
        chunk = frame.chunk
        nbytes = len(chunk.data)  # a copy too, but a quarter of ByteSize's cost
        return chunk_frame_size(frame.round, chunk.item_id, chunk.index, chunk.total, nbytes)

    async def _send_wanted(self, wanted: list[int]) -> None:
        for item_id in wanted:
            for frame in self._chunk_frames(self._outgoing[item_id]):
                await self._outbox.data(frame, self._chunk_size(frame))
        done = self._frame(done=exchange_pb2.Done(items_sent=len(wanted)))
        await self._outbox.data(done, done.ByteSize())
        self._done_sent = True

    def _on_want(self, want: exchange_pb2.Want) -> None:
        if self._want_seen:
            raise SessionAborted(Reason.PROTOCOL_ERROR, "second want")
        self._want_seen = True
        wanted = list(dict.fromkeys(want.item_ids))
        unknown = [i for i in wanted if i not in self._outgoing]
        if unknown:
            raise SessionAborted(
                Reason.PROTOCOL_ERROR, f"want names items never offered: {unknown[:3]}"
            )
        # Send in offer order (masks first), whatever order the peer listed them in.
        wanted.sort()
        self._awaiting_ack.update(wanted)
        self._sender = asyncio.create_task(self._send_wanted(wanted))

    def _on_ack(self, ack: exchange_pb2.Ack) -> None:
        if ack.item_id not in self._outgoing or ack.item_id in self._acked:
            raise SessionAborted(
                Reason.PROTOCOL_ERROR, f"ack for item {ack.item_id}: never offered or acked twice"
            )
        self._acked.add(ack.item_id)
        self._awaiting_ack.discard(ack.item_id)
        reason = Reason.from_proto(ack.reason)
        if reason is Reason.OK:
            self._sent_ok += 1
        else:
            self._refused_by_peer[reason] += 1
            self.observer.item_refused(self.peer_id, reason, by_me=False)

    # ------------------------------------------------------------ receiving side

    def _on_offer(self, offer: exchange_pb2.Offer) -> None:
        if self._offer_seen:
            raise SessionAborted(Reason.PROTOCOL_ERROR, "second offer")
        self._offer_seen = True
        acceptable: list[Descriptor] = []
        for msg in offer_from_proto(offer):
            try:
                item = descriptor_from_proto(msg)
                check_offered(
                    item,
                    current_round=self._round,
                    staleness_rounds=self.limits.staleness_rounds,
                    max_bytes=self.limits.max_delta_bytes,
                )
            except WireError as err:
                self._refuse(msg.item_id, err)
                continue
            acceptable.append(item)
        by_id = {d.item_id: d for d in acceptable}
        wanted = [i for i in dict.fromkeys(self.store.wants(self.peer, acceptable)) if i in by_id]
        self._incoming = {i: by_id[i] for i in wanted}
        self._outbox.control(self._frame(want=exchange_pb2.Want(item_ids=wanted)))

    def _abandon_current(self, reason: Reason, detail: str) -> None:
        if self._current is not None:
            item_id, _ = self._current
            self._current = None
            self._incoming.pop(item_id, None)
            self._refuse(item_id, WireError(reason, detail))

    def _abandon_incoming(self, reason: Reason, detail: str) -> None:
        """The item in progress, and every wanted one not yet started, will never arrive."""
        self._abandon_current(reason, detail)
        for item_id in list(self._incoming):
            self._incoming.pop(item_id)
            self._refuse(item_id, WireError(Reason.TRUNCATED, "wanted but never sent"))

    async def _on_chunk(self, chunk: exchange_pb2.Chunk, data: bytes) -> None:
        """`data` is chunk.data, read once: each read of a bytes field copies it."""
        if self._current is not None and self._current[0] != chunk.item_id:
            self._abandon_current(
                Reason.TRUNCATED, "next item started before this one was complete"
            )
        if self._current is None:
            descriptor = self._incoming.get(chunk.item_id)
            if descriptor is None:
                return  # not wanted, or already refused: drop (the peer has or will get an ack)
            try:
                assembler = Reassembler(
                    descriptor.nbytes,
                    max_bytes=self.limits.max_delta_bytes,
                    max_chunk_bytes=self.limits.max_message_bytes,
                )
            except WireError as err:
                self._incoming.pop(chunk.item_id)
                self._refuse(chunk.item_id, err)
                return
            self._current = (chunk.item_id, assembler)
        item_id, assembler = self._current
        try:
            complete = assembler.add(chunk.index, chunk.total, data)
        except WireError as err:
            self._current = None
            self._incoming.pop(item_id, None)
            self._refuse(item_id, err)
            return
        if complete:
            self._current = None
            descriptor = self._incoming.pop(item_id)
            self._validating[item_id] = descriptor
            # Bounded queue: reading waits when validation falls behind (back-pressure).
            await self._to_validate.put((descriptor, assembler.result()))

    async def _validate_in_order(self) -> None:
        """Validate completed items one by one, in arrival order, so a mask is taken
        before the blocks laid out under it; reading goes on meanwhile."""
        while True:
            descriptor, data = await self._to_validate.get()
            try:
                await self._accept(descriptor, data)
            finally:
                self._validating.pop(descriptor.item_id, None)
                self._to_validate.task_done()

    async def _accept(self, descriptor: Descriptor, data: bytes) -> None:
        """Checksum, decode and validate (in a worker thread: numpy and hashlib release the
        GIL), then hand to the store on the loop; the store sees nothing that failed."""
        try:
            if descriptor.kind == "mask":
                shapes = self.store.mask_shapes(descriptor.task)
                if shapes is None:
                    raise WireError(
                        Reason.UNKNOWN_TASK, f"task {descriptor.task!r} is not in the federation"
                    )
                mask = await asyncio.to_thread(checked_mask, data, descriptor, shapes)
                verdict = self.store.accept_mask(mask, self.peer)
            else:
                expectation = self.store.expectation(descriptor.task, descriptor.mask_id)
                if isinstance(expectation, Reason):
                    raise WireError(
                        expectation, f"task {descriptor.task!r}, mask {descriptor.mask_id!r}"
                    )
                delta = await asyncio.to_thread(
                    checked_delta,
                    data,
                    descriptor,
                    expectation,
                    current_round=self._round,
                    staleness_rounds=self.limits.staleness_rounds,
                    norm_bound=self.limits.norm_bound,
                    max_bytes=self.limits.max_delta_bytes,
                )
                verdict = self.store.accept_delta(delta, self.peer)
            if verdict is not Reason.OK:
                raise WireError(verdict, "the node's store did not take it")
        except WireError as err:
            self._refuse(descriptor.item_id, err)
            return
        self._received_ok += 1
        self._ack(descriptor.item_id, Reason.OK)

    def _on_done(self) -> None:
        if self._peer_done:
            raise SessionAborted(Reason.PROTOCOL_ERROR, "second done")
        self._peer_done = True
        self._abandon_incoming(Reason.TRUNCATED, "peer finished sending mid-item")

    # ------------------------------------------------------------ the loop

    def _finished(self) -> bool:
        return (
            self._done_sent and self._peer_done and not self._awaiting_ack and not self._validating
        )

    def _count_received(self, kind: ByteKind, size: int) -> None:
        self._bytes_received += size
        self.observer.bytes_moved(kind, "received", size)

    async def _dispatch(self, frame: exchange_pb2.Frame) -> None:
        kind = frame.WhichOneof("body")
        if kind == "chunk":
            chunk = frame.chunk
            data = chunk.data
            self._count_received(
                "delta",
                chunk_frame_size(frame.round, chunk.item_id, chunk.index, chunk.total, len(data)),
            )
            await self._on_chunk(chunk, data)
            return
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

    async def _next_frame(self) -> exchange_pb2.Frame | None:
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
