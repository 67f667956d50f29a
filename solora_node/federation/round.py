"""The round step both the daemon and the simulator run: mask agreement, which blocks to
aggregate, and the aggregation itself (docs/node.md).

A round is train -> publish -> exchange -> aggregate. Training and the exchange belong
to the caller (a learner and gRPC in the daemon, strategies and an in-memory transport
in the simulator); what happens to the ledger around them is decided here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from solora_node.federation.aggregate import AggregationRule, Block, aggregate_blocks
from solora_node.federation.graph import consensus_distance
from solora_node.federation.ledger import Ledger
from solora_node.protocol.blocks import BlockDelta, MaskRecord

# Routing codes come from local data and barely change: ~7 kB that would ride on every
# ~40 kB block. Sent with the first block and then every CODES_EVERY rounds, which is
# enough for late joiners and relays to pick them up.
CODES_EVERY = 10


class Participant(Protocol):
    """The model side of one node, as the round step needs it."""

    def adopt_mask(self, record: MaskRecord) -> None:
        """Train under `record` from now on (entries off it are dropped)."""
        ...

    def own_block(self) -> Block:
        """This node's own-task block, dense per layer."""
        ...

    def set_own_block(self, block: Block) -> None: ...

    def dense(self, delta: BlockDelta) -> Block:
        """A neighbour's own-task block as dense tensors in `own_block`'s layout."""
        ...


@dataclass(frozen=True)
class Aggregated:
    """What one aggregation did: the mask adopted, who was averaged in, how far apart."""

    adopted: MaskRecord | None = None
    peers: tuple[str, ...] = ()
    own: Block | None = None  # own block before the step
    theirs: tuple[Block, ...] = ()
    distance: float = 0.0  # consensus distance of the blocks that took part


def next_round(ledger: Ledger) -> int:
    """The round to enter: one past ours, or the cluster's if it is ahead (a node that
    restarted or joined late jumps, so its blocks are not refused as stale)."""
    return max(ledger.round + 1, ledger.highest_peer_round())


class CodesSchedule:
    """Which of a node's published blocks carry its routing codes: the one published when
    its mask is settled (it may never be sent if nobody asks before the next round), the
    first of the round loop, then one every CODES_EVERY rounds."""

    def __init__(self) -> None:
        self._last: int | None = None

    def due(self, round_: int, *, settling: bool = False) -> bool:
        if settling:
            return True
        if self._last is None or round_ - self._last >= CODES_EVERY:
            self._last = round_
            return True
        return False


def cluster_mask(ledger: Ledger) -> MaskRecord | None:
    """After warm-up: the mask to adopt (the cluster already trains under it), or None,
    in which case the node calibrates its own."""
    return ledger.cluster_mask_candidate()


def choose_blocks(
    ledger: Ledger, round_: int, weights: Mapping[str, float]
) -> dict[str, BlockDelta]:
    """The neighbours' blocks to average in this round: fresh, under the agreed mask,
    from a gossip neighbour (a positive mixing weight), by origin id."""
    fresh = ledger.fresh_cluster_blocks(round_)
    return {
        origin: fresh[origin]
        for origin in sorted(fresh)
        if origin != ledger.node_id and weights.get(origin, 0.0) > 0
    }


def aggregate_round(
    ledger: Ledger,
    participant: Participant,
    round_: int,
    weights: Mapping[str, float],
    rule: AggregationRule,
) -> Aggregated:
    """Adopt the head's pending mask, then Metropolis-average (or the robust rule) the
    chosen neighbour blocks into own; each neighbour block is averaged in once."""
    adopted = ledger.take_pending_mask()
    if adopted is not None:
        participant.adopt_mask(adopted)
        ledger.train_under(adopted)
    chosen = choose_blocks(ledger, round_, weights)
    if not chosen:
        return Aggregated(adopted=adopted)
    own = participant.own_block()
    theirs = tuple(participant.dense(delta) for delta in chosen.values())
    merged = aggregate_blocks(
        own,
        theirs,
        [weights[origin] for origin in chosen],
        rule=rule.rule,
        trim_fraction=rule.trim_fraction,
        clip_norm=rule.clip_norm,
    )
    participant.set_own_block(merged)
    ledger.merged(chosen)
    return Aggregated(
        adopted=adopted,
        peers=tuple(chosen),
        own=own,
        theirs=theirs,
        distance=float(consensus_distance([own, *theirs])),
    )
