"""Cluster-based topology (DESIGN.md §2.3): who talks to whom, with which gossip weights.

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

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from solora_node.errors import SoloraError

# Gaps are rounded before plans are compared, so that last-bit differences of
# libm/BLAS between machines can never make two nodes pick different graphs.
_SCORE_DECIMALS = 9
# Above this many circulant offset sets, offsets are chosen greedily instead of
# exhaustively (a 100-node cluster with degree 8 would otherwise try ~230k sets).
_EXHAUSTIVE_LIMIT = 20_000

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
# Graphs on nodes 0..n-1


@dataclass(frozen=True)
class Graph:
    """An undirected simple graph on nodes 0..n-1; edges are sorted (i, j) with i < j."""

    n: int
    edges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"graph size must be >= 0, got {self.n}")
        for i, j in self.edges:
            if not 0 <= i < j < self.n:
                raise ValueError(
                    f"edge ({i}, {j}) is not a sorted pair of nodes in 0..{self.n - 1}"
                )
        if len(set(self.edges)) != len(self.edges) or list(self.edges) != sorted(self.edges):
            raise ValueError("edges must be unique and sorted; build graphs with Graph.from_edges")

    @classmethod
    def from_edges(cls, n: int, edges: Iterable[tuple[int, int]]) -> Graph:
        """Normalise any iterable of pairs (either order, duplicates allowed, no self-loops)."""
        pairs = set()
        for i, j in edges:
            if i == j:
                raise ValueError(f"self-loop on node {i}")
            pairs.add((min(i, j), max(i, j)))
        return cls(n, tuple(sorted(pairs)))

    @classmethod
    def from_adjacency(cls, adjacency: np.ndarray) -> Graph:
        adj = _check_adjacency(adjacency)
        rows, cols = np.nonzero(np.triu(adj, k=1))
        return cls(adj.shape[0], tuple(zip(rows.tolist(), cols.tolist(), strict=True)))

    def adjacency(self) -> np.ndarray:
        """0/1 symmetric float matrix with a zero diagonal."""
        adj = np.zeros((self.n, self.n), dtype=np.float64)
        for i, j in self.edges:
            adj[i, j] = adj[j, i] = 1.0
        return adj

    def degrees(self) -> list[int]:
        deg = [0] * self.n
        for i, j in self.edges:
            deg[i] += 1
            deg[j] += 1
        return deg

    @property
    def max_degree(self) -> int:
        return max(self.degrees(), default=0)

    def neighbours(self, node: int) -> tuple[int, ...]:
        return tuple(
            sorted(
                {j for i, j in self.edges if i == node} | {i for i, j in self.edges if j == node}
            )
        )

    def is_connected(self) -> bool:
        """True for a graph whose nodes all reach each other (the empty and 1-node graphs are)."""
        if self.n <= 1:
            return True
        links: list[list[int]] = [[] for _ in range(self.n)]
        for i, j in self.edges:
            links[i].append(j)
            links[j].append(i)
        seen = {0}
        frontier = [0]
        while frontier:
            node = frontier.pop()
            for other in links[node]:
                if other not in seen:
                    seen.add(other)
                    frontier.append(other)
        return len(seen) == self.n

    def subgraph(self, nodes: Sequence[int]) -> Graph:
        """The induced graph on `nodes`, relabelled 0..len(nodes)-1 in the given order."""
        index = {node: k for k, node in enumerate(nodes)}
        if len(index) != len(nodes):
            raise ValueError("subgraph nodes must be distinct")
        kept = [(index[i], index[j]) for i, j in self.edges if i in index and j in index]
        return Graph.from_edges(len(nodes), kept)


def complete_graph(n: int) -> Graph:
    return Graph(n, tuple(itertools.combinations(range(n), 2)))


def ring_graph(n: int) -> Graph:
    """The cycle C_n (a single edge for n == 2, no edge for n <= 1)."""
    return circulant_graph(n, [1]) if n >= 2 else Graph(n, ())


def circulant_graph(n: int, offsets: Iterable[int]) -> Graph:
    """Node i linked to i +- s (mod n) for every offset s."""
    edges: list[tuple[int, int]] = []
    for s in offsets:
        if not 0 < s < n:
            raise ValueError(f"circulant offset {s} must be in 1..{n - 1}")
        edges.extend((i, (i + s) % n) for i in range(n))
    return Graph.from_edges(n, edges)


def random_geometric_topology(
    n: int, radius: float, seed: int, *, require_connected: bool = False, max_tries: int = 1000
) -> Graph:
    """Wireless-like baseline: n points uniform in the unit square, linked within `radius`.

    With `require_connected`, point sets are redrawn (from the same seeded stream,
    so still deterministic) until the graph is connected; a ValueError after
    `max_tries` means the radius is too small for n.
    """
    if n < 0 or radius < 0:
        raise ValueError("n and radius must be >= 0")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        points = rng.random((n, 2))
        dist = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
        adj = (dist <= radius).astype(np.float64)
        np.fill_diagonal(adj, 0.0)
        graph = Graph.from_adjacency(adj)
        if not require_connected or graph.is_connected():
            return graph
    raise ValueError(
        f"no connected geometric graph with n={n}, radius={radius} in {max_tries} draws"
    )


# ---------------------------------------------------------------------------
# Mixing matrices and consensus measures


def _check_adjacency(adjacency: np.ndarray | Graph) -> np.ndarray:
    adj = adjacency.adjacency() if isinstance(adjacency, Graph) else np.asarray(adjacency)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"adjacency must be a square matrix, got shape {adj.shape}")
    adj = (adj != 0).astype(np.float64)
    if not np.array_equal(adj, adj.T):
        raise ValueError("adjacency must be symmetric (undirected graph)")
    if np.any(np.diag(adj)):
        raise ValueError("adjacency must have a zero diagonal (no self-loops)")
    return adj


def metropolis_weights(adjacency: np.ndarray | Graph) -> np.ndarray:
    """Metropolis-Hastings gossip matrix: W_ij = 1/(1+max(d_i,d_j)) on edges, W_ii = 1-sum_j W_ij.

    Symmetric and doubly stochastic for any undirected graph, and every node can
    compute its row from its own and its neighbours' degrees only.
    """
    adj = _check_adjacency(adjacency)
    deg = adj.sum(axis=1)
    weights = adj / (1.0 + np.maximum(deg[:, None], deg[None, :]))
    np.fill_diagonal(weights, 1.0 - weights.sum(axis=1))
    return weights


def spectral_gap(weights: np.ndarray) -> float:
    """1 - |lambda_2|, with |lambda_2| the second largest eigenvalue modulus of the mixing matrix.

    Consensus error shrinks roughly by (1 - gap) per gossip round. A 1-node
    cluster is already in consensus, so its gap is defined as 1.0 (as for K_n).
    A disconnected graph has gap 0.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"mixing matrix must be square, got shape {w.shape}")
    if w.shape[0] <= 1:
        return 1.0
    values = np.linalg.eigvalsh(w) if np.allclose(w, w.T) else np.linalg.eigvals(w)
    moduli = np.sort(np.abs(values))[::-1]
    return float(min(1.0, max(0.0, 1.0 - moduli[1])))


