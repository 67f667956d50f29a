"""`bench scale`: how planning and a round's per-node costs grow with nodes and tasks.

Planning: `plan_topology` (federation/topology.py) for N members spread evenly over T
tasks, at the configured degree bound. plan_s is one full plan and replan_s the plan
after one member leaves (churn), each the best CPU time (process_time) of --repeats;
quality is the largest cluster degree, the spectral gap of every cluster (min and
median), and the diameter of the largest cluster and of the whole federation (cluster
links and bridges). A diameter is exact (BFS from every node) up to
--exact-diameter-nodes and a lower bound (BFS from 32 evenly spread nodes) above it.
Per-node round costs: benchmarks/scale_rounds.py (bytes, items, relays, foreign-expert
memory, measured by running ledgers over the in-memory transport), uncapped for every
(--round-nodes, --round-tasks), and with federation.max_foreign_experts = --cap for every
(--cap-nodes, --round-tasks). --rounds-only skips planning (the round-cost tables alone).
With --plot FILE, a PNG of both.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from solora_node.benchmarks.scale_rounds import measure_rounds
from solora_node.config import TopologySection
from solora_node.errors import SoloraError
from solora_node.federation.topology import Member, TopologyPlan, plan_topology

_DIAMETER_SAMPLE = 32


def _sizes(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SoloraError(f"--{what} {text!r}: expected positive integers such as 10,100")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", default="10,100,1000,10000", help="N for planning")
    parser.add_argument("--plan-tasks", type=int, default=10, help="T for planning")
    parser.add_argument("--repeats", type=int, default=3, help="plans per size; best counts")
    parser.add_argument("--exact-diameter-nodes", type=int, default=1000)
    parser.add_argument("--round-nodes", default="10,20,50,100", help="N for round costs")
    parser.add_argument("--round-tasks", default="1,2,5,10,20", help="T for round costs")
    parser.add_argument(
        "--cap", default="4", help="max_foreign_experts of the capped sweep ('none': no sweep)"
    )
    parser.add_argument("--cap-nodes", default="50,100", help="N for the capped sweep")
    parser.add_argument(
        "--rounds-only", action="store_true", help="skip topology planning (round costs only)"
    )
    parser.add_argument("--rounds", type=int, default=8, help="rounds run per (N, T)")
    parser.add_argument("--layers", type=int, default=30, help="decoder layers of the block")
    parser.add_argument("--plot", type=Path, help="write a PNG of the figures here")
    parser.add_argument(
        "--planning-only", action="store_true", help="only the planning figures (no rounds run)"
    )


def _cap(text: str) -> int | None:
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise SoloraError(f"--cap {text!r}: expected an integer >= 0 or 'none'")
    return value


def _best_cpu(fn: Callable[[], object], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best, result


def _eccentricity(adjacency: Sequence[Sequence[int]], source: int) -> int:
    seen = [-1] * len(adjacency)
    seen[source] = 0
    queue = collections.deque([source])
    far = 0
    while queue:
        node = queue.popleft()
        for nxt in adjacency[node]:
            if seen[nxt] < 0:
                seen[nxt] = far_next = seen[node] + 1
                far = max(far, far_next)
                queue.append(nxt)
    if min(seen) < 0:
        return -1  # disconnected
    return far


def diameter(adjacency: Sequence[Sequence[int]], exact_limit: int) -> dict[str, Any]:
    n = len(adjacency)
    exact = n <= exact_limit
    sources = range(n) if exact else range(0, n, max(1, n // _DIAMETER_SAMPLE))
    values = [_eccentricity(adjacency, s) for s in sources]
    return {"value": -1 if min(values) < 0 else max(values), "exact": exact}


def _federation_adjacency(plan: TopologyPlan) -> list[list[int]]:
    index = {node: i for i, node in enumerate(plan.node_ids)}
    adjacency: list[list[int]] = [[] for _ in index]
    for a, b in plan.edges:
        adjacency[index[a]].append(index[b])
        adjacency[index[b]].append(index[a])
    return adjacency


def plan_figures(members: int, tasks: int, repeats: int, exact_limit: int) -> dict[str, Any]:
    topology = TopologySection()
    names = [f"task{t:02d}" for t in range(tasks)]
    view = [Member(f"n{i:05d}", names[i % tasks]) for i in range(members)]

    def plan(v: list[Member]) -> TopologyPlan:
        return plan_topology(v, names, topology.max_degree, topology.bridges_per_cluster)

    plan_s, full = _best_cpu(lambda: plan(view), repeats)
    replan_s, _ = _best_cpu(lambda: plan(view[1:]), repeats)
    gaps = [c.spectral_gap for c in full.clusters]
    largest = max(full.clusters, key=lambda c: c.size)
    cluster_adjacency = [list(largest.graph.neighbours(i)) for i in range(largest.size)]
    bridges = collections.Counter(n for edge in full.bridges for n in edge)
    return {
        "members": members,
        "tasks": tasks,
        "plan_s": round(plan_s, 4),
        "replan_s": round(replan_s, 4),
        "max_cluster_degree": max(c.degree for c in full.clusters),
        "max_bridges_per_node": max(bridges.values(), default=0),
        "spectral_gap": {"min": min(gaps), "median": statistics.median(gaps)},
        "largest_cluster": largest.size,
        "cluster_diameter": diameter(cluster_adjacency, exact_limit),
        "federation_diameter": diameter(_federation_adjacency(full), exact_limit),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.planning_only and args.rounds_only:
        raise SoloraError("--planning-only and --rounds-only: choose one")
    if args.planning_only and args.plot is not None:
        raise SoloraError("--plot needs the round figures: drop --planning-only or --plot")
    cap = _cap(args.cap)
    tasks = _sizes(args.round_tasks, "round-tasks")
    planning = (
        []
        if args.rounds_only
        else [
            plan_figures(n, args.plan_tasks, args.repeats, args.exact_diameter_nodes)
            for n in _sizes(args.members, "members")
        ]
    )
    rounds = [
        measure_rounds(n, t, args.rounds, args.layers)
        for t in tasks
        for n in _sizes(args.round_nodes, "round-nodes")
        if n >= t and not args.planning_only
    ]
    capped = (
        []
        if cap is None or args.planning_only
        else [
            measure_rounds(n, t, args.rounds, args.layers, cap)
            for t in tasks
            for n in _sizes(args.cap_nodes, "cap-nodes")
            if n >= t
        ]
    )
    topology = TopologySection()
    result: dict[str, Any] = {
        "benchmark": "scale",
        "max_degree": topology.max_degree,
        "bridges_per_cluster": topology.bridges_per_cluster,
        "planning": planning,
        "rounds": rounds,
        "capped_rounds": capped,
        "max_foreign_experts": cap,
        "rounds_run": args.rounds,
        "cpu": "seconds of process time, best of --repeats",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if args.plot is not None:
        from solora_node.benchmarks.scale_plot import plot_scale

        plot_scale(result, args.plot)
        result["plot"] = str(args.plot)
    return result
