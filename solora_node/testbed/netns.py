"""A multi-host testbed in network namespaces: K hosts, one node each, on a shared bridge.

Layout for testbed NAME (every object is named after it, so `down` can find it all):

    snt-NAME-br   bridge namespace: bridge br0 at .254 of the subnet, one veth port per host
                  (port hN), and the Debian `prometheus` server scraping every node
    snt-NAME-hN   host namespace: eth0 at .N, one `solora-node run` bound to that address,
                  mDNS pinned to it (discovery.interfaces: [address])

Impairments act on one host's link: a tbf rate limit on both ends of its veth (both
directions) and an nftables table inside the host namespace dropping a share of packets.
`link down` sets the bridge port down, which drops the host off the network while its node
keeps running (like a radio link that fails). State (pids with their kernel start times,
addresses, impairments) lives in WORK_DIR/state.json, so `down` works from another process.

The plan (names, addresses, host state, FAST_BASE) is netns_plan.py; the CLI (netns_cli.py):
python -m solora_node.testbed.netns up|down|status|link|impair ... (root required).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from solora_node.config import deep_merge
from solora_node.testbed import nsnet
from solora_node.testbed.netns_plan import (
    BRIDGE,
    DEFAULT_SUBNET,
    FAST_BASE,
    GRPC_PORT,
    HOST_IF,
    METRICS_PORT,
    PROMETHEUS_PORT,
    READY_TIMEOUT_S,
    STATE_FILE,
    HostState,
    PrometheusState,
    TestbedError,
    TestbedState,
    check_name,
    default_work_dir,
    namespace_prefix,
    plan_hosts,
    prometheus_config,
)


class Testbed:
    """Create, drive and remove one namespace testbed; every change is saved to state.json."""

    __test__ = False  # a name pytest would otherwise try to collect from test modules

    def __init__(self, state: TestbedState, base: Mapping[str, Any] | None = None) -> None:
        self.state = state
        # The node config base; only needed before up() has written the configs.
        self.base: dict[str, Any] = dict(base or FAST_BASE)

    # ------------------------------------------------------------------ construction

    @classmethod
    def plan(
        cls,
        name: str,
        hosts: int,
        *,
        work_dir: Path | None = None,
        base: Mapping[str, Any] | None = None,
        subnet: str = DEFAULT_SUBNET,
        tls: bool = True,
    ) -> Testbed:
        """Compute names, addresses and configs; nothing is created until up()."""
        check_name(name)
        work = (work_dir or default_work_dir(name)).resolve()
        cfg_base = deep_merge(FAST_BASE, base or {})
        tasks = list(cfg_base["federation"]["tasks"])
        net = ipaddress.ip_network(subnet)
        state = TestbedState(
            name=name,
            work_dir=str(work),
            subnet=str(net),
            bridge_namespace=f"{namespace_prefix(name)}br",
            bridge_address=str(net.broadcast_address - 1),
            tls=tls,
            hosts=plan_hosts(name, hosts, tasks, str(net), work),
        )
        return cls(state, cfg_base)

    @classmethod
    def load(cls, work_dir: Path) -> Testbed:
        path = work_dir / STATE_FILE
        try:
            return cls(TestbedState.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except FileNotFoundError:
            raise TestbedError(f"no testbed state at {path} (is it up?)") from None

    @property
    def work_dir(self) -> Path:
        return Path(self.state.work_dir)

    def save(self) -> None:
        path = self.work_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self.state), indent=1), encoding="utf-8")
        tmp.replace(path)

    def host(self, name: str) -> HostState:
        for host in self.state.hosts:
            if name in (host.name, host.node_id, host.namespace):
                return host
        raise TestbedError(f"no host {name!r}; hosts: {[h.name for h in self.state.hosts]}")

    # ------------------------------------------------------------------ up / down

    def up(self, *, prometheus: bool = True, ready_timeout: float = READY_TIMEOUT_S) -> None:
        """Network, certificates, configs, nodes, Prometheus; on any failure, down()."""
        if self.work_dir.exists() and (self.work_dir / STATE_FILE).exists():
            raise TestbedError(f"{self.work_dir} holds a testbed already; run `down` first")
        leftovers = [
            ns for ns in nsnet.list_namespaces() if ns.startswith(namespace_prefix(self.state.name))
        ]
        if leftovers:
            raise TestbedError(f"namespaces of testbed {self.state.name!r} exist: {leftovers}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.save()
            self._build_network()
            self._write_configs()
            for host in self.state.hosts:
                self._start_node(host)
            self.wait_ready(ready_timeout)
            if prometheus:
                self._start_prometheus(ready_timeout)
        except BaseException:
            self.down(keep_work_dir=True)
            raise

    def down(self, *, keep_work_dir: bool = True) -> list[str]:
        """Stop our processes (by pid), delete our namespaces (by name); idempotent.

        Returns what it removed, for the operator."""
        removed: list[str] = []
        processes = [(h.node_id, h.pid, h.start_time) for h in self.state.hosts]
        if self.state.prometheus is not None:
            p = self.state.prometheus
            processes.append(("prometheus", p.pid, p.start_time))
        stopped = set(
            nsnet.stop_processes([(pid, st) for _, pid, st in processes if pid is not None])
        )
        removed += [f"process {label} (pid {pid})" for label, pid, _ in processes if pid in stopped]
        removed += teardown_namespaces(self.state.name)
        for host in self.state.hosts:
            host.pid = host.start_time = None
        if self.state.prometheus is not None:
            self.state.prometheus.pid = self.state.prometheus.start_time = None
        self.state.created = []
        if keep_work_dir:
            (self.work_dir / STATE_FILE).unlink(missing_ok=True)
        elif self.work_dir.exists():
            shutil.rmtree(self.work_dir)
            removed.append(f"work dir {self.work_dir}")
        return removed

    def _created(self, namespace: str) -> None:
        nsnet.add_namespace(namespace)
        self.state.created.append(namespace)
        self.save()

    def _build_network(self) -> None:
        st = self.state
        prefix = ipaddress.ip_network(st.subnet).prefixlen
        self._created(st.bridge_namespace)
        nsnet.add_bridge(st.bridge_namespace, BRIDGE, f"{st.bridge_address}/{prefix}")
        for host in st.hosts:
            self._created(host.namespace)
            nsnet.add_host_link(
                st.bridge_namespace,
                BRIDGE,
                host.port,
                host.namespace,
                HOST_IF,
                f"{host.address}/{prefix}",
            )

    def _write_configs(self) -> None:
        st = self.state
        ca_dir = self.work_dir / "tls"
        if st.tls:
            from solora_node.net.security import init_ca, issue_node_cert, tls_section

            init_ca(ca_dir, f"snt-{st.name}", force=True)
        for host in st.hosts:
            network: dict[str, Any] = {"listen_host": host.address, "port": GRPC_PORT}
            if st.tls:
                # Peers verify the node id (a DNS SAN); the address SAN is for operators
                # who dial a node by IP, e.g. `solora-node status --addr`.
                issue_node_cert(ca_dir, host.node_id, sans=[host.address], force=True)
                network["tls"] = tls_section(ca_dir, host.node_id)
            else:
                network["insecure"] = True
            own = {
                "node": {"id": host.node_id, "data_dir": host.data_dir},
                "federation": {"id": f"snt-{st.name}"},
                "task": {
                    "name": host.task,
                    "shard_index": host.shard_index,
                    "shard_count": host.shard_count,
                },
                "network": network,
                "discovery": {"mdns": True, "interfaces": [host.address]},
                "metrics": {"host": host.address, "port": METRICS_PORT},
            }
            config = deep_merge(self.base, own)
            Path(host.data_dir).mkdir(parents=True, exist_ok=True)
            Path(host.config).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    # ------------------------------------------------------------------ processes

    def _spawn(self, namespace: str, argv: Sequence[str], log_path: str) -> tuple[int, int | None]:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                nsnet.in_ns(namespace, *argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: outlives the CLI that started it and misses its Ctrl-C;
                # `down` stops it by pid.
                start_new_session=True,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1",
                    "OMP_NUM_THREADS": "1",
                },
            )
        return proc.pid, _start_time_of(proc.pid)

    def _start_node(self, host: HostState) -> None:
        (Path(host.data_dir) / "node.json").unlink(missing_ok=True)
        argv = [sys.executable, "-m", "solora_node", "run", "--config", host.config]
        host.pid, host.start_time = self._spawn(host.namespace, argv, host.log)
        self.save()

    def start_node(self, name: str) -> None:
        host = self.host(name)
        if host.pid is not None and nsnet.process_start_time(host.pid) == host.start_time:
            raise TestbedError(f"node {host.node_id} is running (pid {host.pid})")
        self._start_node(host)

    def stop_node(self, name: str, timeout: float = 15.0) -> None:
        host = self.host(name)
        if host.pid is not None:
            nsnet.stop_process(host.pid, host.start_time, timeout)
        host.pid = host.start_time = None
        self.save()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every running node wrote node.json for its current pid."""
        deadline = time.monotonic() + timeout
        for host in self.state.hosts:
            if host.pid is None:
                continue
            info_path = Path(host.data_dir) / "node.json"
            while True:
                if nsnet.process_start_time(host.pid) != host.start_time:
                    raise TestbedError(
                        f"node {host.node_id} exited at start; see {host.log}:\n{self.tail(host)}"
                    )
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                    info = json.loads(info_path.read_text(encoding="utf-8"))
                    if info.get("pid") == host.pid:
                        break
                if time.monotonic() > deadline:
                    raise TestbedError(f"node {host.node_id} not ready after {timeout:.0f} s")
                time.sleep(0.2)

    def _start_prometheus(self, timeout: float) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise TestbedError("prometheus not found (Debian: apt-get install prometheus)")
        prom_dir = self.work_dir / "prometheus"
        (prom_dir / "data").mkdir(parents=True, exist_ok=True)
        config_path = prom_dir / "prometheus.yml"
        config_path.write_text(
            yaml.safe_dump(prometheus_config(self.state.hosts), sort_keys=False), encoding="utf-8"
        )
        promtool = shutil.which("promtool")
        if promtool is not None:
            nsnet.run([promtool, "check", "config", str(config_path)])
        prom = PrometheusState(
            address=self.state.bridge_address,
            config=str(config_path),
            data_dir=str(prom_dir / "data"),
            log=str(prom_dir / "prometheus.log"),
        )
        argv = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={prom.data_dir}",
            f"--web.listen-address={prom.address}:{PROMETHEUS_PORT}",
            "--storage.tsdb.retention.time=1d",
        ]
        prom.pid, prom.start_time = self._spawn(self.state.bridge_namespace, argv, prom.log)
        self.state.prometheus = prom
        self.save()
        deadline = time.monotonic() + timeout
        while True:
            answer = nsnet.http_get_many(self.state.bridge_namespace, [f"{prom.url}/-/ready"])[0]
            if answer["status"] == 200:
                return
            if nsnet.process_start_time(prom.pid) != prom.start_time:
                raise TestbedError(f"prometheus exited at start; see {prom.log}")
            if time.monotonic() > deadline:
                raise TestbedError(f"prometheus not ready after {timeout:.0f} s: {answer['body']}")
            time.sleep(0.5)

    def tail(self, host: HostState, lines: int = 20) -> str:
        path = Path(host.log)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ links

    def set_link(self, name: str, up: bool) -> None:
        """The host's bridge port down (host off the network, node still running) or up."""
        host = self.host(name)
        nsnet.set_link(self.state.bridge_namespace, host.port, up)
        host.link_up = up
        self.save()

    def impair(self, name: str, *, rate: str | None = None, loss: int = 0) -> None:
        """Replace the host link's impairments: rate limit both ways and loss each way."""
        host = self.host(name)
        if rate is not None:
            nsnet.rate_bits(rate)  # refuse a bad rate before changing anything
        nsnet.set_rate(host.namespace, HOST_IF, rate)  # host -> bridge
        nsnet.set_rate(self.state.bridge_namespace, host.port, rate)  # bridge -> host
        nsnet.set_loss(host.namespace, HOST_IF, loss)
        host.rate, host.loss = rate, loss
        self.save()

    # ------------------------------------------------------------------ observation

    def scrape(self, names: Sequence[str] | None = None) -> dict[str, dict[str, float] | None]:
        """Every node's /metrics, fetched from the bridge namespace; None when unreachable."""
        from solora_node.metrics import parse_exposition  # prometheus_client only when used

        hosts = [self.host(n) for n in names] if names else self.state.hosts
        answers = nsnet.http_get_many(
            self.state.bridge_namespace, [h.metrics_url for h in hosts], timeout=3.0
        )
        out: dict[str, dict[str, float] | None] = {}
        for host, answer in zip(hosts, answers, strict=True):
            ok = answer["status"] == 200
            out[host.name] = parse_exposition(str(answer["body"])) if ok else None
        return out

    def prometheus_query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query against the testbed's Prometheus; the result vector."""
        prom = self.state.prometheus
        if prom is None:
            raise TestbedError("this testbed has no prometheus (started with --no-prometheus)")
        url = f"{prom.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        answer = nsnet.http_get_many(self.state.bridge_namespace, [url])[0]
        if answer["status"] != 200:
            raise TestbedError(f"prometheus query {expr!r}: {answer['body']}")
        data = json.loads(str(answer["body"]))
        if data.get("status") != "success":
            raise TestbedError(f"prometheus query {expr!r}: {data}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def status(self) -> dict[str, Any]:
        """Namespaces, links, impairments, processes and each node's headline metrics."""
        existing = set(nsnet.list_namespaces())
        scraped: dict[str, dict[str, float] | None] = {}
        if self.state.bridge_namespace in existing:
            scraped = self.scrape()
        hosts = []
        for h in self.state.hosts:
            m = scraped.get(h.name) or {}
            hosts.append(
                {
                    "host": h.name,
                    "namespace": h.namespace if h.namespace in existing else None,
                    "address": h.address,
                    "node_id": h.node_id,
                    "task": h.task,
                    "pid": h.pid,
                    "running": h.pid is not None
                    and nsnet.process_start_time(h.pid) == h.start_time,
                    "link_up": h.link_up,
                    "rate": h.rate,
                    "loss": h.loss,
                    "reachable": scraped.get(h.name) is not None,
                    "round": m.get("solora_round{}"),
                    "live_peers": m.get("solora_peers{state=live}"),
                    "cluster_size": m.get("solora_cluster_size{}"),
                    "blocks_held": m.get("solora_blocks_held{}"),
                    "bytes_sent": sum(
                        v for k, v in m.items() if k.startswith("solora_bytes_sent_total{")
                    ),
                }
            )
        prom = self.state.prometheus
        return {
            "name": self.state.name,
            "work_dir": self.state.work_dir,
            "bridge_namespace": self.state.bridge_namespace,
            "bridge_address": self.state.bridge_address,
            "hosts": hosts,
            "prometheus": None
            if prom is None
            else {
                "url": prom.url,
                "pid": prom.pid,
                "running": prom.pid is not None
                and nsnet.process_start_time(prom.pid) == prom.start_time,
            },
        }


def _start_time_of(pid: int) -> int | None:
    # Read right after Popen: `ip netns exec` has not exec'd yet, but the pid and its start
    # time are already the ones the exec'd program keeps.
    return nsnet.process_start_time(pid)


def teardown_namespaces(name: str) -> list[str]:
    """Kill every process inside testbed `name`'s namespaces (by pid), delete them by name.

    The fallback for `down` when state.json is missing or stale: it only ever touches
    namespaces whose names start with snt-NAME-."""
    check_name(name)
    prefix = namespace_prefix(name)
    ours = [ns for ns in nsnet.list_namespaces() if ns.startswith(prefix)]
    removed: list[str] = []
    found = [(pid, ns) for ns in ours for pid in nsnet.namespace_pids(ns)]
    stopped = set(
        nsnet.stop_processes([(pid, nsnet.process_start_time(pid)) for pid, _ in found], 5.0)
    )
    removed += [f"process {pid} in {ns}" for pid, ns in found if pid in stopped]
    for ns in ours:
        nsnet.delete_namespace(ns)
        removed.append(f"namespace {ns}")
    return removed


def require_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError("network namespaces need root (run with sudo)")
    if shutil.which("ip") is None:
        raise TestbedError("`ip` not found (Debian: apt-get install iproute2)")


if __name__ == "__main__":
    # `python -m solora_node.testbed.netns` stays the documented command; the CLI
    # itself lives in netns_cli.py.
    from solora_node.testbed.netns_cli import main

    sys.exit(main())
