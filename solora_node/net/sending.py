"""The sending half of an exchange: encode and offer items, stream the wanted ones as
chunks, count the peer's acks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from solora_node._proto import exchange_pb2
from solora_node.net.chunks import chunk_count, chunk_frame_size, split_views
from solora_node.net.codec import checksum_parts, encode_delta_parts, encode_mask_parts
from solora_node.net.frames import EncodedChunk, OutFrame
from solora_node.net.outbox import SessionAborted
from solora_node.net.session_core import OutgoingItem, SessionCore
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.messages import Descriptor
from solora_node.protocol.reasons import Reason


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


class SendingHalf(SessionCore):
    """Offer, chunks and done out; want and acks in."""

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

    def _chunk_frames(self, item: OutgoingItem) -> Iterator[OutFrame]:
        """The frames of one item, serialised as they are sent (one chunk in memory at a
        time); a test subclass may corrupt or truncate them."""
        total = chunk_count(sum(map(len, item.parts)), self.limits.chunk_bytes)
        item_id = item.descriptor.item_id
        for index, views in enumerate(split_views(item.parts, self.limits.chunk_bytes)):
            yield EncodedChunk.build(self._round, item_id, index, total, views)

    @staticmethod
    def _chunk_size(frame: OutFrame) -> int:
        """The frame's serialised size without ByteSize(), which serialises it once more."""
        if isinstance(frame, EncodedChunk):
            return len(frame.wire)
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
