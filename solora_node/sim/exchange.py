"""One round's exchange between simulated devices, with the daemon's offer/accept rules.

Offers are made from the state every device had when the round's exchange began (all
exchanges run at once in the daemon); each receiver takes a block version at most once.
- a block of the receiver's own label (same task, or everyone's shared adapter for the
  dense baselines) is taken when its origin is not the receiver; it is averaged in only
  when the origin is a gossip neighbour (the aggregation step decides);
- a block of another label (a foreign expert) is taken when it is fresher than the one
  held: later round, then lower origin id (book._newer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord
from solora_node.sim.wire import WireCounter


def newer(a: BlockVersion, b: BlockVersion | None) -> bool:
    if b is None:
        return True
    return (a.round, tuple(-ord(c) for c in a.origin)) > (
        b.round,
        tuple(-ord(c) for c in b.origin),
    )


@dataclass
class Mailbox:
    """What one device holds from others, besides its own trained state."""

    node_id: str
    label: str  # the block task this device trains
    own: BlockDelta | None = None  # this round's published snapshot
    inbox: dict[str, BlockDelta] = field(default_factory=dict)  # origin -> same-label block
    foreign: dict[str, BlockDelta] = field(default_factory=dict)  # label -> freshest block
    masks: set[str] = field(default_factory=set)  # mask ids it has a record of
    codes_from: set[str] = field(default_factory=set)  # origins whose routing codes it has


# (delta, receiver) -> mask record that must ride along, or None
MaskNeed = Callable[[BlockDelta, Mailbox], MaskRecord | None]
# (sender's delta, receiver) -> the delta actually sent (e.g. without codes already known)
Shaper = Callable[[BlockDelta, Mailbox], BlockDelta]


def exchange(
    boxes: Sequence[Mailbox],
    neighbours: Callable[[int], Sequence[int]],
    wire: WireCounter,
    mask_need: MaskNeed,
    shape: Shaper,
) -> int:
    """Deliver every offer along every directed edge; returns the bytes of this exchange."""
    offers = [[b for b in (box.own, *box.foreign.values()) if b is not None] for box in boxes]
    sent = 0
    for i in range(len(boxes)):
        for j in neighbours(i):
            receiver = boxes[j]
            for delta in offers[i]:
                if delta.task == receiver.label:
                    held = receiver.inbox.get(delta.version.origin)
                    if delta.version.origin == receiver.node_id or (
                        held is not None and held.version == delta.version
                    ):
                        continue
                else:
                    held = receiver.foreign.get(delta.task)
                    if not newer(delta.version, held.version if held else None):
                        continue
                message = shape(delta, receiver)
                sent += wire.send(message, mask_need(delta, receiver))
                receiver.masks.add(delta.mask_id)
                if message.codes:
                    receiver.codes_from.add(delta.version.origin)
                if delta.task == receiver.label:
                    receiver.inbox[delta.version.origin] = delta
                else:
                    receiver.foreign[delta.task] = delta
    return sent
