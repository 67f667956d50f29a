"""The receiving half of an exchange: answer the offer with a want, reassemble chunks,
validate complete items in arrival order off the event loop, ack each one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from solora_node._proto import exchange_pb2
from solora_node.net.chunks import Reassembler
from solora_node.net.codec import decode_delta, decode_mask
from solora_node.net.convert import descriptor_from_proto, offer_from_proto
from solora_node.net.frames import ChunkFrame
from solora_node.net.outbox import SessionAborted
from solora_node.net.session_core import SessionCore
from solora_node.net.validate import check_checksum, check_offered, validate_delta, validate_mask
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.messages import Descriptor, Expectation
from solora_node.protocol.reasons import Reason, WireError


def checked_mask(
    data: Sequence[memoryview], offered: Descriptor, shapes: Mapping[str, tuple[int, int]]
) -> MaskRecord:
    """Everything about a received mask that needs no store: checksum, decoding, layout."""
    check_checksum(data, offered.checksum)
    mask = decode_mask(data)
    validate_mask(mask, offered, shapes)
    return mask


def checked_delta(
    data: Sequence[memoryview],
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


class ReceivingHalf(SessionCore):
    """Offer, chunks and done in; want and acks out."""

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

    async def _on_chunk(self, chunk: ChunkFrame) -> None:
        """`chunk.data` is a view of the received message (net/frames.py): kept, not copied,
        until the complete item is decoded."""
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
            complete = assembler.add(chunk.index, chunk.total, chunk.data)
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
            await self._to_validate.put((descriptor, assembler.parts()))

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

    async def _accept(self, descriptor: Descriptor, data: Sequence[memoryview]) -> None:
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
