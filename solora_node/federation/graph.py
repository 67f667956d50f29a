"""Graphs on nodes 0..n-1 and their gossip math (docs/topology.md).

Metropolis mixing weights, spectral gap, consensus distance, and the circulant
graphs with the largest spectral gap under a degree bound. Pure numpy: the
planner (federation.topology) and the simulator build on it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Gaps are rounded before plans are compared, so that last-bit differences of
# libm/BLAS between machines can never make two nodes pick different graphs.
SCORE_DECIMALS = 9
# Above this many circulant offset sets, offsets are chosen greedily instead of
# exhaustively (a 100-node cluster with degree 8 would otherwise try ~230k sets).
_EXHAUSTIVE_LIMIT = 20_000
# The extra matching on an odd cluster (_add_matching) tries every chord length up to
# this many nodes, and at most _MATCHING_CANDIDATES lengths above (matching_chords).
_MATCHING_EXHAUSTIVE_NODES = 160
_MATCHING_CANDIDATES = 16

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


def circulant_gap(n: int, offsets: Sequence[int]) -> float:
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
        gap = round(circulant_gap(n, chosen), SCORE_DECIMALS)
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


def matching_chords(n: int) -> list[int]:
    """The chord lengths `_add_matching` tries on an n-node cluster, in increasing order.

    Each try costs a dense n x n eigendecomposition, so every length is tried only up to
    _MATCHING_EXHAUSTIVE_NODES nodes (the cluster sizes that matter: plans there are
    exactly as before). Above, a window of about 1.2..2 sqrt(n) is sampled with at most
    _MATCHING_CANDIDATES lengths: the best length fell in it at every size measured
    (23 of 301, 42 of 501; docs/scale.md), and the rest of the range scores far lower.
    """
    half = n // 2
    if n <= _MATCHING_EXHAUSTIVE_NODES:
        return list(range(1, half + 1))
    root = math.sqrt(n)
    low, high = max(1, round(1.2 * root)), min(half, round(2.0 * root))
    step = max(1, -(-(high - low + 1) // _MATCHING_CANDIDATES))
    return list(range(low, high + 1, step))


def _add_matching(graph: Graph, max_degree: int) -> Graph:
    """Spend spare degree (odd max_degree on an odd cluster) on one extra chord per node.

    Tries a greedy matching along each of `matching_chords` and keeps the one with the
    largest gap (ties: the shorter chord), only if it beats the circulant alone.
    """
    n = graph.n
    best = graph
    best_gap = round(spectral_gap(metropolis_weights(graph)), SCORE_DECIMALS)
    present = set(graph.edges)
    for s in matching_chords(n):
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
        gap = round(spectral_gap(metropolis_weights(candidate)), SCORE_DECIMALS)
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
