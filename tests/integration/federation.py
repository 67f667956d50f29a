"""Helpers for tests that run real node processes on loopback."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from solora_node.metrics import parse_exposition
from solora_node.store import CheckpointStore
from solora_node.testbed.local import LocalFederation, NodeSpec

TINY_BASE: dict[str, Any] = {
    "federation": {
        # Unique per test process: mDNS on 127.0.0.1 is shared by every process on the
        # host, so two test runs at once (or a demo) must not see each other's a1 and r1.
        "id": f"it-fed-{uuid.uuid4().hex[:8]}",
        "tasks": ["arithmetic", "reverse"],
        "rank": 4,
        "warmup_steps": 2,
    },
    "model": {"base": "tiny"},
    "task": {"eval_examples": 8},
    "train": {"steps_per_round": 2, "batch_size": 4, "threads": 1, "lr": 0.01},
    "network": {"liveness_deadline_s": 4.0, "health_interval_s": 0.5},
    "metrics": {"eval_every": 5},
    # Back to back, a checkpoint each round: these runs count rounds (no pacing).
    "rounds": {"min_interval_s": 0, "checkpoint_every_rounds": 1},
    "topology": {"staleness_rounds": 5},
}


def two_by_two() -> list[NodeSpec]:
    """4 nodes over 2 tasks; same-task nodes hold disjoint shards."""
    return [
        NodeSpec("a1", "arithmetic", 0, 2),
        NodeSpec("a2", "arithmetic", 1, 2),
        NodeSpec("r1", "reverse", 0, 2),
        NodeSpec("r2", "reverse", 1, 2),
    ]


def scrape(port: int) -> dict[str, float]:
    """Every sample of a node's /metrics, keyed 'name{label=value,...}'."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return parse_exposition(text)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds. A scrape that fails on the way (a connection reset
    while the node is busy) is one more "not yet"; if the wait times out, the last such
    error is in the message, so a node that died is still reported as such."""
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError as err:  # urllib's URLError and ConnectionResetError among them
            last_error = err
        time.sleep(0.25)
    why = f" (last error: {last_error!r})" if last_error is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{why}")


def latest_checkpoint(data_dir: Path) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    store = CheckpointStore(data_dir / "checkpoints", keep=2, readonly=True)
    ckpt = store.load_latest()
    assert ckpt is not None, f"no checkpoint in {data_dir}"
    return ckpt.round, ckpt.tensors, ckpt.meta


def block(tensors: dict[str, torch.Tensor], task: str) -> torch.Tensor:
    """A task's whole B (all layers) as one flat vector."""
    keys = sorted(k for k in tensors if k.startswith(f"B/{task}/"))
    return torch.cat([tensors[k].flatten().float() for k in keys])


def metric(federation: LocalFederation, node_id: str, name: str) -> float:
    return scrape(federation.nodes[node_id].metrics_port).get(name, 0.0)
