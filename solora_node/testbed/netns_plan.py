"""The plan of a namespace testbed: names, addresses and ports, each host's state, the
fast node settings and the Prometheus scrape config. Pure data, no side effects; the
testbed that acts on it is netns.py."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solora_node.errors import SoloraError

NAME_PATTERN = re.compile(r"^[a-z0-9]{1,12}$")
NAMESPACE_PREFIX = "snt"
DEFAULT_SUBNET = "10.77.0.0/24"
BRIDGE = "br0"
HOST_IF = "eth0"
# Every host has its own namespace, hence its own port space: fixed ports keep the
# Prometheus config static and the addresses readable.
GRPC_PORT = 7070
METRICS_PORT = 9100
PROMETHEUS_PORT = 9090
READY_TIMEOUT_S = 240.0
STATE_FILE = "state.json"

# Small and fast: the tiny model, two steps a round, a 4 s liveness deadline. Exchanges
# get a deadline well under the default so that a round with a vanished neighbour does
# not stall for a minute, yet long enough for a few KB over a lossy 2 Mbit/s link.
FAST_BASE: dict[str, Any] = {
    "federation": {"tasks": ["arithmetic", "reverse"], "rank": 4, "warmup_steps": 2},
    "model": {"base": "tiny"},
    "task": {"eval_examples": 8},
    "train": {"steps_per_round": 2, "batch_size": 4, "threads": 1, "lr": 0.01},
    "network": {
        "liveness_deadline_s": 4.0,
        "health_interval_s": 0.5,
        "exchange_deadline_s": 20.0,
        "chunk_deadline_s": 10.0,
    },
    "metrics": {"eval_every": 5},
    # Back to back, a checkpoint each round: these runs count rounds (no pacing).
    "rounds": {"min_interval_s": 0, "checkpoint_every_rounds": 1},
    "topology": {"staleness_rounds": 5},
}


class TestbedError(SoloraError):
    """The testbed cannot do what was asked; the message says what and why."""

    __test__ = False  # a name pytest would otherwise try to collect from test modules


def namespace_prefix(name: str) -> str:
    return f"{NAMESPACE_PREFIX}-{name}-"


def default_work_dir(name: str) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"solora-netns-{name}"


def check_name(name: str) -> str:
    # No '-' in names: then the prefix snt-NAME- can never match another testbed's objects.
    if not NAME_PATTERN.match(name):
        raise TestbedError(f"testbed name {name!r} must match {NAME_PATTERN.pattern}")
    return name


@dataclass
class HostState:
    name: str
    namespace: str
    address: str
    port: str
    node_id: str
    task: str
    shard_index: int
    shard_count: int
    config: str
    data_dir: str
    log: str
    pid: int | None = None
    start_time: int | None = None
    link_up: bool = True
    rate: str | None = None
    loss: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{METRICS_PORT}/metrics"

    @property
    def grpc_address(self) -> str:
        return f"{self.address}:{GRPC_PORT}"


@dataclass
class PrometheusState:
    address: str
    config: str
    data_dir: str
    log: str
    pid: int | None = None
    start_time: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{PROMETHEUS_PORT}"


@dataclass
class TestbedState:
    name: str
    work_dir: str
    subnet: str
    bridge_namespace: str
    bridge_address: str
    tls: bool
    hosts: list[HostState] = field(default_factory=list)
    prometheus: PrometheusState | None = None
    # Namespaces created so far, in order: a failed `up` tears down exactly these.
    created: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TestbedState:
        raw = dict(data)
        hosts = [HostState(**h) for h in raw.pop("hosts", [])]
        prom = raw.pop("prometheus", None)
        return cls(**raw, hosts=hosts, prometheus=PrometheusState(**prom) if prom else None)


def plan_hosts(
    name: str, count: int, tasks: Sequence[str], subnet: str, work_dir: Path
) -> list[HostState]:
    """Host i gets task i mod len(tasks); same-task hosts get disjoint shards."""
    net = ipaddress.ip_network(subnet)
    if count < 1 or count + 2 > net.num_addresses - 2:
        raise TestbedError(f"{count} hosts do not fit in {subnet} (bridge takes the last address)")
    task_of = [tasks[i % len(tasks)] for i in range(count)]
    hosts = []
    for i in range(count):
        host = f"h{i + 1}"
        task = task_of[i]
        hosts.append(
            HostState(
                name=host,
                namespace=f"{namespace_prefix(name)}{host}",
                address=str(net.network_address + i + 1),
                port=host,
                node_id=host,
                task=task,
                shard_index=task_of[:i].count(task),
                shard_count=task_of.count(task),
                config=str(work_dir / f"{host}.yaml"),
                data_dir=str(work_dir / host),
                log=str(work_dir / f"{host}.log"),
            )
        )
    return hosts


def prometheus_config(hosts: Sequence[HostState], interval_s: float = 2.0) -> dict[str, Any]:
    """One static target per node, labelled with its node id and task."""
    return {
        "global": {
            "scrape_interval": f"{interval_s:g}s",
            "scrape_timeout": f"{max(1.0, interval_s / 2):g}s",
            "evaluation_interval": f"{interval_s:g}s",
        },
        "scrape_configs": [
            {
                "job_name": "solora",
                "static_configs": [
                    {
                        "targets": [f"{h.address}:{METRICS_PORT}"],
                        "labels": {"node": h.node_id, "task": h.task, "host": h.name},
                    }
                    for h in hosts
                ],
            }
        ],
    }
