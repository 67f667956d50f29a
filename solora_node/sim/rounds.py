"""The simulator's federation: one Ledger per device, the in-memory transport, and the
daemon's round step (federation.round) driving whichever strategy is being measured.

A round is the daemon's: train -> publish -> exchange -> aggregate. Before the first
one, strategies with mask agreement go through the daemon's agreement: every device
has warmed up, each cluster head calibrates and publishes, one exchange carries the
head's block and mask, and the members adopt it (the bytes count toward round 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from solora_node.config import TopologySection
from solora_node.data.examples import TaskData
from solora_node.federation import round as round_step
from solora_node.federation.aggregate import AggregationRule, Block
from solora_node.federation.ledger import Ledger
from solora_node.federation.port import LedgerPort
from solora_node.federation.topology import Member, election_order
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.sim.config import SimConfig
from solora_node.sim.poison import poison_block
from solora_node.sim.strategy import Strategy, block_distance
from solora_node.sim.topology import SimTopology
from solora_node.sim.transport import MemoryTransport, Traffic
from solora_node.train.evaluate import MergedEval as DeviceEval

# Rounds here are synchronous, so nothing is ever late; the daemon's default bound
# keeps the ledgers' rules identical to a node's.
STALENESS_ROUNDS = TopologySection().staleness_rounds


@dataclass
class RoundResult:
    losses: list[float]
    traffic: Traffic = field(default_factory=Traffic)


class DeviceParticipant:
    """federation.round.Participant for device i; a poisoner's blocks arrive poisoned."""

    def __init__(self, sim: SimFederation, i: int) -> None:
        self.strategy = sim.strategy
        self.config = sim.config
        self.i = i

    def adopt_mask(self, record: MaskRecord) -> None:
        self.strategy.adopt_mask(self.i, record)

    def own_block(self) -> Block:
        return self.strategy.own_block(self.i)

    def set_own_block(self, block: Block) -> None:
        self.strategy.set_own_block(self.i, block)

    def dense(self, delta: BlockDelta) -> Block:
        block = self.strategy.dense(delta, self.i)
        origin = self.strategy.index(delta.version.origin)
        c = self.config
        if origin not in c.poisoners:
            return block
        seed = c.seed * 1_000_003 + delta.version.round * 1009 + origin
        return poison_block(block, c.poison, c.poison_scale, seed)


class SimFederation:
    """Every device of one method run: its ledger, its port, its mixing weights."""

    def __init__(self, strategy: Strategy, topology: SimTopology, config: SimConfig) -> None:
        self.strategy = strategy
        self.config = config
        devices = strategy.devices
        labels = [strategy.label(d) for d in devices]
        self.ledgers = [
            Ledger(
                d.node_id,
                labels[d.index],
                set(labels),
                STALENESS_ROUNDS,
                mask_agreement=strategy.mask_agreement,
            )
            for d in devices
        ]
        for label in dict.fromkeys(labels):
            members = [Member(d.node_id, label) for d in devices if labels[d.index] == label]
            head = election_order(members)[0]
            for d in devices:
                if labels[d.index] == label:
                    self.ledgers[d.index].set_head(head)
        self.transport = MemoryTransport(
            {
                ledger.node_id: LedgerPort(
                    ledger, federation_id="sim", fingerprint="", block_shapes={}
                )
                for ledger in self.ledgers
            }
        )
        mixing = topology.cluster_mixing() if strategy.same_task_gossip else topology.all_mixing()
        self.weights = [
            {devices[j].node_id: float(w) for j, w in enumerate(mixing[i]) if j != i and w > 0}
            for i in range(len(devices))
        ]
        self.edges = [
            (devices[i].node_id, devices[j].node_id)
            for i in range(len(devices))
            for j in topology.neighbours(i)
        ]
        self.rule = AggregationRule(
            config.aggregation,  # type: ignore[arg-type]  # checked by SimConfig.check
            config.trim_fraction,
            config.clip_norm or None,
        )
        self.traffic = Traffic()  # the whole run
        self._pending = Traffic()  # agreement exchange, counted toward round 1
        self._codes = [round_step.CodesSchedule() for _ in devices]
        # L2 distance of every averaged-in neighbour block to the receiver's own block
        # (what clip_norm bounds), so a clean run tells an operator where to clip.
        self.neighbour_distances: list[float] = []

    def start(self) -> None:
        self.strategy.setup()
        if self.strategy.communicates and self.strategy.mask_agreement:
            self._agree_masks()

    def _agree_masks(self) -> None:
        heads = [i for i, ledger in enumerate(self.ledgers) if ledger.head == ledger.node_id]
        for i in heads:
            self._settle_mask(i)
        self._pending.add(self.transport.exchange(self.edges))
        for i in range(len(self.ledgers)):
            if i not in heads:
                self._settle_mask(i)

    def _settle_mask(self, i: int) -> None:
        """The daemon's rule: adopt the cluster's mask if one arrived, else calibrate."""
        ledger = self.ledgers[i]
        candidate = round_step.cluster_mask(ledger)
        if candidate is not None:
            self.strategy.adopt_mask(i, candidate)
            ledger.train_under(candidate)
        else:
            ledger.train_under(self.strategy.calibrate(i))
        self._publish(i, ledger.round, settling=True)

    def _publish(self, i: int, round_: int, *, settling: bool = False) -> None:
        with_codes = self._codes[i].due(round_, settling=settling)
        delta = self.strategy.publish(i, round_, with_codes=with_codes)
        record = self.strategy.mask(i)
        if record is not None:
            self.ledgers[i].train_under(record)
        self.ledgers[i].publish(delta, record)

    def run_round(self, round_: int) -> RoundResult:
        result = RoundResult([])
        for i in range(len(self.ledgers)):
            result.losses += self.strategy.train_device(i)
        if not self.strategy.communicates:
            return result
        result.traffic.add(self._pending)
        self._pending = Traffic()
        for i in range(len(self.ledgers)):
            self._publish(i, round_)
        result.traffic.add(self.transport.exchange(self.edges))
        for i, ledger in enumerate(self.ledgers):
            outcome = round_step.aggregate_round(
                ledger, DeviceParticipant(self, i), round_, self.weights[i], self.rule
            )
            if outcome.own is not None:
                own = outcome.own
                self.neighbour_distances += [block_distance(b, own) for b in outcome.theirs]
        self.traffic.add(result.traffic)
        return result

    def evaluate(self, i: int, evals: Mapping[str, TaskData]) -> DeviceEval:
        return self.strategy.evaluate_device(i, self.ledgers[i].foreign_blocks(), evals)
