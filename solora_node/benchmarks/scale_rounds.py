"""Per-node costs of a round as functions of N nodes and T tasks, measured by running them.

N ledgers (federation/ledger.py) behind their BlockStore ports (federation/port.py) exchange
over the simulator's in-memory transport (sim/transport.py) along the planned topology
(federation/topology.py), round after round, exactly as `sim` drives them: every node
publishes its block, one exchange runs along every planned link in both directions, and
the round step's choice of blocks (federation/round.py) is averaged in (marked merged; the
arithmetic does not change what moves). Blocks are synthetic, of the default model's round
shape (30 layers x q_proj/v_proj, rank 8, density 0.1, fp16), counted at their codec size;
a node's block carries its routing codes (3 x 576 fp32) when the daemon's schedule says so
(round_step.CodesSchedule). `cap` is federation.max_foreign_experts (federation/holding.py;
no prompts are served here, so a capped node holds the default tasks). Nothing is computed
by formula: bytes, items and relayed bytes are what the transport moved, foreign-expert
and code-card memory is what each ledger holds.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from solora_node.config import TopologySection
from solora_node.federation import round as round_step
from solora_node.federation.holding import Holding
from solora_node.federation.ledger import Ledger
from solora_node.federation.port import LedgerPort
from solora_node.federation.topology import Member, plan_topology
from solora_node.net.codec import encoded_size
from solora_node.protocol.blocks import BlockVersion
from solora_node.sim.transport import MemoryTransport, Traffic
from solora_node.testing.workload import default_round_layout, random_mask, synthetic_delta

CODE_LAYERS = 3  # routing codes of the default model: 3 q_proj inputs of width 576, fp32
CODE_WIDTH = 576


def _members(nodes: int, tasks: list[str]) -> list[Member]:
    return [Member(f"n{i:05d}", tasks[i % len(tasks)]) for i in range(nodes)]


class PlannedRounds:
    """N ledgers of T tasks behind their ports, linked along the planned topology over the
    in-memory transport; `cap` is federation.max_foreign_experts (None: unlimited)."""

    def __init__(self, nodes: int, task_count: int, layers: int, cap: int | None) -> None:
        topology = TopologySection()
        self.tasks = [f"task{t:02d}" for t in range(task_count)]
        members = _members(nodes, self.tasks)
        self.plan = plan_topology(
            members, self.tasks, topology.max_degree, topology.bridges_per_cluster
        )
        layout = default_round_layout(layers=layers)
        self.masks = {
            task: random_mask(task, layout, 0.1, seed=k) for k, task in enumerate(self.tasks)
        }
        codes = {f"code{i}": (CODE_WIDTH,) for i in range(CODE_LAYERS)}
        self._templates = {
            task: (
                synthetic_delta(mask, round_=0, origin="", seed=1),
                synthetic_delta(mask, round_=0, origin="", seed=1, codes=codes),
            )
            for task, mask in self.masks.items()
        }
        self.ledgers: dict[str, Ledger] = {}
        self._codes: dict[str, round_step.CodesSchedule] = {}
        for m in members:
            holding = Holding(m.task, self.tasks, cap)
            ledger = Ledger(
                m.node_id,
                m.task,
                self.tasks,
                topology.staleness_rounds,
                mask_agreement=False,
                holding=holding,
            )
            ledger.train_under(self.masks[m.task])
            self.ledgers[m.node_id] = ledger
            self._codes[m.node_id] = round_step.CodesSchedule()
        self.transport = MemoryTransport(
            {
                node: LedgerPort(ledger, federation_id="scale", fingerprint="", block_shapes={})
                for node, ledger in self.ledgers.items()
            }
        )
        self._edges = [(a, b) for a, b in self.plan.edges] + [(b, a) for a, b in self.plan.edges]
        self._weights = {node: self.plan.mixing_weights(node) for node in self.ledgers}

    def run_round(self, round_: int) -> Traffic:
        """Publish (codes as the daemon's schedule has them), exchange, average in."""
        for node, ledger in self.ledgers.items():
            plain, with_codes = self._templates[ledger.task]
            block = with_codes if self._codes[node].due(round_) else plain
            version = BlockVersion(task=ledger.task, round=round_, origin=node)
            ledger.publish(dataclasses.replace(block, version=version), self.masks[ledger.task])
        traffic = self.transport.exchange(self._edges)
        for node, ledger in self.ledgers.items():
            ledger.merged(round_step.choose_blocks(ledger, round_, self._weights[node]))
        return traffic


def measure_rounds(
    nodes: int, task_count: int, rounds: int, layers: int, cap: int | None = None
) -> dict[str, Any]:
    """Run `rounds` rounds of N nodes over T tasks; figures per node per round (steady state:
    the second half of the rounds, when every expert has reached every node)."""
    fed = PlannedRounds(nodes, task_count, layers, cap)
    ledgers, plan = fed.ledgers, fed.plan
    measured = Traffic()
    for round_ in range(1, rounds + 1):
        traffic = fed.run_round(round_)
        if round_ > rounds // 2:
            measured.add(traffic)
    counted = rounds - rounds // 2
    per_node: dict[str, list[float]] = {"bytes": [], "items": [], "relayed_bytes": []}
    sent: dict[str, dict[str, int]] = {
        n: {"bytes": 0, "items": 0, "relayed_bytes": 0} for n in ledgers
    }
    for (sender, _), size in measured.per_edge.items():
        sent[sender]["bytes"] += size
    for (sender, _), count in measured.items_per_edge.items():
        sent[sender]["items"] += count
    for (sender, _), size in measured.relayed_per_edge.items():
        sent[sender]["relayed_bytes"] += size
    for figures in sent.values():
        for key, value in figures.items():
            per_node[key].append(value / counted)
    foreign = [_foreign_bytes(ledger) for ledger in ledgers.values()]
    degree = [len(plan.neighbours(node)) for node in ledgers]

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "mean": round(statistics.fmean(values), 1),
            "max": round(max(values), 1),
        }

    return {
        "nodes": nodes,
        "tasks": task_count,
        "cap": cap,
        "block_bytes": _block_bytes(ledgers),
        "links_per_node": spread([float(d) for d in degree]),
        "bytes_sent": spread(per_node["bytes"]),
        "items_sent": spread(per_node["items"]),
        "relayed_bytes": spread(per_node["relayed_bytes"]),
        "foreign_expert_bytes": spread([float(f) for f in foreign]),
        "foreign_experts_held": spread(
            [float(len(led.foreign_blocks())) for led in ledgers.values()]
        ),
        "code_card_bytes": spread(
            [float(sum(c.nbytes for c in led.code_cards().values())) for led in ledgers.values()]
        ),
        # Tasks whose routing codes a node has (its own included): every node should know T.
        "codes_known_min": min(len(led.code_cards()) for led in ledgers.values()),
    }


def _foreign_bytes(ledger: Ledger) -> int:
    return sum(delta.nbytes for delta in ledger.foreign_blocks().values())


def _block_bytes(ledgers: dict[str, Ledger]) -> int:
    """Codec size of one node's last published block (its header names its origin and round)."""
    own = next(iter(ledgers.values())).own
    return encoded_size(own) if own is not None else 0
