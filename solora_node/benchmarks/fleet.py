"""`bench fleet`: the largest real federation this machine holds, in network namespaces.

--nodes hosts of the namespace testbed (solora_node/testbed/netns.py) on one bridge, one
`solora-node run` each on the tiny model with the daemon's pacing and network defaults
(a round at most every 2 s, health checks every 2 s), no bootstrap peers: every node
finds the others by mDNS on its veth. Reported:

- discovery: seconds from the start of `up` (and from the moment the last node was
  serving) until every node counts every other as live (`solora_peers{state="live"}`);
- rounds per minute per node over a --seconds window after that;
- CPU (percent of one core, from /proc/PID/stat) and memory (RSS, peak RSS) per node;
- the machine's load average and available memory.

Every namespace and process it creates is removed by name/pid on exit, error, Ctrl-C or
SIGTERM (benchmarks/netns_run.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from solora_node.benchmarks.netns_run import (
    counter_sum,
    cpu_seconds,
    rss_bytes,
    running,
    wait_until,
)
from solora_node.config import NetworkSection, RoundsSection
from solora_node.errors import SoloraError
from solora_node.testbed.netns import Testbed

MIB = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=24, help="hosts, one node each")
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window")
    parser.add_argument(
        "--discovery-timeout", type=float, default=600.0, help="give up on discovery after this"
    )


def fleet_config() -> dict[str, Any]:
    """The testbed's tiny model, with the daemon's own pacing and network timings."""
    network = NetworkSection().model_dump(mode="json")
    return {
        "rounds": RoundsSection().model_dump(mode="json"),
        "network": {
            k: network[k]
            for k in ("liveness_deadline_s", "health_interval_s", "exchange_deadline_s")
        },
    }


def _spread(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "mean": round(statistics.mean(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    others = args.nodes - 1
    bed = Testbed.plan("fleet", args.nodes, base=fleet_config())
    mem_before = mem_available()
    t0 = time.monotonic()
    with running(bed, ready_timeout=args.discovery_timeout) as bed:
        serving = time.monotonic()  # every node wrote node.json: gRPC, metrics, mDNS up

        def all_see_all(scraped: dict[str, dict[str, float] | None]) -> bool:
            return all(
                m is not None and m.get("solora_peers{state=live}", 0) >= others
                for m in scraped.values()
            )

        remaining = args.discovery_timeout - (serving - t0)
        wait_until(bed, all_see_all, max(1.0, remaining), "every node sees every other", 1.0)
        discovered = time.monotonic()
        pids = {h.name: h.pid for h in bed.state.hosts if h.pid is not None}
        before = bed.scrape()
        cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
        wall0 = time.monotonic()
        time.sleep(args.seconds)
        after = bed.scrape()
        wall = time.monotonic() - wall0
        cpu = [100 * (cpu_seconds(p) - cpu0[n]) / wall for n, p in pids.items()]
        memory = [rss_bytes(p) for p in pids.values()]
        rounds = [
            60
            * (
                counter_sum(after[n], "solora_rounds_total")
                - counter_sum(before[n], "solora_rounds_total")
            )
            / wall
            for n in pids
        ]
        live = [(after[n] or {}).get("solora_peers{state=live}", float("nan")) for n in pids]
        mem_during = mem_available()
        load = os.getloadavg()
    return {
        "seconds_to_all_see_all_from_up": round(discovered - t0, 1),
        "seconds_to_all_see_all_from_last_ready": round(discovered - serving, 1),
        "seconds_to_all_ready": round(serving - t0, 1),
        "window_s": round(wall, 1),
        "rounds_per_minute": _spread(rounds),
        "cpu_percent_of_core": _spread(cpu),
        "rss_mib": _spread([m[0] / MIB for m in memory]),
        "peak_rss_mib": _spread([m[1] / MIB for m in memory]),
        "live_peers_at_end": _spread(live, 0),
        "machine_memory_used_mib": round((mem_before - mem_during) / MIB),
        "load_avg": [round(x, 2) for x in load],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not 2 <= args.nodes <= 250:
        raise SoloraError(f"bench fleet --nodes {args.nodes}: expected 2 to 250 (one /24)")
    return {
        "benchmark": "fleet",
        "model": "tiny",
        "nodes": args.nodes,
        "cpu_count": os.cpu_count(),
        **measure(args),
    }
