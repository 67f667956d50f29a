"""Plain dataclasses (protocol/) <-> protobuf messages; the only module that maps them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from solora_node._proto import common_pb2, exchange_pb2, handshake_pb2, payload_pb2, status_pb2
from solora_node.net.codec import dtype_from_proto, dtype_to_proto
from solora_node.net.limits import MAX_ITEMS_PER_OFFER, MAX_NAME_CHARS
from solora_node.protocol.blocks import BlockVersion
from solora_node.protocol.messages import (
    Descriptor,
    ExchangeResult,
    HeldBlock,
    Hello,
    NeighbourStatus,
    NodeStatus,
    PeerAddress,
)
from solora_node.protocol.reasons import Reason, WireError
from solora_node.protocol.topology import view_from_proto, view_to_proto

# A hello is untrusted input too: bound the lists a peer can make us keep.
MAX_HELD = 4096
MAX_KNOWN_PEERS = 1024

_KIND_TO_PROTO = {"delta": payload_pb2.DELTA, "mask": payload_pb2.MASK}


def _short(text: str, what: str) -> str:
    if len(text) > MAX_NAME_CHARS:
        raise WireError(Reason.PROTOCOL_ERROR, f"{what} longer than {MAX_NAME_CHARS} characters")
    return text


def peer_to_proto(peer: PeerAddress) -> common_pb2.PeerInfo:
    return common_pb2.PeerInfo(node_id=peer.node_id, address=peer.address, task=peer.task)


def peer_from_proto(msg: common_pb2.PeerInfo) -> PeerAddress:
    return PeerAddress(
        node_id=_short(msg.node_id, "peer node_id"),
        address=_short(msg.address, "peer address"),
        task=_short(msg.task, "peer task"),
    )


def hello_to_proto(hello: Hello) -> handshake_pb2.Hello:
    msg = handshake_pb2.Hello(
        protocol_version=hello.protocol_version,
        federation_id=hello.federation_id,
        projection_fingerprint=hello.fingerprint,
        node_id=hello.node_id,
        task=hello.task,
        advertised_address=hello.address,
        round=hello.round,
        incarnation=hello.incarnation,
    )
    for held in hello.held:
        msg.held.add(
            task=held.version.task,
            round=held.version.round,
            origin=held.version.origin,
            mask_id=held.mask_id,
            incarnation=held.version.incarnation,
        )
    msg.known_peers.extend(peer_to_proto(p) for p in hello.peers)
    return msg


def hello_from_proto(msg: handshake_pb2.Hello) -> Hello:
    if len(msg.held) > MAX_HELD or len(msg.known_peers) > MAX_KNOWN_PEERS:
        raise WireError(Reason.PROTOCOL_ERROR, "hello lists too many blocks or peers")
    held = tuple(
        HeldBlock(
            version=BlockVersion(
                task=_short(h.task, "task"),
                round=h.round,
                origin=_short(h.origin, "origin"),
                incarnation=h.incarnation,
            ),
            mask_id=_short(h.mask_id, "mask_id"),
        )
        for h in msg.held
    )
    return Hello(
        protocol_version=msg.protocol_version,
        federation_id=_short(msg.federation_id, "federation_id"),
        fingerprint=_short(msg.projection_fingerprint, "fingerprint"),
        node_id=_short(msg.node_id, "node_id"),
        task=_short(msg.task, "task"),
        address=_short(msg.advertised_address, "address"),
        round=msg.round,
        held=held,
        peers=tuple(peer_from_proto(p) for p in msg.known_peers),
        incarnation=msg.incarnation,
    )


def descriptor_to_proto(item: Descriptor) -> exchange_pb2.Descriptor:
    msg = exchange_pb2.Descriptor(
        item_id=item.item_id,
        kind=_KIND_TO_PROTO[item.kind],
        nbytes=item.nbytes,
        checksum=item.checksum,
    )
    if item.kind == "delta":
        msg.encoding = dtype_to_proto(item.encoding)
    msg.version.task = item.task
    msg.version.round = item.round
    msg.version.origin = item.origin
    msg.version.mask_id = item.mask_id
    msg.version.incarnation = item.incarnation
    return msg


def descriptor_from_proto(msg: exchange_pb2.Descriptor) -> Descriptor:
    if msg.kind == payload_pb2.DELTA:
        kind: str = "delta"
        encoding = dtype_from_proto(msg.encoding)
    elif msg.kind == payload_pb2.MASK:
        kind, encoding = "mask", ""
    else:
        raise WireError(Reason.MALFORMED, f"unknown item kind {msg.kind}")
    v = msg.version
    return Descriptor(
        item_id=msg.item_id,
        kind=kind,  # type: ignore[arg-type]
        task=_short(v.task, "task"),
        round=v.round,
        origin=_short(v.origin, "origin"),
        mask_id=_short(v.mask_id, "mask_id"),
        encoding=encoding,
        nbytes=msg.nbytes,
        checksum=bytes(msg.checksum),
        incarnation=v.incarnation,
    )


def offer_from_proto(msg: exchange_pb2.Offer) -> list[exchange_pb2.Descriptor]:
    if len(msg.items) > MAX_ITEMS_PER_OFFER:
        raise WireError(
            Reason.PROTOCOL_ERROR, f"offer of {len(msg.items)} items (max {MAX_ITEMS_PER_OFFER})"
        )
    ids = [d.item_id for d in msg.items]
    if len(set(ids)) != len(ids):
        raise WireError(Reason.PROTOCOL_ERROR, "offer repeats an item_id")
    return list(msg.items)


def _counts_to_proto(counts: Mapping[Reason, int]) -> list[status_pb2.ReasonCount]:
    return [status_pb2.ReasonCount(reason=r.to_proto(), count=n) for r, n in sorted(counts.items())]


def _counts_from_proto(msgs: Iterable[status_pb2.ReasonCount]) -> dict[Reason, int]:
    counts: Counter[Reason] = Counter()
    for m in msgs:
        counts[Reason.from_proto(m.reason)] += m.count
    return dict(counts)


def result_to_proto(result: ExchangeResult) -> status_pb2.ExchangeReport:
    return status_pb2.ExchangeReport(
        peer=result.peer,
        round=result.round,
        reason=result.reason.to_proto(),
        items_sent=result.items_sent,
        items_received=result.items_received,
        refused_by_peer=_counts_to_proto(result.refused_by_peer),
        refused_by_me=_counts_to_proto(result.refused_by_me),
        message=result.message,
        initiated=result.initiated,
        bytes_sent=result.bytes_sent,
        bytes_received=result.bytes_received,
        finished_unix=result.finished_unix,
        duration_s=result.duration_s,
    )


def result_from_proto(msg: status_pb2.ExchangeReport) -> ExchangeResult:
    return ExchangeResult(
        peer=msg.peer,
        round=msg.round,
        reason=Reason.from_proto(msg.reason),
        items_sent=msg.items_sent,
        items_received=msg.items_received,
        refused_by_peer=_counts_from_proto(msg.refused_by_peer),
        refused_by_me=_counts_from_proto(msg.refused_by_me),
        message=msg.message,
        initiated=msg.initiated,
        bytes_sent=msg.bytes_sent,
        bytes_received=msg.bytes_received,
        finished_unix=msg.finished_unix,
        duration_s=msg.duration_s,
    )


def status_to_proto(status: NodeStatus) -> status_pb2.StatusReply:
    msg = status_pb2.StatusReply(
        protocol_version=status.protocol_version,
        federation_id=status.federation_id,
        node_id=status.node_id,
        task=status.task,
        round=status.round,
        cluster=status.cluster,
    )
    for n in status.neighbours:
        msg.neighbours.add(
            peer=peer_to_proto(n.peer), state=n.state, role=n.role, last_round=n.last_round
        )
    msg.last_exchanges.extend(result_to_proto(r) for r in status.last_exchanges)
    msg.details.update(status.details)
    if status.topology is not None:
        msg.topology.CopyFrom(view_to_proto(status.topology))
    return msg


def status_from_proto(msg: status_pb2.StatusReply) -> NodeStatus:
    return NodeStatus(
        protocol_version=msg.protocol_version,
        federation_id=msg.federation_id,
        node_id=msg.node_id,
        task=msg.task,
        round=msg.round,
        cluster=msg.cluster,
        neighbours=tuple(
            NeighbourStatus(
                peer=peer_from_proto(n.peer), state=n.state, role=n.role, last_round=n.last_round
            )
            for n in msg.neighbours
        ),
        last_exchanges=tuple(result_from_proto(r) for r in msg.last_exchanges),
        details=dict(msg.details),
        topology=view_from_proto(msg.topology) if msg.HasField("topology") else None,
    )
