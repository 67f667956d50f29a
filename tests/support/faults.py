"""A fault-injecting exchange session: the real protocol with one deliberate flaw.

A broken or hostile peer is the real client (PeerClient + ExchangeSession) with one
fault injected by subclassing the session's sending hooks, never a mock of the
network: what reaches the receiver went through real gRPC and its own validation.
Only delta items are faulted; masks go through intact, so a receiver that lacks the
mask still gets to judge the block.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Iterator

import numpy as np

from solora_node._proto import exchange_pb2
from solora_node.net.codec import checksum
from solora_node.net.frames import serialize_frame
from solora_node.net.session import ExchangeSession, OutgoingItem
from solora_node.protocol.messages import Descriptor

# Padding that makes one whole-item message larger than any max_message_bytes a test sets.
OVERSIZE_PADDING = 1 << 20


class Fault(enum.Enum):
    """What a faulty session does to the delta items it sends."""

    NONE = "send as the protocol says"
    CORRUPT_CHUNK = "flip one byte of the first chunk after the checksum was taken"
    GARBAGE = "offer and send random bytes with a matching checksum"
    INFLATED_SIZE = "declare a size above the receiver's limit"
    OVERSIZED_MESSAGE = "send a whole item as one message above the gRPC message limit"
    DUPLICATE_CHUNK = "send the first chunk twice"
    EARLY_DONE = "send the first chunk, then say done"
    STALL = "send the first chunk, then go quiet"


class FaultySession(ExchangeSession):
    """An ExchangeSession that applies `fault` to every delta it sends."""

    fault: Fault = Fault.NONE
    stall_s: float = 30.0  # STALL: how long to stay quiet (cancelled when the peer gives up)

    async def _prepare_offer(self) -> list[Descriptor]:
        descriptors = await super()._prepare_offer()
        if self.fault not in (Fault.GARBAGE, Fault.INFLATED_SIZE):
            return descriptors
        garbage = np.random.default_rng(0).bytes(3000)
        for item_id, item in list(self._outgoing.items()):
            if item.descriptor.kind != "delta":
                continue
            if self.fault is Fault.GARBAGE:
                d = dataclasses.replace(
                    item.descriptor, nbytes=len(garbage), checksum=checksum(garbage)
                )
                self._outgoing[item_id] = OutgoingItem(d, (garbage,))
            else:
                d = dataclasses.replace(item.descriptor, nbytes=1 << 40)
                self._outgoing[item_id] = OutgoingItem(d, item.parts)
        return [o.descriptor for o in self._outgoing.values()]

    def _chunk_frames(self, item: OutgoingItem) -> Iterator[exchange_pb2.Frame]:
        # Protobuf messages, so that a fault can edit them (the session sends them encoded).
        frames = [
            exchange_pb2.Frame.FromString(serialize_frame(f)) for f in super()._chunk_frames(item)
        ]
        if item.descriptor.kind != "delta":
            return iter(frames)
        if self.fault is Fault.CORRUPT_CHUNK:
            data = bytearray(frames[0].chunk.data)
            data[len(data) // 2] ^= 0xFF
            frames[0].chunk.data = bytes(data)
        elif self.fault is Fault.OVERSIZED_MESSAGE:
            whole = exchange_pb2.Chunk(
                item_id=item.descriptor.item_id,
                index=0,
                total=1,
                data=item.data + b"\0" * OVERSIZE_PADDING,
            )
            frames = [self._frame(chunk=whole)]
        elif self.fault is Fault.DUPLICATE_CHUNK:
            frames = [frames[0], *frames]
        elif self.fault in (Fault.EARLY_DONE, Fault.STALL):
            frames = frames[:1]
        return iter(frames)

    async def _send_wanted(self, wanted: list[int]) -> None:
        if self.fault is not Fault.STALL:
            await super()._send_wanted(wanted)
            return
        for item_id in wanted:
            for frame in self._chunk_frames(self._outgoing[item_id]):
                await self._outbox.data(frame, frame.ByteSize())
        await asyncio.sleep(self.stall_s)


def faulty_session(fault: Fault, stall_s: float = 30.0) -> type[ExchangeSession]:
    """A session class for `PeerClient.session_class` that injects `fault`."""
    return type(
        f"Faulty{fault.name.title()}", (FaultySession,), {"fault": fault, "stall_s": stall_s}
    )


class StallingSession(ExchangeSession):
    """A peer that passed the handshake and then never says anything (a hung process)."""

    async def _exchange(self, writer: asyncio.Task[None]) -> None:
        await asyncio.sleep(3600)
