"""Handshakes, offers, exchange outcomes and node status: what nodes say to each other.

Plain frozen dataclasses that know nothing of gRPC or torch; net/convert.py maps
them to and from the protobuf messages of protos/solora/v1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from solora_node.protocol.blocks import BlockVersion
from solora_node.protocol.reasons import Reason
from solora_node.protocol.topology import TopologyView

# Bumped when a change to protos/solora/v1 breaks older peers; checked in every handshake.
PROTOCOL_VERSION = 2  # 2: item checksums are XXH3-128 instead of SHA-256

ItemKind = Literal["delta", "mask"]


@dataclass(frozen=True)
class PeerAddress:
    """A node another node can dial (peer exchange, status): id, HOST:PORT and task."""

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
    peers: tuple[PeerAddress, ...] = ()
    protocol_version: int = PROTOCOL_VERSION
    incarnation: int = 0  # this process's start (unix µs); see solora_node/node/identity.py


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
    checksum: bytes  # net/codec.py WIRE_CHECKSUM of the encoded item
    incarnation: int = 0

    @property
    def version(self) -> BlockVersion:
        return BlockVersion(
            task=self.task, round=self.round, origin=self.origin, incarnation=self.incarnation
        )


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
    peer: PeerAddress
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
