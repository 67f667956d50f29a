"""Cluster-based topology (docs/topology.md): who talks to whom, with which gossip weights.

Pure and deterministic: every node that holds the same membership view computes
the same plan, with no coordination. Re-planning on churn is calling
`plan_topology` again with the new view; `plan_diff` says what changed.

- A cluster is the set of nodes training one task. Inside it, a connected graph
  with degree <= max_degree: complete when it fits, otherwise the circulant graph
  (ring plus chords) with the largest spectral gap of its Metropolis matrix,
  plus a matching of extra chords when the degree bound is odd and a circulant
  cannot use it fully.
- Clusters are linked by bridges between their best-ranked members (the head
  first); the graph of clusters is planned by the same rule as a cluster, so it
  is connected with bounded bridge degree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from solora_node.errors import SoloraError
from solora_node.federation.graph import (
    SCORE_DECIMALS,
    Graph,
    cluster_graph,
    metropolis_weights,
    spectral_gap,
)

Edge = tuple[str, str]


class MembershipError(SoloraError, ValueError):
    """A membership view that cannot be planned: duplicate node ids or unknown tasks."""


@dataclass(frozen=True)
class Member:
    """A live node as seen in the membership view."""

    node_id: str
    task: str
    capacity: float = 1.0


# ---------------------------------------------------------------------------
# Plans


def election_order(members: Iterable[Member]) -> tuple[str, ...]:
    """Cluster members ranked for head election: higher capacity first, then lowest node id.

    The head is the first; the next ones carry extra bridges when
    bridges_per_cluster > 1 and take over when the head leaves the view.
    """
    return tuple(m.node_id for m in sorted(members, key=lambda m: (-m.capacity, m.node_id)))


@dataclass(frozen=True)
class ClusterPlan:
    """One task's cluster: members in node-id order, its gossip graph and mixing matrix."""

    task: str
    members: tuple[str, ...]
    ranking: tuple[str, ...]
    graph: Graph
    mixing: np.ndarray = field(compare=False, repr=False)
    spectral_gap: float

    @property
    def head(self) -> str:
        return self.ranking[0]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def degree(self) -> int:
        """Largest number of cluster neighbours of any member (bridges not counted)."""
        return self.graph.max_degree

    @property
    def edges(self) -> tuple[Edge, ...]:
        return tuple(sorted(_edge(self.members[i], self.members[j]) for i, j in self.graph.edges))

    def index(self, node_id: str) -> int:
        return self.members.index(node_id)


def _edge(a: str, b: str) -> Edge:
    return (a, b) if a < b else (b, a)


@dataclass(frozen=True)
class TopologyPlan:
    """The whole federation's plan; every query is answered from the plan alone."""

    tasks: tuple[str, ...]
    max_degree: int
    bridges_per_cluster: int
    clusters: tuple[ClusterPlan, ...]
    bridges: tuple[Edge, ...]

    def cluster(self, task: str) -> ClusterPlan:
        for cluster in self.clusters:
            if cluster.task == task:
                return cluster
        raise KeyError(f"no cluster for task {task!r} in this plan")

    def cluster_of(self, node_id: str) -> ClusterPlan:
        for cluster in self.clusters:
            if node_id in cluster.members:
                return cluster
        raise KeyError(f"node {node_id!r} is not in this plan")

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(sorted(n for c in self.clusters for n in c.members))

    @property
    def heads(self) -> dict[str, str]:
        return {c.task: c.head for c in self.clusters}

    @property
    def edges(self) -> tuple[Edge, ...]:
        """Every planned link: cluster edges and bridges, sorted."""
        return tuple(sorted({e for c in self.clusters for e in c.edges} | set(self.bridges)))

    def cluster_neighbours(self, node_id: str) -> tuple[str, ...]:
        """Same-task neighbours: the peers this node gossip-averages its own block with."""
        cluster = self.cluster_of(node_id)
        i = cluster.index(node_id)
        return tuple(sorted(cluster.members[j] for j in cluster.graph.neighbours(i)))

    def bridge_neighbours(self, node_id: str) -> tuple[str, ...]:
        """Other-task neighbours: foreign blocks are relayed over these links only."""
        self.cluster_of(node_id)  # unknown node -> KeyError, not an empty answer
        return tuple(
            sorted({b if a == node_id else a for a, b in self.bridges if node_id in (a, b)})
        )

    def neighbours(self, node_id: str) -> tuple[str, ...]:
        return tuple(sorted({*self.cluster_neighbours(node_id), *self.bridge_neighbours(node_id)}))

    def mixing_weights(self, node_id: str) -> dict[str, float]:
        """This node's row of its cluster's Metropolis matrix: self and cluster neighbours."""
        cluster = self.cluster_of(node_id)
        i = cluster.index(node_id)
        row = cluster.mixing[i]
        return {
            cluster.members[j]: float(row[j]) for j in range(cluster.size) if j == i or row[j] > 0
        }

    def to_json(self) -> dict[str, Any]:
        """The documented `solora-node topology --json` object (docs/topology.md)."""
        return {
            "tasks": list(self.tasks),
            "max_degree": self.max_degree,
            "bridges_per_cluster": self.bridges_per_cluster,
            "clusters": [
                {
                    "task": c.task,
                    "members": list(c.members),
                    "head": c.head,
                    "size": c.size,
                    "degree": c.degree,
                    "spectral_gap": c.spectral_gap,
                    "edges": [list(e) for e in c.edges],
                }
                for c in self.clusters
            ],
            "bridges": [list(b) for b in self.bridges],
            "edges": [list(e) for e in self.edges],
        }


