"""`bench util`: compute utilisation of real daemons on slow, lossy links.

N hosts of the network-namespace testbed (solora_node/testbed/netns.py), one
`solora-node run` each with the daemon's defaults (the embedded SmolLM2-135M, 5 steps a
round, pacing, checkpoints, evaluation) except one torch thread per node, every host's
link limited to --rate and --loss each way. Once every node has trained --settle-rounds
rounds, each node's `solora_train_seconds_total` is read at the start and end of a
--seconds window: utilisation = training seconds / wall seconds. Run once per --modes
entry: `overlap` (rounds.overlap_exchange: true, the default) and `sequential` (false:
each round waits for its exchanges), in separate testbeds, one after the other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from solora_node.benchmarks.netns_run import (
    counter_sum,
    cpu_seconds,
    running,
    sample,
    wait_until,
)
from solora_node.config import (
    FederationSection,
    MetricsSection,
    NetworkSection,
    RoundsSection,
    TaskSection,
    TopologySection,
    TrainSection,
)
from solora_node.errors import SoloraError
from solora_node.testbed import nsnet
from solora_node.testbed.netns import Testbed

MODES = {"overlap": True, "sequential": False}
NETWORK_TIMINGS = ("liveness_deadline_s", "health_interval_s", "exchange_deadline_s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="hosts, one node each")
    parser.add_argument("--model", default="default", help="model.base (default: SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per node")
    parser.add_argument("--rate", default="10mbit", help="rate limit of every host link")
    parser.add_argument("--loss", type=int, default=5, help="loss percent each way, every host")
    parser.add_argument("--seconds", type=float, default=120.0, help="measuring window")
    parser.add_argument("--settle-rounds", type=int, default=2, help="rounds before measuring")
    parser.add_argument(
        "--modes", default="overlap,sequential", help="comma-separated: overlap, sequential"
    )


def daemon_defaults(model: str, threads: int, overlap: bool) -> dict[str, Any]:
    """The daemon's own defaults over the testbed's fast test settings (FAST_BASE)."""
    network = NetworkSection().model_dump(mode="json")
    return {
        "model": {"base": model},
        "federation": FederationSection().model_dump(mode="json", exclude={"id"}),
        "task": {"eval_examples": TaskSection.model_fields["eval_examples"].default},
        "train": TrainSection(threads=threads).model_dump(mode="json"),
        "network": {k: network[k] for k in NETWORK_TIMINGS},
        "metrics": {"eval_every": MetricsSection().eval_every},
        "rounds": RoundsSection(overlap_exchange=overlap).model_dump(mode="json"),
        "topology": TopologySection().model_dump(mode="json"),
    }


Scraped = dict[str, dict[str, float] | None]


def _reached(rounds: int) -> Callable[[Scraped], bool]:
    def done(scraped: Scraped) -> bool:
        return all(m is not None and sample(m, "solora_round") >= rounds for m in scraped.values())

    return done


def measure(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    base = daemon_defaults(args.model, args.threads, MODES[mode])
    bed = Testbed.plan(f"util{mode[:3]}", args.nodes, base=base)
    with running(bed, ready_timeout=600) as bed:
        for host in bed.state.hosts:
            bed.impair(host.name, rate=args.rate, loss=args.loss)
        # Start-up, warm-up and calibration on the default model take minutes on 2 cores.
        wait_until(bed, _reached(args.settle_rounds), 900, f"round {args.settle_rounds}")
        pids = {h.name: h.pid for h in bed.state.hosts if h.pid is not None}
        before = bed.scrape()
        cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
        wall0 = time.monotonic()
        time.sleep(args.seconds)
        after = bed.scrape()
        wall = time.monotonic() - wall0
        dropped = {h.name: nsnet.dropped_packets(h.namespace) for h in bed.state.hosts}
        per_node = {}
        for name, pid in pids.items():
            b, a = before[name], after[name]

            def delta(metric: str, a: Any = a, b: Any = b) -> float:
                return counter_sum(a, metric) - counter_sum(b, metric)

            per_node[name] = {
                "utilisation": round(delta("solora_train_seconds_total") / wall, 4),
                # Where the rest went: evaluation, and everything else (exchanges a
                # round waited for, checkpoints, aggregation, pacing).
                "eval_share": round(delta("solora_eval_seconds_total") / wall, 4),
                "utilisation_gauge_60s": round(sample(a, "solora_compute_utilization"), 4),
                "rounds": delta("solora_rounds_total"),
                "local_steps": delta("solora_local_steps_total"),
                # Proof that the federation still averages while exchanges overlap.
                "own_blocks_averaged": delta("solora_deltas_applied_total{kind=own"),
                "exchange_failures": delta("solora_exchange_failures_total"),
                "bytes_sent": delta("solora_bytes_sent_total"),
                "cpu_percent": round(100 * (cpu_seconds(pid) - cpu0[name]) / wall, 1),
                "packets_dropped_since_start": dropped[name],
            }
    utils = [p["utilisation"] for p in per_node.values()]
    return {
        "overlap_exchange": MODES[mode],
        "window_s": round(wall, 1),
        "mean_utilisation": round(statistics.mean(utils), 4),
        "min_utilisation": round(min(utils), 4),
        "per_node": per_node,
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise SoloraError(f"bench util --modes {args.modes!r}: expected a list of {list(MODES)}")
    if args.nodes < 2:
        raise SoloraError(f"bench util --nodes {args.nodes}: expected at least 2 (they exchange)")
    results = {mode: measure(args, mode) for mode in modes}
    return {
        "benchmark": "util",
        "model": args.model,
        "nodes": args.nodes,
        "threads": args.threads,
        "rate": args.rate,
        "loss_percent": args.loss,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "modes": results,
    }
