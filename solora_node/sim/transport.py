"""An in-memory transport between simulated devices: the same BlockStore port as gRPC.

Each directed edge is one offer -> want -> accept pass through the ports, exactly the
calls a gRPC session makes (handshake hello, offer, the mask records the offered blocks
need, wants, accept). Items are handed over as objects (no validation: they never left
this process) and counted at their codec size, so the bytes are what the wire would
carry in chunk payloads. Offers are taken from every device's state when the exchange
begins, as when the daemon's exchanges all run at once.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from solora_node.net.port import BlockStore
from solora_node.net.session import encode_items
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.messages import Descriptor, PeerContext
from solora_node.protocol.reasons import Reason

Item = BlockDelta | MaskRecord


@dataclass
class Traffic:
    """What one or more exchanges moved (sender side), and how receivers answered."""

    bytes: int = 0
    messages: int = 0  # blocks sent
    masks: int = 0  # mask records sent
    mask_bytes: int = 0
    refused: collections.Counter[Reason] = field(default_factory=collections.Counter)
    per_edge: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # Items (blocks and masks) per edge, and bytes of blocks a sender relayed (not its own).
    items_per_edge: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter
    )
    relayed_per_edge: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter
    )

    def add(self, other: Traffic) -> None:
        self.bytes += other.bytes
        self.messages += other.messages
        self.masks += other.masks
        self.mask_bytes += other.mask_bytes
        self.refused.update(other.refused)
        self.per_edge.update(other.per_edge)
        self.items_per_edge.update(other.items_per_edge)
        self.relayed_per_edge.update(other.relayed_per_edge)


@dataclass(frozen=True)
class _Offer:
    sender: str
    receiver: str
    sender_ctx: PeerContext
    items: tuple[Item, ...]
    descriptors: tuple[Descriptor, ...]


class MemoryTransport:
    """Exchanges between the ports of one simulated federation, by node id."""

    def __init__(self, ports: Mapping[str, BlockStore]) -> None:
        self.ports = dict(ports)
        self._encoded: dict[int, tuple[Item, Descriptor]] = {}

    def _descriptor(self, item: Item, item_id: int) -> Descriptor:
        """The item's descriptor as the gRPC session builds it (encoded once per object)."""
        cached = self._encoded.get(id(item))
        if cached is None or cached[0] is not item:
            cached = (item, encode_items([item])[0].descriptor)
            self._encoded[id(item)] = cached
        return dataclasses.replace(cached[1], item_id=item_id)

    def _offer(self, sender: str, receiver: str) -> _Offer:
        source, target = self.ports[sender], self.ports[receiver]
        deltas = list(source.offer(PeerContext(target.hello(), certified_id=None)))
        masks = [
            record
            for mask_id in dict.fromkeys(d.mask_id for d in deltas)
            if (record := source.mask(mask_id)) is not None
        ]
        items: tuple[Item, ...] = (*masks, *deltas)  # masks first, as on the wire
        return _Offer(
            sender,
            receiver,
            PeerContext(source.hello(), certified_id=None),
            items,
            tuple(self._descriptor(item, k) for k, item in enumerate(items)),
        )

    def exchange(self, edges: Iterable[tuple[str, str]]) -> Traffic:
        """One exchange along every directed (sender, receiver) edge."""
        offers = [self._offer(sender, receiver) for sender, receiver in edges]
        traffic = Traffic()
        for offer in offers:
            self._deliver(offer, traffic)
        self._encoded.clear()  # old snapshots are never offered again
        return traffic

    def _deliver(self, offer: _Offer, traffic: Traffic) -> None:
        target = self.ports[offer.receiver]
        wanted = target.wants(offer.sender_ctx, offer.descriptors)
        for item_id in _valid(wanted, len(offer.items)):
            item, size = offer.items[item_id], offer.descriptors[item_id].nbytes
            traffic.bytes += size
            edge = (offer.sender, offer.receiver)
            traffic.per_edge[edge] += size
            traffic.items_per_edge[edge] += 1
            if isinstance(item, MaskRecord):
                traffic.masks += 1
                traffic.mask_bytes += size
                verdict = target.accept_mask(item, offer.sender_ctx)
            else:
                traffic.messages += 1
                if item.version.origin != offer.sender:
                    traffic.relayed_per_edge[edge] += size
                verdict = target.accept_delta(item, offer.sender_ctx)
            if verdict is not Reason.OK:
                traffic.refused[verdict] += 1


def _valid(wanted: Iterable[int], count: int) -> Sequence[int]:
    """Wanted item ids in the receiver's order, once each, ignoring ids never offered."""
    return [i for i in dict.fromkeys(wanted) if 0 <= i < count]
