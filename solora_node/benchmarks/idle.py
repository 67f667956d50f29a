"""`bench idle`: CPU a tiny-model node uses when there is little to learn, unpaced vs paced.

Starts a loopback federation of real `solora-node run` processes twice: once with rounds
back to back and a checkpoint every round (the behaviour before pacing), once with the
operator defaults of `rounds.*` (config.RoundsSection). After the nodes have calibrated,
it reads each process's CPU time (utime + stime from /proc/PID/stat) over a window and
reports CPU per node in percent of one core, with the rounds and checkpoints it made.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from solora_node.benchmarks.soak import TINY, current_round
from solora_node.config import RoundsSection
from solora_node.testbed.local import LocalFederation, NodeSpec

SCENARIOS: dict[str, dict[str, Any]] = {
    "unpaced": {"min_interval_s": 0, "checkpoint_every_rounds": 1, "checkpoint_every_s": None},
    "paced": {
        name: RoundsSection.model_fields[name].default
        for name in ("min_interval_s", "checkpoint_every_rounds", "checkpoint_every_s")
    },
}
TICKS = os.sysconf("SC_CLK_TCK")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=2, help="nodes, spread over 2 tasks")
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring window per run")
    parser.add_argument("--settle-rounds", type=int, default=2, help="rounds before measuring")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def checkpoints_written(data_dir: Path) -> int:
    """Checkpoint rounds on disk now (the store keeps the newest few)."""
    folder = data_dir / "checkpoints"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def measure(
    root: Path, rounds_cfg: dict[str, Any], nodes: int, seconds: float, settle: int
) -> dict[str, Any]:
    tasks = [str(t) for t in TINY["federation"]["tasks"]]
    specs = [NodeSpec(f"n{i + 1}", tasks[i % len(tasks)]) for i in range(nodes)]
    base = {**TINY, "rounds": rounds_cfg}
    with LocalFederation(root, specs, base, tls=True) as fed:
        fed.start()
        fed.wait_ready()
        deadline = time.monotonic() + 300
        while not all(current_round(n.metrics_port) >= settle for n in fed.nodes.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench idle: nodes did not reach round {settle} in 300 s")
            time.sleep(0.5)
        pids = {n.node_id: n.proc.pid for n in fed.nodes.values() if n.proc is not None}
        cpu0 = {n: cpu_seconds(pid) for n, pid in pids.items()}
        rounds0 = {n: current_round(fed.nodes[n].metrics_port) for n in pids}
        wall0 = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - wall0
        per_node = {}
        for n, pid in pids.items():
            per_node[n] = {
                "cpu_percent": round(100 * (cpu_seconds(pid) - cpu0[n]) / wall, 1),
                "rounds_per_s": round(
                    (current_round(fed.nodes[n].metrics_port) - rounds0[n]) / wall, 2
                ),
            }
        fed.stop(timeout=20)
    return {
        "rounds": rounds_cfg,
        "window_s": round(wall, 1),
        "per_node": per_node,
        "mean_cpu_percent": round(statistics.mean(p["cpu_percent"] for p in per_node.values()), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="solora-bench-idle-") as tmp:
        for name, rounds_cfg in SCENARIOS.items():
            results[name] = measure(
                Path(tmp) / name, rounds_cfg, args.nodes, args.seconds, args.settle_rounds
            )
    return {
        "benchmark": "idle",
        "model": "tiny",
        "nodes": args.nodes,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "scenarios": results,
    }
