"""The topology a running node uses now, as plain data: for its status reply, for
`solora-node topology --addr` and for its web page.

Torch-free and numpy-free (the CLI and the page import it); built from a
`federation.topology.TopologyPlan` plus the node's liveness view by `view_from_plan`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from solora_node._proto import status_pb2
from solora_node.errors import SoloraError

if TYPE_CHECKING:
    from solora_node.federation.topology import TopologyPlan
    from solora_node.net.membership import MembershipView

SELF = "self"  # the state of the node that answers


@dataclass(frozen=True)
class TopologyEdge:
    a: str
    b: str
    weight: float = 0.0  # Metropolis W_ab inside a cluster; 0 for a bridge


@dataclass(frozen=True)
class ClusterView:
    task: str
    members: tuple[str, ...]
    head: str
    degree: int
    spectral_gap: float
    edges: tuple[TopologyEdge, ...]
    self_weights: tuple[float, ...]  # W_ii, parallel to members


@dataclass(frozen=True)
class MemberState:
    node_id: str
    task: str
    state: str  # self, live, suspect, dead


@dataclass(frozen=True)
class TopologyView:
    tasks: tuple[str, ...]
    max_degree: int
    bridges_per_cluster: int
    clusters: tuple[ClusterView, ...]
    bridges: tuple[TopologyEdge, ...]
    members: tuple[MemberState, ...]
    planned_unix: float = 0.0

    def state_of(self, node_id: str) -> str:
        for member in self.members:
            if member.node_id == node_id:
                return member.state
        return "unknown"

    def to_json(self) -> dict[str, Any]:
        """The planned form's keys (docs/topology.md) plus weights, liveness and plan time."""
        edges = sorted(
            {(e.a, e.b) for c in self.clusters for e in c.edges}
            | {(b.a, b.b) for b in self.bridges}
        )
        return {
            "tasks": list(self.tasks),
            "max_degree": self.max_degree,
            "bridges_per_cluster": self.bridges_per_cluster,
            "clusters": [
                {
                    "task": c.task,
                    "members": list(c.members),
                    "head": c.head,
                    "size": len(c.members),
                    "degree": c.degree,
                    "spectral_gap": c.spectral_gap,
                    "edges": [[e.a, e.b] for e in c.edges],
                    "edge_weights": [e.weight for e in c.edges],
                    "self_weights": dict(zip(c.members, c.self_weights, strict=True)),
                }
                for c in self.clusters
            ],
            "bridges": [[b.a, b.b] for b in self.bridges],
            "edges": [list(e) for e in edges],
            "members": [{"id": m.node_id, "task": m.task, "state": m.state} for m in self.members],
            "planned_unix": self.planned_unix,
        }


def view_from_plan(
    plan: TopologyPlan, known: Mapping[str, tuple[str, str]], planned_unix: float
) -> TopologyView:
    """`known`: node id -> (task, state) for this node (state "self") and every known peer."""
    clusters = []
    for c in plan.clusters:
        edges = tuple(
            TopologyEdge(a, b, float(c.mixing[c.index(a), c.index(b)])) for a, b in c.edges
        )
        weights = tuple(float(c.mixing[i, i]) for i in range(c.size))
        clusters.append(
            ClusterView(c.task, c.members, c.head, c.degree, c.spectral_gap, edges, weights)
        )
    tasks = {n: c.task for c in plan.clusters for n in c.members}
    ids = sorted(set(tasks) | set(known))
    members = []
    for node_id in ids:
        task, state = known.get(node_id, (tasks.get(node_id, ""), "unknown"))
        members.append(MemberState(node_id, task or tasks.get(node_id, ""), state))
    return TopologyView(
        tasks=plan.tasks,
        max_degree=plan.max_degree,
        bridges_per_cluster=plan.bridges_per_cluster,
        clusters=tuple(clusters),
        bridges=tuple(TopologyEdge(a, b) for a, b in plan.bridges),
        members=tuple(members),
        planned_unix=planned_unix,
    )


def _edge_to_proto(edge: TopologyEdge) -> status_pb2.TopologyEdge:
    return status_pb2.TopologyEdge(a=edge.a, b=edge.b, weight=edge.weight)


def _edge_from_proto(msg: status_pb2.TopologyEdge) -> TopologyEdge:
    return TopologyEdge(msg.a, msg.b, msg.weight)


def view_to_proto(view: TopologyView) -> status_pb2.TopologyView:
    return status_pb2.TopologyView(
        tasks=list(view.tasks),
        max_degree=view.max_degree,
        bridges_per_cluster=view.bridges_per_cluster,
        clusters=[
            status_pb2.ClusterView(
                task=c.task,
                members=list(c.members),
                head=c.head,
                degree=c.degree,
                spectral_gap=c.spectral_gap,
                edges=[_edge_to_proto(e) for e in c.edges],
                self_weights=list(c.self_weights),
            )
            for c in view.clusters
        ],
        bridges=[_edge_to_proto(b) for b in view.bridges],
        members=[
            status_pb2.MemberState(node_id=m.node_id, task=m.task, state=m.state)
            for m in view.members
        ],
        planned_unix=view.planned_unix,
    )


def view_from_proto(msg: status_pb2.TopologyView) -> TopologyView:
    clusters = []
    for c in msg.clusters:
        if len(c.self_weights) != len(c.members):
            raise SoloraError(
                f"status reply: topology cluster {c.task!r}: {len(c.self_weights)} self_weights "
                f"for {len(c.members)} members; expected one per member"
            )
        clusters.append(
            ClusterView(
                task=c.task,
                members=tuple(c.members),
                head=c.head,
                degree=c.degree,
                spectral_gap=c.spectral_gap,
                edges=tuple(_edge_from_proto(e) for e in c.edges),
                self_weights=tuple(c.self_weights),
            )
        )
    return TopologyView(
        tasks=tuple(msg.tasks),
        max_degree=msg.max_degree,
        bridges_per_cluster=msg.bridges_per_cluster,
        clusters=tuple(clusters),
        bridges=tuple(_edge_from_proto(b) for b in msg.bridges),
        members=tuple(MemberState(m.node_id, m.task, m.state) for m in msg.members),
        planned_unix=msg.planned_unix,
    )


def live_view(
    plan: TopologyPlan,
    node_id: str,
    task: str,
    membership: MembershipView,
    previous: TopologyView | None = None,
) -> TopologyView:
    """The view a node publishes: its plan plus every known peer's liveness. planned_unix
    is kept from `previous` while the plan's clusters and bridges stay the same."""
    known = {node_id: (task, SELF)}
    for peer_id, (peer, state) in membership.peers().items():
        known[peer_id] = (peer.task, state.value)
    view = view_from_plan(plan, known, time.time())
    if previous is not None and (previous.clusters, previous.bridges) == (
        view.clusters,
        view.bridges,
    ):
        view = dataclasses.replace(view, planned_unix=previous.planned_unix)
    return view
