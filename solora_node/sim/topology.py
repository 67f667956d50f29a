"""The device graph of an experiment and the two mixing rules the methods use.

Same-task gossip (solora, hard_moe) follows the daemon: Metropolis weights over the
same-task edges only, i.e. the cluster's graph. Dense baselines (lora, lori) average with
every neighbour: Metropolis weights over the whole graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from solora_node.federation.graph import (
    Graph,
    complete_graph,
    consensus_distance,
    metropolis_weights,
    random_geometric_topology,
    ring_graph,
    spectral_gap,
)
from solora_node.federation.topology import Member, plan_topology
from solora_node.sim.config import SimConfig
from solora_node.sim.devices import Device


@dataclass(frozen=True)
class SimTopology:
    kind: str
    graph: Graph
    tasks: tuple[str, ...]  # task of each device, by index
    positions: np.ndarray | None = None  # random geometric points, for the plot

    def neighbours(self, i: int) -> tuple[int, ...]:
        return self.graph.neighbours(i)

    def same_task_graph(self) -> Graph:
        edges = [(i, j) for i, j in self.graph.edges if self.tasks[i] == self.tasks[j]]
        return Graph.from_edges(self.graph.n, edges)

    def all_mixing(self) -> np.ndarray:
        return metropolis_weights(self.graph)

    def cluster_mixing(self) -> np.ndarray:
        return metropolis_weights(self.same_task_graph())

    def edge_count(self) -> int:
        return len(self.graph.edges)

    def cluster_stats(self) -> dict[str, dict[str, float]]:
        """Per task: size, same-task edges and the spectral gap of its Metropolis matrix."""
        same = self.same_task_graph()
        stats: dict[str, dict[str, float]] = {}
        for task in dict.fromkeys(self.tasks):
            members = [i for i, t in enumerate(self.tasks) if t == task]
            sub = same.subgraph(members)
            stats[task] = {
                "size": len(members),
                "edges": len(sub.edges),
                "spectral_gap": spectral_gap(metropolis_weights(sub)),
            }
        return stats


def _random_geometric(n: int, radius: float, seed: int) -> tuple[Graph, np.ndarray]:
    graph = random_geometric_topology(n, radius, seed, require_connected=True)
    # Same seeded draw sequence as random_geometric_topology: replay it for the positions.
    rng = np.random.default_rng(seed)
    while True:
        points = rng.random((n, 2))
        dist = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
        adj = (dist <= radius).astype(np.float64)
        np.fill_diagonal(adj, 0.0)
        if Graph.from_adjacency(adj) == graph:
            return graph, points


def build_topology(kind: str, devices: list[Device], config: SimConfig) -> SimTopology:
    n = len(devices)
    tasks = tuple(d.task for d in devices)
    positions = None
    if kind == "cluster":
        plan = plan_topology(
            [Member(d.node_id, d.task) for d in devices], config.tasks, config.max_degree
        )
        index = {d.node_id: d.index for d in devices}
        graph = Graph.from_edges(n, [(index[a], index[b]) for a, b in plan.edges])
    elif kind == "random":
        graph, positions = _random_geometric(n, config.radius, config.seed)
    elif kind == "ring":
        graph = ring_graph(n)
    elif kind == "complete":
        graph = complete_graph(n)
    else:
        raise ValueError(f"unknown topology {kind!r}")
    return SimTopology(kind, graph, tasks, positions)


def task_consensus(
    blocks: Mapping[int, Mapping[str, Any]], tasks: tuple[str, ...]
) -> dict[str, float]:
    """Consensus distance of each task's own-block copies across its devices."""
    result: dict[str, float] = {}
    for task in dict.fromkeys(tasks):
        copies = [b for i, b in blocks.items() if tasks[i] == task]
        result[task] = consensus_distance(copies)
    return result
