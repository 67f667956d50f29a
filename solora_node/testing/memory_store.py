"""An in-memory BlockStore: the reference store of the wire's tests and of `bench net`.

It keeps every block version it receives and offers every version a peer does
not announce, which is enough to show what the transport does; the daemon's
store adds the method's policy (clusters, staleness, aggregation).
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Mapping, Sequence

from solora_node.net.validate import expectation_from_mask
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.messages import (
    Descriptor,
    ExchangeResult,
    Expectation,
    HeldBlock,
    Hello,
    NeighbourStatus,
    NodeStatus,
    PeerAddress,
    PeerContext,
)
from solora_node.protocol.reasons import Reason
from solora_node.testing.workload import Layout

VersionKey = tuple[str, int, str]  # (task, round, origin)


class InMemoryStore:
    """A BlockStore that keeps everything in dicts."""

    def __init__(
        self,
        *,
        node_id: str,
        task: str,
        layouts: Mapping[str, Layout],
        federation_id: str = "test-federation",
        fingerprint: str = "test-fingerprint",
        address: str = "",
        round_: int = 0,
        codes: Mapping[str, tuple[int, ...]] | None = None,
        required_masks: Mapping[str, str] | None = None,
        take: bool = True,
    ) -> None:
        self.node_id = node_id
        self.task = task
        self.layouts = {t: dict(layout) for t, layout in layouts.items()}
        self.federation_id = federation_id
        self.fingerprint = fingerprint
        self.address = address
        self.round = round_
        self.codes = dict(codes or {})
        # task -> the one mask_id this node accepts blocks under (agreed in its cluster).
        self.required_masks = dict(required_masks or {})
        self.take = take  # False: only give (a benchmark source)
        self.blocks: dict[VersionKey, BlockDelta] = {}
        self.masks: dict[str, MaskRecord] = {}
        self.peers: dict[str, PeerAddress] = {}
        self.exchanges: collections.deque[ExchangeResult] = collections.deque(maxlen=16)
        self.received: list[BlockDelta] = []
        # Counting a mask's bits is not free: once per (task, mask_id).
        self._expectations: dict[tuple[str, str], Expectation] = {}

    # ------------------------------------------------------------ local side

    def add_block(self, delta: BlockDelta) -> None:
        v = delta.version
        self.blocks[(v.task, v.round, v.origin)] = delta

    def add_mask(self, mask: MaskRecord) -> None:
        self.masks[mask.mask_id] = mask

    def record(self, result: ExchangeResult) -> None:
        self.exchanges.append(result)

    # ------------------------------------------------------------ BlockStore

    def hello(self) -> Hello:
        held = tuple(HeldBlock(version=b.version, mask_id=b.mask_id) for b in self.blocks.values())
        return Hello(
            federation_id=self.federation_id,
            fingerprint=self.fingerprint,
            node_id=self.node_id,
            task=self.task,
            address=self.address,
            round=self.round,
            held=held,
            peers=tuple(self.peers.values()),
        )

    def observe_peer(self, peer: PeerContext) -> None:
        h = peer.hello
        self.peers[h.node_id] = PeerAddress(node_id=h.node_id, address=h.address, task=h.task)

    def offer(self, peer: PeerContext) -> Sequence[BlockDelta]:
        theirs = {(h.version.task, h.version.round, h.version.origin) for h in peer.hello.held}
        return [b for key, b in self.blocks.items() if key not in theirs]

    def mask(self, mask_id: str) -> MaskRecord | None:
        return self.masks.get(mask_id)

    def wants(self, peer: PeerContext, offered: Sequence[Descriptor]) -> Collection[int]:
        if not self.take:
            return []
        offered_masks = {d.mask_id for d in offered if d.kind == "mask"}
        wanted = []
        for d in offered:
            if d.task not in self.layouts:
                continue
            if d.kind == "mask":
                if d.mask_id not in self.masks:
                    wanted.append(d.item_id)
            elif (d.task, d.round, d.origin) not in self.blocks and (
                d.mask_id in self.masks or d.mask_id in offered_masks
            ):
                wanted.append(d.item_id)
        return wanted

    def expectation(self, task: str, mask_id: str) -> Expectation | Reason:
        if task not in self.layouts:
            return Reason.UNKNOWN_TASK
        required = self.required_masks.get(task)
        if required is not None and mask_id != required:
            return Reason.MASK_MISMATCH
        cached = self._expectations.get((task, mask_id))
        if cached is not None:
            return cached
        mask = self.masks.get(mask_id)
        if mask is None or mask.task != task:
            return Reason.MASK_UNKNOWN
        expectation = expectation_from_mask(mask, codes=self.codes)
        self._expectations[(task, mask_id)] = expectation
        return expectation

    def mask_shapes(self, task: str) -> Mapping[str, tuple[int, int]] | None:
        return self.layouts.get(task)

    def accept_delta(self, delta: BlockDelta, peer: PeerContext) -> Reason:
        self.add_block(delta)
        self.received.append(delta)
        return Reason.OK

    def accept_mask(self, mask: MaskRecord, peer: PeerContext) -> Reason:
        self.add_mask(mask)
        return Reason.OK

    def status(self) -> NodeStatus:
        return NodeStatus(
            node_id=self.node_id,
            task=self.task,
            round=self.round,
            federation_id=self.federation_id,
            cluster=self.task,
            neighbours=tuple(NeighbourStatus(peer=p) for p in self.peers.values()),
            last_exchanges=tuple(self.exchanges),
            details={"blocks": str(len(self.blocks)), "masks": str(len(self.masks))},
        )
