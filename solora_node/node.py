"""The node daemon: the round loop and the lifecycle around it.

One round reads like DESIGN §3: train -> encode -> exchange -> aggregate -> checkpoint ->
report. There is no global barrier: a node exchanges with whichever neighbours answer
within the deadline and averages the freshest blocks it holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from solora_node import __version__
from solora_node.adapter import (
    BlockVersion,
    block_tensors,
    collision_rate,
    extract_block,
    record_masks,
    set_block_tensors,
)
from solora_node.adapter.checkpoint import save_checkpoint
from solora_node.aggregate import aggregate_blocks
from solora_node.book import BlockBook
from solora_node.checkpoint_guard import CheckpointGuard
from solora_node.config import NodeConfig
from solora_node.identity import identity_verdict, refuse_if_live_elsewhere
from solora_node.incarnation import new_incarnation
from solora_node.learner import LocalLearner
from solora_node.metrics import NodeMetrics
from solora_node.net import store as wire
from solora_node.net.client import PeerClient
from solora_node.net.discovery import Advertisement, Discovery
from solora_node.net.limits import PROTOCOL_VERSION, WireLimits
from solora_node.net.membership import MembershipView, PeerInfo, PeerState
from solora_node.net.reasons import Reason
from solora_node.net.security import load_tls
from solora_node.net.server import PeerServer
from solora_node.net.tls_watch import CERTIFICATE_REFUSALS, TlsWatch
from solora_node.net.topology import Member, TopologyPlan, consensus_distance, plan_topology
from solora_node.ops_metrics import OperatorMetrics
from solora_node.recovery import adopt_copy
from solora_node.startup import (
    check_port_free,
    check_writable_dir,
    os_error_at_start,
    os_failure,
)
from solora_node.store import CheckpointStore, atomic_write_bytes

log = logging.getLogger("solora_node.node")

RUNTIME_INFO = "node.json"
SUMMARY = "summary.json"
ADAPTER_DIR = "adapter"  # inside node.data_dir: the latest model for `solora-node infer`
CHECKPOINT_DIR = "checkpoints"
# The wire's own staleness check is relaxed for the daemon: foreign experts may come from
# a slower cluster and are still the freshest copy; own-task staleness is enforced by the
# book (refused as STALE_ROUND) and by aggregation.
FOREIGN_STALENESS = 1 << 30
MAX_FORGOTTEN = 256  # forgotten peers still re-dialled (bounded against id floods)
REDIAL_EVERY = 5  # liveness intervals between re-dials of forgotten peers
RECOVERY_WINDOW_S = 10.0  # a fresh node waits at most this long for its neighbours' copies
STOP_GRACE_S = 3.0  # SIGTERM -> exit within 10 s: this, the gRPC grace, a checkpoint, goodbye


class WireMetrics:
    """net.observe.WireObserver -> Prometheus counters."""

    def __init__(self, metrics: NodeMetrics, book: BlockBook) -> None:
        self.metrics = metrics
        self.book = book
        self.totals: collections.Counter[tuple[str, str]] = collections.Counter()

    def item_refused(self, peer: str, reason: Reason, *, by_me: bool) -> None:
        if by_me:
            self.metrics.delta_refused(reason)

    def handshake_refused(self, peer: str, reason: Reason, *, by_me: bool) -> None:
        if by_me:
            self.metrics.delta_refused(reason)

    def bytes_moved(self, kind: str, direction: str, nbytes: int) -> None:
        self.totals[(kind, direction)] += nbytes
        if direction == "sent":
            self.metrics.add_bytes_sent(kind, nbytes)
        else:
            self.metrics.add_bytes_received(kind, nbytes)

    def exchange_finished(self, result: wire.ExchangeResult) -> None:
        self.book.exchanges.append(result)
        if not result.ok:
            self.metrics.exchange_failed(result.reason)


class Node:
    """One solora-node process: call `await run()`; `request_stop()` ends it gracefully."""

    def __init__(self, cfg: NodeConfig, learner: LocalLearner | None = None) -> None:
        self.cfg = cfg
        self.node_id = cfg.node.id
        self._learner = learner
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.discovery: Discovery | None = None
        self.rounds_done = 0
        # Peers the view forgot (dead too long). mDNS will not announce them again while
        # their records are cached (PTR TTL 75 min), so after a long partition nobody would
        # ever dial them: we keep re-dialling them, slowly, until one answers.
        self._forgotten: collections.OrderedDict[str, PeerInfo] = collections.OrderedDict()
        self.plan: TopologyPlan | None = None
        self.incarnation = new_incarnation()  # this process's life (solora_node/incarnation.py)
        self.restored = False

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
        tls = load_tls(cfg.network, self.node_id)  # fails before anything is loaded
        check_writable_dir("node.data_dir", cfg.node.data_dir)
        if self._learner is None:
            log.info("loading model %s and task %s", cfg.model.base, cfg.task.name)
            self._learner = await asyncio.to_thread(LocalLearner, cfg)
        self.learner = self._learner
        self.metrics = NodeMetrics(tasks=cfg.federation.tasks)
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
            fingerprint=self.learner.so.fingerprint,
        )
        self.book = BlockBook(
            self.learner,
            node_id=self.node_id,
            federation_id=cfg.federation.id,
            address="",
            staleness_rounds=cfg.topology.staleness_rounds,
            known_peers=self._known_peers,
            on_peer=self._on_peer,
            incarnation=self.incarnation,
        )
        await asyncio.to_thread(self._restore)
        self.metrics.round.set(self.book.round)  # a resumed node reports its round at once
        limits = dataclasses.replace(
            WireLimits.from_config(cfg.network, cfg.topology), staleness_rounds=FOREIGN_STALENESS
        )
        observer = self.observer = WireMetrics(self.metrics, self.book)
        allow = cfg.network.allow_node_ids
        self.server = PeerServer(
            self.book,
            limits=limits,
            tls=tls,
            host=cfg.network.listen_host,
            port=cfg.network.port,
            allow_node_ids=allow,
            observer=observer,
        )
        self.client = PeerClient(
            self.book, limits=limits, tls=tls, allow_node_ids=allow, observer=observer
        )
        # Both ports are checked before either is bound, and mDNS comes after both.
        check_port_free("network.port", cfg.network.listen_host, cfg.network.port)
        if cfg.metrics.enabled:
            check_port_free("metrics.port", cfg.metrics.host, cfg.metrics.port)
        with os_failure("network.port", f"serve gRPC on port {cfg.network.port}"):
            grpc_port = await self.server.start()
        metrics_port = 0
        if cfg.metrics.enabled:
            with os_failure("metrics.port", f"serve metrics on port {cfg.metrics.port}"):
                metrics_port = self.metrics.serve(cfg.metrics.host, cfg.metrics.port)
        advert = Advertisement.from_config(
            cfg,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            protocol=PROTOCOL_VERSION,
            fingerprint=self.learner.so.fingerprint,
            incarnation=self.incarnation,
        )
        self.book.address = f"{advert.hosts[0]}:{grpc_port}" if advert.hosts else ""
        self.view = MembershipView(
            advert.as_peer(),
            cfg.network.liveness_deadline_s,
            bootstrap=cfg.network.bootstrap_peers,
            allow=cfg.network.allow_node_ids,
        )
        self.view.bind(asyncio.get_running_loop())
        self.view.add_listener(self._on_membership)
        # A second live holder of a peer's id is refused (solora_node/identity.py).
        self.server.servicer.admit = functools.partial(identity_verdict, self.view)
        await refuse_if_live_elsewhere(
            self.client,
            self.node_id,
            self.view.bootstrap_addresses,
            confirm_after_s=cfg.network.liveness_deadline_s + cfg.network.health_interval_s,
        )
        if cfg.discovery.mdns:
            self.discovery = Discovery(advert, self.view, interfaces=cfg.discovery.interfaces)
            await self.discovery.start()
        self._tasks = [
            asyncio.create_task(self._liveness_loop(), name="liveness"),
            asyncio.create_task(self._bootstrap_loop(), name="bootstrap"),
        ]
        log.info(
            "node %s (task %s) serving gRPC on %s, metrics on %s, round %d",
            self.node_id,
            cfg.task.name,
            grpc_port,
            metrics_port or "off",
            self.book.round,
        )
        self.grpc_port, self.metrics_port = grpc_port, metrics_port
        with os_failure("node.data_dir", f"write {RUNTIME_INFO}"):
            self._write_runtime_info()

    async def _abort_start(self) -> None:
        """Release what a failed start already holds (ports, lock), so the exit is clean."""
        if getattr(self, "server", None) is not None:
            await self.server.stop(grace=0)
        if getattr(self, "metrics", None) is not None:
            self.metrics.stop()
        if getattr(self, "store", None) is not None:
            self.store.close()

    def _tls_failed(self, reason: str) -> None:
        """A TLS handshake failed (gRPC core's log line): count it, show it in `status`."""
        self.ops.tls_handshake_failed(reason)
        self.book.details["tls_failures"] = self.tls_watch.summary()

    def _write_runtime_info(self) -> None:
        """data_dir/node.json: the ports actually bound (config may say 0) and the pid,
        for operators, the demo and tests; rewritten atomically at every start."""
        info = {
            "node_id": self.node_id,
            "task": self.cfg.task.name,
            "pid": os.getpid(),
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "address": self.book.address,
        }
        atomic_write_bytes(Path(self.cfg.node.data_dir) / RUNTIME_INFO, json.dumps(info).encode())

    async def stop(self) -> None:
        """Stop taking exchanges, checkpoint, say goodbye on mDNS, close everything."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.stop(grace=2.0)
        await asyncio.to_thread(self.checkpoints.save, self._checkpoint, self.book.round)
        if self.discovery is not None:
            await self.discovery.close()
        self.view.unbind()
        await self.client.close()
        self._write_summary()
        self.metrics.stop()
        self.store.close()
        self.tls_watch.uninstall()
        log.info("node %s stopped at round %d", self.node_id, self.book.round)

    def _write_summary(self) -> None:
        """data_dir/summary.json at exit: what this run did (the demo reads it)."""
        summary = {
            "node_id": self.node_id,
            "task": self.cfg.task.name,
            "round": self.book.round,
            "rounds_this_run": self.rounds_done,
            "bytes_sent": {k: self.observer.totals[(k, "sent")] for k in ("delta", "control")},
            "bytes_received": {
                k: self.observer.totals[(k, "received")] for k in ("delta", "control")
            },
            "neighbours": [n.peer.node_id for n in self.book.neighbours],
            "eval_accuracy": self.book.details.get("eval_accuracy"),
        }
        atomic_write_bytes(Path(self.cfg.node.data_dir) / SUMMARY, json.dumps(summary).encode())

    # ------------------------------------------------------------------ the round

    async def round_loop(self) -> None:
        if not self.restored:
            await self._recover_own_expert()
        if not self.learner.calibrated:
            await self._agree_mask()
        max_rounds = self.cfg.rounds.max_rounds
        while not self._stop.is_set() and (max_rounds is None or self.book.round < max_rounds):
            started = time.monotonic()
            # A node that fell behind (restart, late join) jumps to its cluster's round so
            # that its blocks are not refused as stale by everyone.
            round_ = max(self.book.round + 1, self.book.highest_peer_round())
            plan = self._plan()
            losses = await asyncio.to_thread(self.learner.train_round)  # train
            self.book.publish_own(round_, self.cfg.federation.wire_dtype)  # encode
            await self._exchange(plan)  # send/receive
            distance = self._aggregate(plan, round_)  # aggregate
            await asyncio.to_thread(self.checkpoints.save, self._checkpoint, round_)  # checkpoint
            await self._report(round_, losses, distance, time.monotonic() - started)  # report
            self.rounds_done += 1

    async def _recover_own_expert(self) -> None:
        """No checkpoint: first ask the neighbours for copies of our own expert (peers as
        backup, solora_node/recovery.py); give up after one round of exchanges or a bound."""
        self.book.recovery.active = True
        started = time.monotonic()
        alone_for = min(RECOVERY_WINDOW_S, self.cfg.network.liveness_deadline_s)
        while not self._stop.is_set() and time.monotonic() - started < RECOVERY_WINDOW_S:
            plan = self._plan()
            results = await self._exchange(plan)
            if self.book.recovery.best is not None or any(r.ok for r in results):
                break
            if not plan.neighbours(self.node_id) and time.monotonic() - started >= alone_for:
                break  # nobody around to hold a copy: a new node, not a lost one
            await _wait(self._stop, self.cfg.network.health_interval_s)
        copy = self.book.recovery.finish()
        if copy is not None:
            encoding = self.cfg.federation.wire_dtype
            await asyncio.to_thread(adopt_copy, self.learner, self.book, copy, encoding)

    async def _agree_mask(self) -> None:
        """Warm up, then train under the cluster's mask if one exists, else calibrate our own."""
        losses = await asyncio.to_thread(self.learner.warm_up)
        if losses:
            self.metrics.local_steps.inc(len(losses))
        self._plan()
        candidate = self.book.cluster_mask_candidate()
        if candidate is not None:
            await asyncio.to_thread(self.learner.adopt_mask, candidate)
            log.info("adopted cluster mask %s", candidate.mask_id)
        else:
            mask_id = await asyncio.to_thread(self.learner.calibrate)
            log.info("calibrated own mask %s", mask_id)
        self.book.publish_own(self.book.round, self.cfg.federation.wire_dtype)

    def _plan(self) -> TopologyPlan:
        members = [Member(p.node_id, p.task) for p in self.view.live_members()]
        tasks = list(self.cfg.federation.tasks)
        plan = plan_topology(
            [m for m in members if m.task in tasks],
            tasks,
            self.cfg.topology.max_degree,
            self.cfg.topology.bridges_per_cluster,
        )
        if self.plan is None or plan.edges != self.plan.edges:
            log.info(
                "topology: %d nodes, neighbours %s", len(members), plan.neighbours(self.node_id)
            )
        self.plan = plan
        cluster = plan.cluster(self.cfg.task.name)
        self.book.head = cluster.head
        self.book.neighbours = tuple(
            wire.NeighbourStatus(
                peer=wire.PeerInfo(
                    node_id=n, address=self._address(n) or "", task=self._task_of(n)
                ),
                state=_state_name(self.view.state(n)),
                role="cluster" if n in plan.cluster_neighbours(self.node_id) else "bridge",
            )
            for n in plan.neighbours(self.node_id)
        )
        return plan

    async def _exchange(self, plan: TopologyPlan) -> list[wire.ExchangeResult]:
        """One exchange (both directions) with every neighbour, all at once, bounded in time."""
        calls = []
        for peer_id in plan.neighbours(self.node_id):
            address = self._address(peer_id)
            if address is not None:
                calls.append(self.client.exchange(address, expected_node_id=peer_id))
        if not calls:
            return []
        results = await asyncio.gather(*calls)
        for result in results:
            if result.ok:
                self.view.mark_alive(result.peer)
            elif result.reason in CERTIFICATE_REFUSALS:  # it would only flap: leave it out
                self.view.refuse(result.peer, result.reason.value)
            else:
                self.view.mark_failed(result.peer)
        return list(results)

    def _aggregate(self, plan: TopologyPlan, round_: int) -> float:
        """Own task: Metropolis-weighted gossip over fresh same-mask neighbours (§2.4).

        Returns the consensus distance of the blocks that took part (0 when alone)."""
        if self.book.pending_mask is not None:
            record, self.book.pending_mask = self.book.pending_mask, None
            self.learner.adopt_mask(record)
            log.info("adopted the cluster head's mask %s", record.mask_id)
        weights = plan.mixing_weights(self.node_id)
        fresh = self.book.fresh_cluster_blocks(round_)
        peers = [origin for origin in fresh if origin in weights and origin != self.node_id]
        if not peers:
            return 0.0
        own = block_tensors(self.learner.so, self.learner.task)
        theirs = [self.book.dense(fresh[origin]) for origin in peers]
        topo = self.cfg.topology
        merged = aggregate_blocks(
            own,
            theirs,
            [weights[o] for o in peers],
            rule=topo.aggregation,
            trim_fraction=topo.trim_fraction,
            clip_norm=topo.clip_norm,
        )
        set_block_tensors(self.learner.so, self.learner.task, merged)
        for origin in peers:  # each neighbour block is averaged in once
            self.book.cluster_blocks.pop(origin, None)
        self.metrics.delta_applied("own", len(peers))
        return float(consensus_distance([own, *theirs]))

    async def _report(
        self, round_: int, losses: list[float], distance: float, seconds: float
    ) -> None:
        m = self.metrics
        m.rounds.inc()
        m.round.set(round_)
        m.local_steps.inc(len(losses))
        if losses:
            m.train_loss.set(sum(losses) / len(losses))
        m.round_duration.observe(seconds)
        m.consensus_distance.set(distance)
        m.blocks_held.set(len(self.book.held_versions()))
        m.set_peers(**self.view.counts())
        so, task = self.learner.so, self.learner.task
        if self.plan is not None:
            cluster = self.plan.cluster(task)
            m.set_topology(cluster.size, cluster.degree, cluster.spectral_gap)
        if so.has_mask(task):
            masks = so.masks(task)
            m.mask_density.set(
                sum(int(v.sum()) for v in masks.values()) / sum(v.numel() for v in masks.values())
            )
            m.collision_rate.set(self._collision_rate(masks))
        if round_ % self.cfg.metrics.eval_every == 0:
            accuracy = await asyncio.to_thread(
                self.learner.evaluate_own, self.cfg.task.eval_examples
            )
            m.set_eval_accuracy(task, accuracy)
            self.book.details["eval_accuracy"] = f"{accuracy:.4f}"
        if losses:
            self.book.details["train_loss"] = f"{sum(losses) / len(losses):.4f}"
        log.info(
            "round %d: loss %.4f, %d neighbours, consensus distance %.3g, %.1fs",
            round_,
            (sum(losses) / len(losses)) if losses else float("nan"),
            len(self.book.neighbours),
            distance,
            seconds,
        )

    def _collision_rate(self, masks: dict[str, torch.Tensor]) -> float:
        """Mean overlap of our mask with the masks our cluster neighbours' blocks arrived under."""
        rates = []
        for delta in self.book.cluster_blocks.values():
            record = self.book.masks.get(delta.mask_id)
            if record is not None:
                rates.append(collision_rate(masks, record_masks(record)))
        return sum(rates) / len(rates) if rates else 1.0

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, round_: int) -> None:
        with self.learner.lock:
            self._checkpoint_locked(round_)

    def _checkpoint_locked(self, round_: int) -> None:
        so = self.learner.so
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {"round": round_, "masks": {}, "foreign": {}, "codes": []}
        for task in so.tasks:
            for layer, block in block_tensors(so, task).items():
                tensors[f"B/{task}/{layer}"] = block
            if so.has_mask(task):
                meta["masks"][task] = so.mask_id(task)
                for layer, mask in so.masks(task).items():
                    tensors[f"mask/{task}/{layer}"] = mask.to(torch.uint8)
            for layer, code in so.codes.get(task, {}).items():
                tensors[f"code/{task}/{layer}"] = code
        for task, delta in self.book.foreign.items():
            v = delta.version
            meta["foreign"][task] = {
                "round": v.round,
                "origin": v.origin,
                "incarnation": v.incarnation,
            }
        opt_tensors, opt_meta = self.learner.trainer.export_state()
        tensors.update({f"opt/{k}": v for k, v in opt_tensors.items()})
        meta["trainer"] = opt_meta
        self.store.save(round_, tensors, meta)
        save_checkpoint(
            so,
            Path(self.cfg.node.data_dir) / ADAPTER_DIR,
            self.cfg.model.base,
            federation_id=self.cfg.federation.id,
            base_seed=self.cfg.train.seed,
        )

    def _restore(self) -> None:
        ckpt = self.store.load_latest()
        if ckpt is None:
            return
        so, tensors, meta = self.learner.so, ckpt.tensors, ckpt.meta
        for task in so.tasks:
            if task in meta.get("masks", {}):
                so.set_masks(
                    task, {layer: tensors[f"mask/{task}/{layer}"].bool() for layer in so.layers}
                )
            set_block_tensors(so, task, {n: tensors[f"B/{task}/{n}"] for n in so.layers})
            codes = {
                n: tensors[f"code/{task}/{n}"] for n in so.layers if f"code/{task}/{n}" in tensors
            }
            if codes:
                so.codes[task] = codes
        opt = {k.removeprefix("opt/"): v for k, v in tensors.items() if k.startswith("opt/")}
        self.learner.restart_optimizer()
        self.learner.trainer.import_state(opt, meta.get("trainer", {}))
        for task, v in meta.get("foreign", {}).items():
            version = BlockVersion(
                task=task,
                round=int(v["round"]),
                origin=str(v["origin"]),
                incarnation=int(v.get("incarnation", 0)),
            )
            self.book.foreign[task] = extract_block(
                so, task, version, self.cfg.federation.wire_dtype
            )
        self.book.publish_own(int(meta["round"]), self.cfg.federation.wire_dtype)
        self.restored = True
        log.info("resumed from checkpoint round %d (%s)", ckpt.round, ckpt.path)

    # ------------------------------------------------------------------ peers

    def _address(self, node_id: str) -> str | None:
        peer = self.view.peer(node_id)
        if peer is None or not peer.host:
            return None
        host = f"[{peer.host}]" if ":" in peer.host else peer.host
        return f"{host}:{peer.grpc_port}"

    def _task_of(self, node_id: str) -> str:
        peer = self.view.peer(node_id)
        return peer.task if peer is not None else ""

    def _known_peers(self) -> Iterable[wire.PeerInfo]:
        """Peer exchange: the live peers we would tell others about."""
        for peer in self.view.live_members():
            if peer.node_id != self.node_id and peer.host:
                yield wire.PeerInfo(
                    node_id=peer.node_id, address=f"{peer.host}:{peer.grpc_port}", task=peer.task
                )

    def _on_peer(self, ctx: wire.PeerContext) -> None:
        """Every accepted hello: the peer itself (direct) and the peers it knows (hearsay)."""
        hello = ctx.hello
        fed, fp = self.cfg.federation.id, self.learner.so.fingerprint
        # Only the address the peer advertises is dialable: ctx.address is gRPC's view of
        # the caller ("ipv4:HOST:SOURCE_PORT"), whose port is ephemeral.
        host, port = _split(hello.address) or ("", 0)
        if host:
            self.view.report(
                PeerInfo(
                    node_id=hello.node_id,
                    federation=hello.federation_id,
                    task=hello.task,
                    host=host,
                    grpc_port=port,
                    metrics_port=0,
                    protocol=hello.protocol_version,
                    fingerprint=hello.fingerprint,
                    source="bootstrap",
                    incarnation=hello.incarnation,
                )
            )
        for known in hello.peers:
            split = _split(known.address)
            if split is None or known.node_id == self.node_id:
                continue
            self.view.report(
                PeerInfo(
                    node_id=known.node_id,
                    federation=fed,
                    task=known.task,
                    host=split[0],
                    grpc_port=split[1],
                    metrics_port=0,
                    protocol=PROTOCOL_VERSION,
                    fingerprint=fp,
                    source="exchange",
                )
            )

    def _on_membership(self, event: Any) -> None:
        if event.kind == "removed":
            self._forgotten[event.peer.node_id] = event.peer
            self._forgotten.move_to_end(event.peer.node_id)
            while len(self._forgotten) > MAX_FORGOTTEN:
                self._forgotten.popitem(last=False)
        elif event.kind == "added":
            self._forgotten.pop(event.peer.node_id, None)

    async def _redial_forgotten(self) -> None:
        """A handshake with each forgotten peer; an answer reports it to the view again."""
        for node_id, peer in list(self._forgotten.items()):
            host = f"[{peer.host}]" if ":" in peer.host else peer.host
            outcome = await self.client.handshake(f"{host}:{peer.grpc_port}", node_id, timeout=2.0)
            if outcome.ok:
                log.info("forgotten peer %s answered again; it rejoins", node_id)
                self._forgotten.pop(node_id, None)

    async def _liveness_loop(self) -> None:
        """Health-check every known peer with a deadline: mDNS cannot tell who vanished."""
        interval = self.cfg.network.health_interval_s
        checks = 0
        while not self._stop.is_set():
            checks += 1
            if self._forgotten and checks % REDIAL_EVERY == 0:
                await self._redial_forgotten()
            peers = list(self.view.peers())
            results = await asyncio.gather(*(self._check(p) for p in peers))
            for node_id, ok in zip(peers, results, strict=True):
                if ok:
                    self.view.mark_alive(node_id)
                else:
                    self.view.mark_failed(node_id)
            self.metrics.set_peers(**self.view.counts())
            await _wait(self._stop, interval)

    async def _check(self, node_id: str) -> bool:
        address = self._address(node_id)
        if address is None:
            return False
        return await self.client.healthy(
            address, node_id, timeout=min(2.0, self.cfg.network.liveness_deadline_s)
        )

    async def _bootstrap_loop(self) -> None:
        """Dial configured bootstrap peers until each answers (handshake -> peer exchange)."""
        interval = self.cfg.network.health_interval_s
        while not self._stop.is_set():
            for host, port in self.view.undialed_bootstrap():
                outcome = await self.client.handshake(f"{host}:{port}")
                if not outcome.ok:
                    log.debug("bootstrap %s:%d: %s", host, port, outcome.reason.value)
            await _wait(self._stop, interval)


def _state_name(state: PeerState | None) -> str:
    return state.value if state is not None else "unknown"


def _split(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep that ends early when the node is stopping (no bare time.sleep loops)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


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
