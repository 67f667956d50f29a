"""The port between transport and node: the `BlockStore` protocol the gRPC server and client call.

The gRPC server and client are generic: they ask the store what to say in a
handshake, what to offer, what to want, what a valid block looks like, and
hand it validated blocks. The node daemon implements `BlockStore`; the tests
have an in-memory one (tests/support/memory_store.py).
All methods are called on the asyncio event loop and must return quickly.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.messages import Descriptor, Expectation, Hello, NodeStatus, PeerContext
from solora_node.protocol.reasons import Reason


class BlockStore(Protocol):
    """The node side of the wire. Implemented by the daemon and by test doubles."""

    def hello(self) -> Hello:
        """This node's handshake: identity, round, held versions, known peers."""
        ...

    def observe_peer(self, peer: PeerContext) -> None:
        """Called with every accepted peer hello, in both directions (peer exchange, liveness)."""
        ...

    def offer(self, peer: PeerContext) -> Sequence[BlockDelta]:
        """Blocks this node would send to that peer now (its held versions are in peer.hello)."""
        ...

    def mask(self, mask_id: str) -> MaskRecord | None:
        """The mask record to send along with offered blocks, if this node has it."""
        ...

    def wants(self, peer: PeerContext, offered: Sequence[Descriptor]) -> Collection[int]:
        """item_ids of the offered items this node lacks and would take (masks included)."""
        ...

    def expectation(self, task: str, mask_id: str) -> Expectation | Reason:
        """Shapes for a block of `task` under `mask_id`, or why such a block is refused
        (UNKNOWN_TASK, MASK_MISMATCH, MASK_UNKNOWN)."""
        ...

    def mask_shapes(self, task: str) -> Mapping[str, tuple[int, int]] | None:
        """Per layer, the dense (d_out, r) shape a mask of `task` covers; None if unknown task."""
        ...

    def accept_delta(self, delta: BlockDelta, peer: PeerContext) -> Reason:
        """Take a validated block (OK) or refuse it by policy (REFUSED_BY_STORE, ...)."""
        ...

    def accept_mask(self, mask: MaskRecord, peer: PeerContext) -> Reason:
        """Take a validated mask record."""
        ...

    def status(self) -> NodeStatus: ...
