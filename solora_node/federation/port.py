"""The BlockStore port (net/port.py) over a Ledger: what any transport asks of a node.

The gRPC server and client call it in the daemon; the simulator's in-memory transport
calls the very same methods. Identity, address and the status extras (neighbours,
recent exchanges, details) live here; the block policy lives in the Ledger.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from solora_node.federation.cards import CARD_MASK
from solora_node.federation.ledger import Ledger
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
from solora_node.protocol.topology import TopologyView

RECENT_EXCHANGES = 16  # exchange results kept for `solora-node status`


class LedgerPort:
    """net.port.BlockStore implemented by a Ledger and the shapes of the node's model."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        federation_id: str,
        fingerprint: str,
        block_shapes: Mapping[str, tuple[int, int]],
        code_shapes: Mapping[str, tuple[int, ...]] | None = None,
        address: str = "",
        known_peers: Callable[[], Iterable[PeerAddress]] = tuple,
        on_peer: Callable[[PeerContext], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.federation_id = federation_id
        self.fingerprint = fingerprint
        self._block_shapes = dict(block_shapes)
        self._code_shapes = dict(code_shapes or {})
        self.address = address
        self._known_peers = known_peers
        self._on_peer = on_peer
        self.cluster = ledger.task
        self.neighbours: tuple[NeighbourStatus, ...] = ()
        self.exchanges: collections.deque[ExchangeResult] = collections.deque(
            maxlen=RECENT_EXCHANGES
        )
        self.details: dict[str, str] = {}
        self.topology: TopologyView | None = None  # the plan in use, set by the daemon

    def held_blocks(self) -> tuple[HeldBlock, ...]:
        return tuple(self.ledger.advertised())

    # ------------------------------------------------------------------ BlockStore

    def hello(self) -> Hello:
        ledger = self.ledger
        return Hello(
            federation_id=self.federation_id,
            fingerprint=self.fingerprint,
            node_id=ledger.node_id,
            task=ledger.task,
            address=self.address,
            round=ledger.round,
            held=self.held_blocks(),
            peers=tuple(self._known_peers()),
            incarnation=ledger.incarnation,
        )

    def observe_peer(self, peer: PeerContext) -> None:
        if self._on_peer is not None:
            self._on_peer(peer)

    def offer(self, peer: PeerContext) -> Sequence[BlockDelta]:
        return self.ledger.offer_to(peer.hello.task, peer.hello.held)

    def mask(self, mask_id: str) -> MaskRecord | None:
        return self.ledger.mask(mask_id)

    def wants(self, peer: PeerContext, offered: Sequence[Descriptor]) -> Collection[int]:
        return self.ledger.wants(offered)

    def expectation(self, task: str, mask_id: str) -> Expectation | Reason:
        if task not in self.ledger.tasks:
            return Reason.UNKNOWN_TASK
        if mask_id == CARD_MASK:  # a code card: routing codes, no values
            return Expectation(layers={}, codes=dict(self._code_shapes))
        record = self.ledger.mask(mask_id)
        if record is None or record.task != task:
            return Reason.MASK_UNKNOWN
        return expectation_from_mask(record, codes=self._code_shapes)

    def mask_shapes(self, task: str) -> Mapping[str, tuple[int, int]] | None:
        return self._block_shapes if task in self.ledger.tasks else None

    def accept_mask(self, mask: MaskRecord, peer: PeerContext) -> Reason:
        return self.ledger.accept_mask(mask)

    def accept_delta(self, delta: BlockDelta, peer: PeerContext) -> Reason:
        return self.ledger.accept_delta(delta)

    def status(self) -> NodeStatus:
        ledger = self.ledger
        details = {
            "mask_id": ledger.mask_id or "",
            "blocks_held": str(len(ledger.held())),
            "head": ledger.head or "",
            **self.details,
        }
        return NodeStatus(
            node_id=ledger.node_id,
            task=ledger.task,
            round=ledger.round,
            federation_id=self.federation_id,
            cluster=self.cluster,
            neighbours=self.neighbours,
            last_exchanges=tuple(self.exchanges),
            details=details,
            topology=self.topology,
        )