def _flatten(block: Any) -> np.ndarray:
    """One node's state as a float64 vector; dict blocks are concatenated in sorted key order."""
    if isinstance(block, Mapping):
        return np.concatenate([_flatten(block[key]) for key in sorted(block)] or [np.zeros(0)])
    if hasattr(block, "detach"):  # a torch tensor, without importing torch here
        block = block.detach().to("cpu").float().numpy()
    return np.asarray(block, dtype=np.float64).reshape(-1)


def consensus_distance(blocks: Sequence[Any]) -> float:
    """Mean squared L2 distance of the nodes' states to their average: (1/N) sum_i ||x_i - x̄||².

    Each block is an array/tensor or a dict of them (same keys and shapes on
    every node). Zero exactly when all nodes agree; 0.0 for fewer than 2 blocks.
    """
    if len(blocks) < 2:
        return 0.0
    if all(isinstance(b, Mapping) for b in blocks):
        keys = set(blocks[0])
        if any(set(b) != keys for b in blocks):
            raise ValueError("consensus_distance: blocks have different keys")
    vectors = [_flatten(b) for b in blocks]
    if len({v.shape for v in vectors}) != 1:
        raise ValueError("consensus_distance: blocks have different sizes")
    stacked = np.stack(vectors)
    return float(np.mean(np.sum((stacked - stacked.mean(axis=0)) ** 2, axis=1)))


# ---------------------------------------------------------------------------
# Choosing a cluster graph


