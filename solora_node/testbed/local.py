"""A federation of real `solora-node run` processes on this machine (loopback).

Each node gets its own config file, data dir and log; mDNS is pinned to 127.0.0.1, ports
are ephemeral (the node reports them in data_dir/node.json), and TLS uses a throw-away
federation CA unless asked otherwise. Every process is stopped on exit, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from solora_node.config import deep_merge
from solora_node.errors import SoloraError

READY_TIMEOUT_S = 180.0


@dataclass
class NodeSpec:
    node_id: str
    task: str
    shard_index: int = 0
    shard_count: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeProcess:
    spec: NodeSpec
    config_path: Path
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    grpc_port: int = 0
    metrics_port: int = 0

    @property
    def node_id(self) -> str:
        return self.spec.node_id

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def make_ca(root: Path, federation_id: str, node_ids: list[str]) -> Path:
    """A throw-away federation CA and one certificate per node under root/tls."""
    from solora_node.net.security import init_ca, issue_node_cert

    ca_dir = root / "tls"
    init_ca(ca_dir, federation_id, force=True)
    for node_id in node_ids:
        issue_node_cert(ca_dir, node_id, force=True)
    return ca_dir


class LocalFederation:
    """Write configs, start, watch, stop and clean up a set of node processes."""

    def __init__(
        self,
        root: Path,
        specs: list[NodeSpec],
        base: Mapping[str, Any],
        *,
        tls: bool = True,
        python: str = sys.executable,
    ) -> None:
        self.root = root
        self.base = dict(base)
        self.python = python
        self.tls = tls
        self.nodes: dict[str, NodeProcess] = {}
        root.mkdir(parents=True, exist_ok=True)
        federation_id = str(self.base.get("federation", {}).get("id", "solora-local"))
        self.ca_dir = make_ca(root, federation_id, [s.node_id for s in specs]) if tls else None
        for spec in specs:
            self.nodes[spec.node_id] = self._prepare(spec, self.ca_dir)

    def reconfigure(self, node_id: str, overrides: Mapping[str, Any]) -> None:
        """Rewrite one node's config (e.g. bootstrap peers once the others have ports)."""
        spec = self.nodes[node_id].spec
        spec.overrides = deep_merge(spec.overrides, overrides)
        proc = self.nodes[node_id].proc
        self.nodes[node_id] = self._prepare(spec, self.ca_dir)
        self.nodes[node_id].proc = proc

    def _prepare(self, spec: NodeSpec, ca_dir: Path | None) -> NodeProcess:
        data_dir = self.root / spec.node_id
        data_dir.mkdir(parents=True, exist_ok=True)
        network: dict[str, Any] = {"listen_host": "127.0.0.1", "port": 0}
        if ca_dir is not None:
            from solora_node.net.security import tls_section

            network["tls"] = tls_section(ca_dir, spec.node_id)
        else:
            network["insecure"] = True
        own = {
            "node": {"id": spec.node_id, "data_dir": str(data_dir)},
            "task": {
                "name": spec.task,
                "shard_index": spec.shard_index,
                "shard_count": spec.shard_count,
            },
            "network": network,
            "discovery": {"interfaces": ["127.0.0.1"]},
            "metrics": {"host": "127.0.0.1", "port": 0},
        }
        config = deep_merge(deep_merge(self.base, own), spec.overrides)
        config_path = self.root / f"{spec.node_id}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return NodeProcess(spec, config_path, data_dir, self.root / f"{spec.node_id}.log")

    # ------------------------------------------------------------------ processes

    def start(self, node_id: str | None = None) -> None:
        for node in self._select(node_id):
            info = node.data_dir / "node.json"
            info.unlink(missing_ok=True)
            log = node.log_path.open("ab")
            node.proc = subprocess.Popen(
                [self.python, "-m", "solora_node", "run", "--config", str(node.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            log.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, node_id: str | None = None) -> None:
        """Until each selected node has written node.json for its current process."""
        deadline = time.monotonic() + timeout
        for node in self._select(node_id):
            info_path = node.data_dir / "node.json"
            while True:
                if node.proc is not None and node.proc.poll() is not None:
                    raise SoloraError(
                        f"node {node.node_id} exited with {node.proc.returncode} at start; "
                        f"see {node.log_path}:\n{self.tail(node.node_id)}"
                    )
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                    info = json.loads(info_path.read_text(encoding="utf-8"))
                    if node.proc is not None and info.get("pid") == node.proc.pid:
                        node.grpc_port = int(info["grpc_port"])
                        node.metrics_port = int(info["metrics_port"])
                        break
                if time.monotonic() > deadline:
                    raise SoloraError(f"node {node.node_id} not ready after {timeout:.0f} s")
                time.sleep(0.1)

    def signal(self, node_id: str, sig: int) -> None:
        node = self.nodes[node_id]
        if node.running() and node.proc is not None:
            node.proc.send_signal(sig)

    def wait_exit(self, node_id: str, timeout: float) -> int | None:
        node = self.nodes[node_id]
        if node.proc is None:
            return None
        try:
            return node.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM everyone, wait, SIGKILL stragglers; returns the exit codes."""
        for node in self.nodes.values():
            if node.running() and node.proc is not None:
                node.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            if node.proc is None:
                continue
            try:
                codes[node.node_id] = node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
                codes[node.node_id] = None
        return codes

    def kill_all(self) -> None:
        for node in self.nodes.values():
            if node.running() and node.proc is not None:
                node.proc.kill()
                node.proc.wait()

    def tail(self, node_id: str, lines: int = 20) -> str:
        path = self.nodes[node_id].log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _select(self, node_id: str | None) -> list[NodeProcess]:
        return list(self.nodes.values()) if node_id is None else [self.nodes[node_id]]

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()
