"""What the transport needs from a node: the `BlockStore` protocol and the plain types it uses.

The gRPC server and client are generic: they ask the store what to say in a
handshake, what to offer, what to want, what a valid block looks like, and
hand it validated blocks. The node daemon implements `BlockStore`;
solora_node.net.memory has an in-memory one for tests and benchmarks.
All methods are called on the asyncio event loop and must return quickly.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from solora_node.adapter.payload import BlockDelta, BlockVersion, MaskRecord
from solora_node.net.limits import PROTOCOL_VERSION
from solora_node.net.reasons import Reason
from solora_node.topology_view import TopologyView

ItemKind = Literal["delta", "mask"]


@dataclass(frozen=True)
class PeerInfo:
    """A node another node can dial (peer exchange, status)."""

    node_id: str
    address: str
    task: str


@dataclass(frozen=True)
class HeldBlock:
    """A block version a node holds, announced in its handshake."""

    version: BlockVersion
    mask_id: str


@dataclass(frozen=True)
class Hello:
    """What a node says about itself in a handshake."""

    federation_id: str
    fingerprint: str
    node_id: str
    task: str
    address: str = ""
    round: int = 0
    held: tuple[HeldBlock, ...] = ()
    peers: tuple[PeerInfo, ...] = ()
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Descriptor:
    """One item a peer offers: enough to decide whether to want it, and to check it."""

    item_id: int
    kind: ItemKind
    task: str
    round: int
    origin: str
    mask_id: str
    encoding: str
    nbytes: int
    sha256: bytes

    @property
    def version(self) -> BlockVersion:
        return BlockVersion(task=self.task, round=self.round, origin=self.origin)


@dataclass(frozen=True)
class Expectation:
    """What a valid block of one task under one mask looks like on this node.

    `layers` maps every adapted layer to the exact shape of its value tensor
    (values under the mask, in mask order); `codes` the routing codes a block may
    carry (absent codes are fine, unknown ones are not).
    """

    layers: Mapping[str, tuple[int, ...]]
    codes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    encodings: frozenset[str] = frozenset({"float32", "bfloat16", "float16", "int8"})


@dataclass(frozen=True)
class ExchangeResult:
    """The outcome of one exchange with one peer, seen from this node."""

    peer: str
    round: int
    reason: Reason  # OK, or why the exchange as a whole failed
    message: str = ""
    items_sent: int = 0  # accepted by the peer
    items_received: int = 0  # accepted by this node
    refused_by_peer: Mapping[Reason, int] = field(default_factory=dict)
    refused_by_me: Mapping[Reason, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    finished_unix: float = 0.0
    duration_s: float = 0.0
    initiated: bool = True  # this node dialled

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK

    @property
    def items_refused(self) -> int:
        return sum(self.refused_by_peer.values()) + sum(self.refused_by_me.values())


@dataclass(frozen=True)
class NeighbourStatus:
    peer: PeerInfo
    state: str = "alive"
    role: str = "cluster"
    last_round: int = 0


@dataclass(frozen=True)
class NodeStatus:
    """What `solora-node status` shows."""

    node_id: str
    task: str
    round: int
    federation_id: str = ""
    cluster: str = ""
    neighbours: tuple[NeighbourStatus, ...] = ()
    last_exchanges: tuple[ExchangeResult, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict)
    protocol_version: int = PROTOCOL_VERSION
    topology: TopologyView | None = None  # the plan in use; None before the first one


@dataclass(frozen=True)
class PeerContext:
    """Who is on the other end of a call: its verified hello and how it was authenticated."""

    hello: Hello
    certified_id: str | None  # CN of its certificate; None on an insecure link
    address: str = ""


class BlockStore(Protocol):
    """The node side of the wire. Implemented by the daemon; see net.memory for a reference."""

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
