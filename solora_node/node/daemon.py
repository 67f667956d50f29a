"""The node daemon: lifecycle (start, run, stop, signals); the round loop is node/rounds.py.

One round reads like docs/node.md: train -> encode -> exchange -> aggregate ->
checkpoint -> report. The policy (what to accept, which blocks to average, mask
agreement) is federation/; this module only moves data between it, the learner, the
gRPC transport, the disk and the metrics. There is no global barrier: a node exchanges
with whichever neighbours answer within the deadline and averages what it holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from solora_node import __version__
from solora_node.config import NodeConfig
from solora_node.data_dir import CHECKPOINT_DIR, RUNTIME_INFO, SUMMARY
from solora_node.durable import atomic_write_bytes
from solora_node.federation import round as round_step
from solora_node.federation.aggregate import AggregationRule
from solora_node.federation.holding import Holding
from solora_node.federation.ledger import Ledger
from solora_node.federation.port import LedgerPort
from solora_node.federation.topology import TopologyPlan
from solora_node.metrics import NodeMetrics
from solora_node.model import load_base_model
from solora_node.net.client import PeerClient
from solora_node.net.discovery import Advertisement, Discovery
from solora_node.net.limits import WireLimits
from solora_node.net.membership import MembershipView
from solora_node.net.security import load_tls
from solora_node.net.server import PeerServer
from solora_node.net.tls_watch import TlsWatch
from solora_node.node import telemetry
from solora_node.node.checkpoint_guard import CheckpointGuard
from solora_node.node.compute import ComputeMeter
from solora_node.node.exchanges import BackgroundExchanges
from solora_node.node.identity import identity_verdict, new_incarnation, refuse_if_live_elsewhere
from solora_node.node.learner import LocalLearner
from solora_node.node.pacing import Pacer
from solora_node.node.page import NodePage
from solora_node.node.peers import Peers
from solora_node.node.phases import StartupPhases
from solora_node.node.rounds import RoundLoop
from solora_node.node.snapshot import restore_snapshot
from solora_node.node.startup import (
    check_port_free,
    check_writable_dir,
    os_error_at_start,
    os_failure,
)
from solora_node.ops_metrics import OperatorMetrics
from solora_node.protocol.messages import PROTOCOL_VERSION
from solora_node.serving.live import LiveServing
from solora_node.store import CheckpointStore

log = logging.getLogger("solora_node.node")

# The wire's own staleness check is relaxed for the daemon: foreign experts may come from
# a slower cluster and are still the freshest copy; own-task staleness is enforced by the
# ledger (refused as STALE_ROUND) and by aggregation.
FOREIGN_STALENESS = 1 << 30
STOP_GRACE_S = 3.0  # SIGTERM -> exit within 10 s: this, the gRPC grace, a checkpoint, goodbye


class Node(RoundLoop):
    """One solora-node process: call `await run()`; `request_stop()` ends it gracefully."""

    def __init__(self, cfg: NodeConfig, learner: LocalLearner | None = None) -> None:
        self.cfg = cfg
        self.node_id = cfg.node.id
        self._learner = learner
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.discovery: Discovery | None = None
        self.rounds_done = 0
        self.plan: TopologyPlan | None = None
        self.codes = round_step.CodesSchedule()
        topo = cfg.topology
        self.rule = AggregationRule(topo.aggregation, topo.trim_fraction, topo.clip_norm)
        self.incarnation = new_incarnation()  # this process's life (docs/protocol.md)
        self.restored = False
        self.serving: LiveServing | None = None  # the HTTP API, when serving.enabled
        rounds = cfg.rounds
        self.pacer = Pacer(
            rounds.min_interval_s, rounds.checkpoint_every_rounds, rounds.checkpoint_every_s
        )
        self.compute = ComputeMeter()
        self.background = BackgroundExchanges(
            lambda address, peer: self.client.exchange(address, expected_node_id=peer),
            lambda results: self.peers.record_exchanges(results),
        )

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        try:
            await self.start()
        except BaseException as exc:
            await self._abort_start()
            if isinstance(exc, OSError):  # one not anticipated above: still one line
                raise os_error_at_start(exc) from None
            raise
        rounds = asyncio.create_task(self.round_loop(), name="rounds")
        stopping = asyncio.create_task(self._stop.wait(), name="stop-signal")
        try:
            await asyncio.wait({rounds, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not rounds.done():
                # Let a round that is nearly done finish; a long exchange is cancelled
                # (peers see a cancelled stream and keep what was acknowledged).
                done, _ = await asyncio.wait({rounds}, timeout=STOP_GRACE_S)
                if not done:
                    rounds.cancel()
            await asyncio.gather(rounds, return_exceptions=True)
            if rounds.done() and not rounds.cancelled() and rounds.exception() is not None:
                raise rounds.exception()  # type: ignore[misc]
        finally:
            stopping.cancel()
            await self.stop()

    async def start(self) -> None:
        cfg = self.cfg
        phases = StartupPhases()
        with phases.phase("loading TLS material"):
            tls = load_tls(cfg.network, self.node_id)  # fails before anything is loaded
        check_writable_dir("node.data_dir", cfg.node.data_dir)
        if self._learner is None:
            with phases.phase(f"loading model {cfg.model.base}"):
                loaded = await asyncio.to_thread(
                    load_base_model, cfg.model.base, cfg.model.cache_dir, seed=cfg.train.seed
                )
            with phases.phase(f"preparing adapter and task {cfg.task.name}"):
                self._learner = await asyncio.to_thread(LocalLearner, cfg, loaded)
        learner = self.learner = self._learner
        so = learner.so
        self.metrics = NodeMetrics(tasks=cfg.federation.tasks)
        self.metrics.compute_utilization.set_function(self.compute.utilisation)
        self.metrics.set_info(
            node_id=self.node_id,
            task=cfg.task.name,
            federation=cfg.federation.id,
            version=__version__,
        )
        self.ops = OperatorMetrics(self.metrics.registry)
        self.checkpoints = CheckpointGuard(self.ops.checkpoint_skipped)
        if tls is not None:
            self.ops.certificate_expiry.set(tls.expiry_timestamp)
        self.tls_watch = TlsWatch(self._tls_failed)
        self.tls_watch.install()
        self.store = CheckpointStore(
            Path(cfg.node.data_dir) / CHECKPOINT_DIR,
            keep=cfg.rounds.checkpoint_keep,
            node_id=self.node_id,
            federation=cfg.federation.id,
            fingerprint=so.fingerprint,
        )
        self.ledger = Ledger(
            self.node_id,
            cfg.task.name,
            so.tasks,
            cfg.topology.staleness_rounds,
            installer=learner.install_foreign,
            codes_installer=learner.install_codes,
            holding=Holding(cfg.task.name, so.tasks, cfg.federation.max_foreign_experts),
            incarnation=self.incarnation,
        )
        self.port = LedgerPort(
            self.ledger,
            federation_id=cfg.federation.id,
            fingerprint=so.fingerprint,
            block_shapes=so.block_shapes(),
            code_shapes={name: (so.shapes[name][1],) for name in so.code_layers},
            known_peers=lambda: self.peers.known_peers(),
            on_peer=lambda ctx: self.peers.on_peer(ctx),
        )
        with phases.phase("restoring the latest checkpoint"):
            await asyncio.to_thread(self._restore)
        self.metrics.round.set(self.ledger.round)  # a resumed node reports its round at once
        limits = dataclasses.replace(
            WireLimits.from_config(cfg.network, cfg.topology), staleness_rounds=FOREIGN_STALENESS
        )
        observer = self.observer = telemetry.WireMetrics(self.metrics, self.port)
        allow = cfg.network.allow_node_ids
        self.server = PeerServer(
            self.port,
            limits=limits,
            tls=tls,
            host=cfg.network.listen_host,
            port=cfg.network.port,
            allow_node_ids=allow,
            observer=observer,
        )
        self.client = PeerClient(
            self.port, limits=limits, tls=tls, allow_node_ids=allow, observer=observer
        )
        # Both ports are checked before either is bound, and mDNS comes after both.
        check_port_free("network.port", cfg.network.listen_host, cfg.network.port)
        if cfg.metrics.enabled:
            check_port_free("metrics.port", cfg.metrics.host, cfg.metrics.port)
        with phases.phase("binding gRPC and metrics ports"):
            with os_failure("network.port", f"serve gRPC on port {cfg.network.port}"):
                grpc_port = await self.server.start()
            metrics_port = 0
            page = self._node_page()
            if cfg.metrics.enabled:
                with os_failure("metrics.port", f"serve metrics on port {cfg.metrics.port}"):
                    metrics_port = self.metrics.serve(
                        cfg.metrics.host, cfg.metrics.port, page.render
                    )
            if cfg.serving.enabled:
                with os_failure("serving.port", f"serve the HTTP API on port {cfg.serving.port}"):
                    self.serving = await LiveServing.start(
                        cfg.serving, self.learner, self.ledger.round, self._route_hook()
                    )
        advert = Advertisement.from_config(
            cfg,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            protocol=PROTOCOL_VERSION,
            fingerprint=so.fingerprint,
            incarnation=self.incarnation,
        )
        self.port.address = f"{advert.hosts[0]}:{grpc_port}" if advert.hosts else ""
        self.view = MembershipView(
            advert.as_peer(),
            cfg.network.liveness_deadline_s,
            bootstrap=cfg.network.bootstrap_peers,
            allow=cfg.network.allow_node_ids,
        )
        self.view.bind(asyncio.get_running_loop())
        self.peers = Peers(cfg, self.view, self.client, so.fingerprint, self._stop)
        # A second live holder of a peer's id is refused (node/identity.py).
        self.server.servicer.admit = functools.partial(identity_verdict, self.view)
        await refuse_if_live_elsewhere(
            self.client,
            self.node_id,
            self.view.bootstrap_addresses,
            confirm_after_s=cfg.network.liveness_deadline_s + cfg.network.health_interval_s,
        )
        if cfg.discovery.mdns:
            with phases.phase("starting mDNS discovery"):
                self.discovery = Discovery(advert, self.view, interfaces=cfg.discovery.interfaces)
                await self.discovery.start()
        self._tasks = [
            asyncio.create_task(self.peers.liveness_loop(self.metrics), name="liveness"),
            asyncio.create_task(self.peers.bootstrap_loop(), name="bootstrap"),
        ]
        log.info(
            "node %s (task %s) serving gRPC on %s, metrics on %s, round %d",
            self.node_id,
            cfg.task.name,
            grpc_port,
            metrics_port or "off",
            self.ledger.round,
        )
        self.grpc_port, self.metrics_port = grpc_port, metrics_port
        with os_failure("node.data_dir", f"write {RUNTIME_INFO}"):
            self._write_runtime_info()
        phases.finished()

    def _node_page(self) -> NodePage:
        """The page at / on the metrics port (node/page.py)."""
        cfg = self.cfg
        self.page = NodePage(
            node_id=self.node_id,
            task=cfg.task.name,
            federation=cfg.federation.id,
            version=__version__,
            data_dir=str(cfg.node.data_dir),
            checkpoint_policy=self.pacer.describe(),
            registry=self.metrics.registry,
        )
        return self.page

    async def _abort_start(self) -> None:
        """Release what a failed start already holds (ports, lock), so the exit is clean."""
        if getattr(self, "server", None) is not None:
            await self.server.stop(grace=0)
        if self.serving is not None:
            await self.serving.stop()
        if getattr(self, "metrics", None) is not None:
            self.metrics.stop()
        if getattr(self, "store", None) is not None:
            self.store.close()

    def _route_hook(self) -> Callable[[str, bool], None]:
        """Serving's routing, told to the ledger on the event loop (requests route in a worker
        thread): a prompt routed to an expert not held is a miss, wanted from the next
        exchange (federation/holding.py)."""
        loop = asyncio.get_running_loop()

        def on_route(task: str, held: bool) -> None:
            if not held:
                self.metrics.expert_missed(task)
            loop.call_soon_threadsafe(functools.partial(self.ledger.record_route, task, held=held))

        return on_route

    def _tls_failed(self, reason: str) -> None:
        """A TLS handshake failed (gRPC core's log line): count it, show it in `status`."""
        self.ops.tls_handshake_failed(reason)
        self.port.details["tls_failures"] = self.tls_watch.summary()

    def _write_runtime_info(self) -> None:
        """data_dir/node.json: the ports actually bound (config may say 0) and the pid,
        for operators, the demo and tests; rewritten atomically at every start."""
        info = {
            "node_id": self.node_id,
            "task": self.cfg.task.name,
            "pid": os.getpid(),
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "serving_port": self.serving.port if self.serving is not None else 0,
            "address": self.port.address,
        }
        atomic_write_bytes(Path(self.cfg.node.data_dir) / RUNTIME_INFO, json.dumps(info).encode())

    async def stop(self) -> None:
        """Stop taking exchanges, checkpoint, say goodbye on mDNS, close everything."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.stop(grace=2.0)
        if self.serving is not None:
            await self.serving.stop()
        await asyncio.to_thread(self.checkpoints.save, self._checkpoint, self.ledger.round)
        if self.discovery is not None:
            await self.discovery.close()
        self.view.unbind()
        await self.client.close()
        self._write_summary()
        self.metrics.stop()
        self.store.close()
        self.tls_watch.uninstall()
        log.info("node %s stopped at round %d", self.node_id, self.ledger.round)

    def _write_summary(self) -> None:
        """data_dir/summary.json at exit: what this run did (the demo reads it)."""
        totals = self.observer.totals
        summary = {
            "node_id": self.node_id,
            "task": self.cfg.task.name,
            "round": self.ledger.round,
            "rounds_this_run": self.rounds_done,
            "bytes_sent": {k: totals[(k, "sent")] for k in ("delta", "control")},
            "bytes_received": {k: totals[(k, "received")] for k in ("delta", "control")},
            "items_sent": self.observer.items_sent,
            "neighbours": [n.peer.node_id for n in self.port.neighbours],
            "eval_accuracy": self.port.details.get("eval_accuracy"),
        }
        atomic_write_bytes(Path(self.cfg.node.data_dir) / SUMMARY, json.dumps(summary).encode())

    # ------------------------------------------------------------------ checkpoints

    def _restore(self) -> None:
        restored = restore_snapshot(self.store, self.learner, self.ledger, self.cfg)
        if restored is None:
            return
        round_, path = restored
        self.restored = True
        self._publish(round_)
        log.info("resumed from checkpoint round %d (%s)", round_, path)


def _stop_on_signal(node: Node, sig: int) -> None:
    log.info("received %s: stopping gracefully", signal.Signals(sig).name)
    node.request_stop()


async def run_node(cfg: NodeConfig) -> int:
    """Run until SIGTERM/SIGINT/SIGHUP or max_rounds; exit code 0 on a graceful stop."""
    node = Node(cfg)
    loop = asyncio.get_running_loop()
    # SIGHUP (terminal closed, `kill -HUP`) is a graceful stop too: see docs/operations.md.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, _stop_on_signal, node, sig)
    await node.run()
    return 0