def _circulant_gap(n: int, offsets: Sequence[int]) -> float:
    """Closed-form gap of the Metropolis matrix of a circulant graph (regular, so W = (I+A)/(1+d)).

    The eigenvalues of a circulant matrix are the DFT of its first row:
    mu_k = (1 + sum_s 2 cos(2 pi k s / n)) / (1 + d), k = 1..n-1, where an
    offset s = n/2 contributes one edge, hence cos(pi k) instead of 2 cos(...).
    """
    k = np.arange(1, n)
    total = np.ones(n - 1)
    degree = 0
    for s in offsets:
        if 2 * s == n:
            total += np.cos(np.pi * k)
            degree += 1
        else:
            total += 2.0 * np.cos(2.0 * np.pi * k * s / n)
            degree += 2
    return float(1.0 - np.max(np.abs(total / (1 + degree))))


def _offset_cost(n: int, s: int) -> int:
    return 1 if 2 * s == n else 2


def _best_circulant(n: int, max_degree: int) -> tuple[int, ...]:
    """Offsets of the connected circulant with degree <= max_degree and the largest gap.

    Ties go to fewer edges (less traffic), then to the lexicographically
    smallest offsets. Needs n > max_degree + 1 >= 3.
    """
    half = n // 2
    offsets = range(1, half + 1)

    def score(chosen: Sequence[int]) -> tuple[float, int, tuple[int, ...]]:
        gap = round(_circulant_gap(n, chosen), _SCORE_DECIMALS)
        cost = sum(_offset_cost(n, s) for s in chosen)
        return (-gap, cost, tuple(chosen))

    def allowed(chosen: Sequence[int]) -> bool:
        return (
            sum(_offset_cost(n, s) for s in chosen) <= max_degree
            and math.gcd(n, *chosen) == 1  # connected iff the offsets generate Z_n
        )

    most = max_degree // 2 + 1
    count = sum(math.comb(half, size) for size in range(1, most + 1))
    if count <= _EXHAUSTIVE_LIMIT:
        candidates = (
            c
            for size in range(1, most + 1)
            for c in itertools.combinations(offsets, size)
            if allowed(c)
        )
        # The ring (offset 1) is always allowed, so there is at least one candidate.
        return min(candidates, key=score)
    # Greedy: start from the ring and add the chord that helps most until none does.
    chosen: tuple[int, ...] = (1,)
    while True:
        extensions = [
            tuple(sorted((*chosen, s)))
            for s in offsets
            if s not in chosen and allowed((*chosen, s))
        ]
        if not extensions:
            return chosen
        best = min(extensions, key=score)
        if score(best) >= score(chosen):
            return chosen
        chosen = best


def _add_matching(graph: Graph, max_degree: int) -> Graph:
    """Spend spare degree (odd max_degree on an odd cluster) on one extra chord per node.

    Tries a greedy matching along each chord length and keeps the one with the
    largest gap, only if it beats the circulant alone.
    """
    n = graph.n
    best = graph
    best_gap = round(spectral_gap(metropolis_weights(graph)), _SCORE_DECIMALS)
    present = set(graph.edges)
    for s in range(1, n // 2 + 1):
        degree = graph.degrees()
        extra = []
        for i in range(n):
            j = (i + s) % n
            pair = (min(i, j), max(i, j))
            if degree[i] < max_degree and degree[j] < max_degree and pair not in present:
                extra.append(pair)
                degree[i] += 1
                degree[j] += 1
        if not extra:
            continue
        candidate = Graph.from_edges(n, [*graph.edges, *extra])
        gap = round(spectral_gap(metropolis_weights(candidate)), _SCORE_DECIMALS)
        if gap > best_gap:
            best, best_gap = candidate, gap
    return best


def cluster_graph(n: int, max_degree: int) -> Graph:
    """The planned intra-cluster graph on n nodes (positions in node-id order).

    Complete when n <= max_degree + 1 (gap 1, the best possible). Otherwise a
    connected graph with degree <= max_degree chosen for a large spectral gap.
    A connected graph on 3 or more nodes needs degree 2, so max_degree 1 is
    raised to 2 there: consensus is impossible without connectivity.
    """
    if max_degree < 1:
        raise ValueError(f"max_degree must be >= 1, got {max_degree}")
    if n <= max_degree + 1:
        return complete_graph(n)
    bound = max(max_degree, 2)
    graph = circulant_graph(n, _best_circulant(n, bound))
    if graph.max_degree < bound:
        graph = _add_matching(graph, bound)
    return graph


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
                spectral_gap=round(spectral_gap(mixing), _SCORE_DECIMALS),
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
