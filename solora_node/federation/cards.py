"""Code cards: a task's routing codes without its values, so every node knows every task.

The `auto` gate needs the routing code of every task to route a prompt, also of tasks
whose expert a node does not hold (federation/holding.py): that is how it notices a miss
and comes to want the expert. Codes ride on blocks (federation/round.py, CodesSchedule);
a card is such a block stripped of its values and mask (a few kB). A node keeps one card
per task and offers it to a peer whose Hello lists no card of that task, so each card
crosses each link about once, whatever the cap.
"""

from __future__ import annotations

from solora_node.protocol.blocks import BlockDelta
from solora_node.protocol.messages import HeldBlock

# The mask id of a code card. Real mask ids are hex digests (adapter/masks.py), so this
# one can never name a mask; the codec wants a non-empty id.
CARD_MASK = "~codes"


def is_card(entry: HeldBlock) -> bool:
    """A Hello entry naming a code card (want markers have no origin: holding.py)."""
    return entry.version.origin != "" and entry.mask_id == CARD_MASK


def code_card(delta: BlockDelta) -> BlockDelta:
    """The routing codes of a block, without its values or mask: what every node gets."""
    return BlockDelta(
        version=delta.version,
        mask_id=CARD_MASK,
        encoding=delta.encoding,
        layers={},
        codes=dict(delta.codes),
    )


def is_code_card(delta: BlockDelta) -> bool:
    return delta.mask_id == CARD_MASK and not delta.layers and bool(delta.codes)
