"""`bench soak`: an N-node loopback federation on the tiny model for R rounds, watching every
node process's resident memory and open file descriptors (from /proc).

Growth is measured after a warm-up (allocator pools, gRPC channels, caches and the first
checkpoints all settle in the first rounds) and compared as medians of several samples at
each end, so one sample taken mid-checkpoint cannot make a flat process look leaky.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solora_node.testbed.local import LocalFederation, NodeSpec

TASKS = ("arithmetic", "reverse")
SAMPLES_PER_END = 5  # medians over this many samples at warm-up and at the end
TINY: dict[str, Any] = {
    "federation": {"id": "soak", "tasks": list(TASKS), "rank": 4, "warmup_steps": 2},
    "model": {"base": "tiny"},
    "task": {"eval_examples": 8},
    "train": {"steps_per_round": 2, "batch_size": 4, "threads": 1, "lr": 0.01},
    "network": {"liveness_deadline_s": 4.0, "health_interval_s": 0.5, "exchange_deadline_s": 5.0},
    "metrics": {"eval_every": 5},
    # Back to back, a checkpoint each round: these runs count rounds (no pacing).
    "rounds": {"min_interval_s": 0, "checkpoint_every_rounds": 1},
    "topology": {"staleness_rounds": 5},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=4, help="nodes, spread over 2 tasks")
    parser.add_argument("--rounds", type=int, default=200, help="rounds every node must reach")
    parser.add_argument("--warmup-rounds", type=int, default=None, help="default: 20%% of rounds")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after (s)")
    parser.add_argument("--root", type=Path, default=None, help="keep node dirs/logs here")


@dataclass
class Sample:
    round: int
    rss_kib: int
    fds: int


@dataclass
class NodeTrace:
    node_id: str
    samples: list[Sample] = field(default_factory=list)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def current_round(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("solora_round "):
                return int(float(line.split()[1]))
    return 0


def _growth(before: float, after: float) -> float:
    return 100.0 * (after - before) / before if before else 0.0


def summarise(trace: NodeTrace, warmup_rounds: int) -> dict[str, Any]:
    """Medians of the first samples after warm-up and of the last samples."""
    settled = [s for s in trace.samples if s.round >= warmup_rounds]
    if len(settled) < 2 * SAMPLES_PER_END:
        settled = trace.samples[len(trace.samples) // 3 :]  # short runs: drop the first third
    k = max(1, min(SAMPLES_PER_END, len(settled) // 2))
    head, tail = settled[:k], settled[-k:]
    rss0 = statistics.median(s.rss_kib for s in head)
    rss1 = statistics.median(s.rss_kib for s in tail)
    fd0 = statistics.median(s.fds for s in head)
    fd1 = statistics.median(s.fds for s in tail)
    return {
        "rounds": trace.samples[-1].round if trace.samples else 0,
        "samples": len(trace.samples),
        "rss_mib_warm": round(rss0 / 1024, 1),
        "rss_mib_end": round(rss1 / 1024, 1),
        "rss_mib_max": round(max(s.rss_kib for s in trace.samples) / 1024, 1),
        "rss_growth_pct": round(_growth(rss0, rss1), 2),
        "fds_warm": fd0,
        "fds_end": fd1,
        "fds_max": max(s.fds for s in trace.samples),
        "fd_growth_pct": round(_growth(fd0, fd1), 2),
    }


def soak(
    root: Path,
    *,
    nodes: int = 4,
    rounds: int = 200,
    warmup_rounds: int | None = None,
    interval: float = 1.0,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    specs = []
    for i in range(nodes):
        task = TASKS[i % len(TASKS)]
        per_task = len(range(i % len(TASKS), nodes, len(TASKS)))
        specs.append(NodeSpec(f"{task[0]}{i // len(TASKS) + 1}", task, i // len(TASKS), per_task))
    warmup = warmup_rounds if warmup_rounds is not None else max(5, rounds // 5)
    traces = {s.node_id: NodeTrace(s.node_id) for s in specs}
    started = time.monotonic()
    with LocalFederation(root, specs, TINY, tls=True) as fed:
        fed.start()
        fed.wait_ready()
        ready_s = time.monotonic() - started
        deadline = time.monotonic() + timeout
        while True:
            for node in fed.nodes.values():
                if not node.running() or node.proc is None:
                    raise RuntimeError(f"{node.node_id} exited:\n{fed.tail(node.node_id, 30)}")
                traces[node.node_id].samples.append(
                    Sample(
                        current_round(node.metrics_port),
                        rss_kib(node.proc.pid),
                        open_fds(node.proc.pid),
                    )
                )
            if all(t.samples[-1].round >= rounds for t in traces.values()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"soak: not all nodes reached round {rounds} in {timeout} s")
            time.sleep(interval)
        run_s = time.monotonic() - started - ready_s
        codes = fed.stop(timeout=20)
    per_node = {n: summarise(t, warmup) for n, t in traces.items()}
    return {
        "nodes": nodes,
        "rounds_target": rounds,
        "warmup_rounds": warmup,
        "interval_s": interval,
        "startup_s": round(ready_s, 1),
        "run_s": round(run_s, 1),
        "exit_codes": codes,
        "per_node": per_node,
        "max_rss_growth_pct": max(p["rss_growth_pct"] for p in per_node.values()),
        "max_fd_growth_pct": max(p["fd_growth_pct"] for p in per_node.values()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup_rounds,
        "interval": args.interval,
        "timeout": args.timeout,
    }
    if args.root is not None:
        return soak(args.root, **kwargs)
    with tempfile.TemporaryDirectory(prefix="solora-soak-") as tmp:
        return soak(Path(tmp), **kwargs)