def _check_membership(members: Sequence[Member], tasks: Sequence[str]) -> None:
    known = set(tasks)
    if len(known) != len(tasks):
        raise MembershipError(f"federation tasks must be unique, got {list(tasks)}")
    seen: set[str] = set()
    for m in members:
        if m.node_id in seen:
            raise MembershipError(f"node id {m.node_id!r} appears twice in the membership")
        seen.add(m.node_id)
        if m.task not in known:
            raise MembershipError(
                f"node {m.node_id!r} has task {m.task!r}, "
                f"which is not in the federation tasks {list(tasks)}"
            )
        if not (m.capacity > 0 and math.isfinite(m.capacity)):
            raise MembershipError(f"node {m.node_id!r} has capacity {m.capacity}; expected > 0")


def plan_topology(
    members: Iterable[Member], tasks: Sequence[str], max_degree: int, bridges_per_cluster: int = 1
) -> TopologyPlan:
    """Plan clusters, gossip graphs, heads and bridges from a membership view.

    Deterministic in the set of members (input order is irrelevant). Tasks
    without live members get no cluster. `max_degree` bounds cluster edges per
    node; bridges come on top, at most `max_degree * bridges_per_cluster` per node.
    """
    if max_degree < 1:
        raise ValueError(f"max_degree must be >= 1, got {max_degree}")
    if bridges_per_cluster < 0:
        raise ValueError(f"bridges_per_cluster must be >= 0, got {bridges_per_cluster}")
    view = sorted(members, key=lambda m: m.node_id)
    _check_membership(view, tasks)

    clusters = []
    for task in tasks:
        group = [m for m in view if m.task == task]
        if not group:
            continue
        graph = cluster_graph(len(group), max_degree)
        mixing = metropolis_weights(graph)
        clusters.append(
            ClusterPlan(
                task=task,
                members=tuple(m.node_id for m in group),
                ranking=election_order(group),
                graph=graph,
                mixing=mixing,
                # Rounded like plan scores: the same view gives the same plan, bit for bit.
                spectral_gap=round(spectral_gap(mixing), SCORE_DECIMALS),
            )
        )

    # The graph of clusters is planned like a cluster (positions in federation
    # task order): connected, degree-bounded, complete for few clusters.
    bridges: set[Edge] = set()
    if bridges_per_cluster > 0:
        meta = cluster_graph(len(clusters), max_degree)
        for x, y in meta.edges:
            rx, ry = clusters[x].ranking, clusters[y].ranking
            for rank in range(min(bridges_per_cluster, len(rx), len(ry))):
                bridges.add(_edge(rx[rank], ry[rank]))

    return TopologyPlan(
        tasks=tuple(tasks),
        max_degree=max_degree,
        bridges_per_cluster=bridges_per_cluster,
        clusters=tuple(clusters),
        bridges=tuple(sorted(bridges)),
    )


@dataclass(frozen=True)
class PlanDiff:
    """What a re-plan changed, for one log line per churn event."""

    added_edges: tuple[Edge, ...]
    removed_edges: tuple[Edge, ...]
    head_changes: dict[str, tuple[str | None, str | None]]  # task -> (old head, new head)

    @property
    def empty(self) -> bool:
        return not (self.added_edges or self.removed_edges or self.head_changes)


def plan_diff(old: TopologyPlan, new: TopologyPlan) -> PlanDiff:
    before, after = set(old.edges), set(new.edges)
    old_heads, new_heads = old.heads, new.heads
    changes = {
        task: (old_heads.get(task), new_heads.get(task))
        for task in sorted(set(old_heads) | set(new_heads))
        if old_heads.get(task) != new_heads.get(task)
    }
    return PlanDiff(
        added_edges=tuple(sorted(after - before)),
        removed_edges=tuple(sorted(before - after)),
        head_changes=changes,
    )
