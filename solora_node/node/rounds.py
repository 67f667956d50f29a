"""The round loop of the daemon: train -> encode -> exchange -> aggregate -> checkpoint ->
report, wiring the federation core's round step (federation/round.py) to the learner, the
gRPC client, the disk and the metrics. `Node` (node/daemon.py) owns the lifecycle and
builds what this loop uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from solora_node.config import NodeConfig
from solora_node.federation import round as round_step
from solora_node.federation.aggregate import AggregationRule
from solora_node.federation.ledger import Ledger
from solora_node.federation.port import LedgerPort
from solora_node.federation.topology import Member, TopologyPlan, plan_topology
from solora_node.metrics import NodeMetrics
from solora_node.net.client import PeerClient
from solora_node.net.membership import MembershipView
from solora_node.node import telemetry
from solora_node.node.checkpoint_guard import CheckpointGuard
from solora_node.node.compute import ComputeMeter
from solora_node.node.exchanges import BackgroundExchanges
from solora_node.node.learner import LocalLearner
from solora_node.node.pacing import Pacer
from solora_node.node.page import NodePage, peer_rows
from solora_node.node.peers import Peers, wait_or_stop
from solora_node.node.recovery import adopt_copy
from solora_node.node.snapshot import save_snapshot
from solora_node.protocol import messages as wire
from solora_node.protocol.blocks import BlockVersion
from solora_node.protocol.topology import live_view
from solora_node.serving.live import LiveServing
from solora_node.store import CheckpointStore

log = logging.getLogger("solora_node.node")

RECOVERY_WINDOW_S = 10.0  # a fresh node waits at most this long for its neighbours' copies


class RoundLoop:
    """The round half of `Node`: every attribute below is set by `Node.start()`."""

    cfg: NodeConfig
    node_id: str
    learner: LocalLearner
    ledger: Ledger
    port: LedgerPort
    peers: Peers
    view: MembershipView
    client: PeerClient
    metrics: NodeMetrics
    observer: telemetry.WireMetrics
    store: CheckpointStore
    checkpoints: CheckpointGuard
    page: NodePage
    pacer: Pacer
    compute: ComputeMeter
    background: BackgroundExchanges
    serving: LiveServing | None
    codes: round_step.CodesSchedule
    rule: AggregationRule
    plan: TopologyPlan | None
    incarnation: int
    restored: bool
    rounds_done: int
    _stop: asyncio.Event

    # ------------------------------------------------------------------ the round

    async def round_loop(self) -> None:
        if not self.restored:
            await self._recover_own_expert()
        if not self.learner.calibrated:
            await self._agree_mask()
        max_rounds = self.cfg.rounds.max_rounds
        overlap = self.cfg.rounds.overlap_exchange
        try:
            while not self._stop.is_set() and (
                max_rounds is None or self.ledger.round < max_rounds
            ):
                started = time.monotonic()
                round_ = round_step.next_round(self.ledger)
                plan = self._plan()
                losses = await self._train(self.learner.train_round)  # train
                self._publish(round_)  # encode
                if not overlap:
                    await self._exchange(plan)  # send/receive, then average this round's
                outcome = round_step.aggregate_round(  # aggregate
                    self.ledger, self.learner, round_, plan.mixing_weights(self.node_id), self.rule
                )
                if overlap:  # send/receive while the next round trains (node/exchanges.py)
                    self.background.start(self._neighbour_addresses(plan))
                if outcome.adopted is not None:
                    log.info("adopted the cluster head's mask %s", outcome.adopted.mask_id)
                if outcome.peers:
                    self.metrics.delta_applied("own", len(outcome.peers))
                if self.pacer.checkpoint_due(round_):
                    await asyncio.to_thread(self.checkpoints.save, self._checkpoint, round_)
                if self.serving is not None:  # the API answers with this round's experts
                    self.serving.refresh(self.learner, round_, self.ledger.experts_held())
                await self._report(round_, losses, outcome.distance, time.monotonic() - started)
                self.rounds_done += 1
                await wait_or_stop(self._stop, self.pacer.rest_after(started))  # pacing
        finally:
            # A last round's block still goes out; a stop does not wait for slow links.
            await self.background.finish(cancel=self._stop.is_set())

    async def _train(self, steps: Callable[[], list[float]]) -> list[float]:
        """Local steps in a worker thread (the event loop keeps serving peers), timed."""
        with self.compute.training():
            losses = await asyncio.to_thread(steps)
        self.metrics.train_seconds.inc(self.compute.last_span_s)
        return losses

    async def _recover_own_expert(self) -> None:
        """No checkpoint: first ask the neighbours for copies of our own expert (peers as
        backup, federation/recovery.py); give up after one round of exchanges or a bound."""
        self.ledger.begin_recovery()
        started = time.monotonic()
        alone_for = min(RECOVERY_WINDOW_S, self.cfg.network.liveness_deadline_s)
        while not self._stop.is_set() and time.monotonic() - started < RECOVERY_WINDOW_S:
            plan = self._plan()
            results = await self._exchange(plan)
            if self.ledger.recovered is not None or any(r.ok for r in results):
                break
            if not plan.neighbours(self.node_id) and time.monotonic() - started >= alone_for:
                break  # nobody around to hold a copy: a new node, not a lost one
            await wait_or_stop(self._stop, self.cfg.network.health_interval_s)
        copy = self.ledger.finish_recovery()
        if copy is not None and await asyncio.to_thread(
            adopt_copy, self.learner, self.ledger, copy
        ):
            self._publish(copy.version.round)
            self.metrics.round.set(self.ledger.round)  # reported at once, like a resume

    async def _agree_mask(self) -> None:
        """Warm up, then train under the cluster's mask if one exists, else calibrate our own."""
        losses = await self._train(self.learner.warm_up)
        if losses:
            self.metrics.local_steps.inc(len(losses))
        self._plan()
        candidate = round_step.cluster_mask(self.ledger)
        if candidate is not None:
            await asyncio.to_thread(self.learner.adopt_mask, candidate)
            log.info("adopted cluster mask %s", candidate.mask_id)
        else:
            mask_id = await asyncio.to_thread(self.learner.calibrate)
            log.info("calibrated own mask %s", mask_id)
        self._publish(self.ledger.round, settling=True)

    def _publish(self, round_: int, *, settling: bool = False) -> None:
        """Snapshot own block at a round boundary: what peers get until the next one."""
        if not self.learner.calibrated:
            self.ledger.advance(round_)
            return
        with_codes = self.codes.due(round_, settling=settling)
        version = BlockVersion(
            task=self.learner.task, round=round_, origin=self.node_id, incarnation=self.incarnation
        )
        block = self.learner.block(version, self.cfg.federation.wire_dtype, with_codes=with_codes)
        record = self.learner.mask()
        self.ledger.train_under(record)
        self.ledger.publish(block, record)

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
        self.port.topology = live_view(
            plan, self.node_id, self.cfg.task.name, self.view, self.port.topology
        )
        self.ledger.set_head(plan.cluster(self.cfg.task.name).head)
        peers = self.peers
        self.port.neighbours = tuple(
            wire.NeighbourStatus(
                peer=wire.PeerAddress(
                    node_id=n, address=peers.address(n) or "", task=peers.task_of(n)
                ),
                state=peers.state_name(n),
                role="cluster" if n in plan.cluster_neighbours(self.node_id) else "bridge",
            )
            for n in plan.neighbours(self.node_id)
        )
        return plan

    def _neighbour_addresses(self, plan: TopologyPlan) -> dict[str, str]:
        """The plan's neighbours this node has an address for, node id -> address."""
        found = ((p, self.peers.address(p)) for p in plan.neighbours(self.node_id))
        return {peer_id: address for peer_id, address in found if address is not None}

    async def _exchange(self, plan: TopologyPlan) -> list[wire.ExchangeResult]:
        """One exchange (both directions) with every neighbour, all at once, bounded in time."""
        calls = [
            self.client.exchange(address, expected_node_id=peer_id)
            for peer_id, address in self._neighbour_addresses(plan).items()
        ]
        if not calls:
            return []
        results = list(await asyncio.gather(*calls))
        self.peers.record_exchanges(results)
        return results

    async def _report(
        self, round_: int, losses: list[float], distance: float, seconds: float
    ) -> None:
        m = self.metrics
        telemetry.report_training(m, round_, losses, seconds)
        m.consensus_distance.set(distance)
        m.blocks_held.set(len(self.ledger.held()))
        m.set_peers(**self.view.counts())
        so, task = self.learner.so, self.learner.task
        telemetry.report_topology(m, self.plan, task)
        if so.has_mask(task):
            blocks = self.ledger.cluster_blocks().values()
            masks = {d.mask_id: r for d in blocks if (r := self.ledger.mask(d.mask_id))}
            telemetry.report_mask(m, so.masks(task), blocks, masks)
        if round_ % self.cfg.metrics.eval_every == 0:
            evaluating = time.monotonic()
            accuracy = await asyncio.to_thread(
                self.learner.evaluate_own, self.cfg.task.eval_examples
            )
            m.eval_seconds.inc(time.monotonic() - evaluating)
            m.set_eval_accuracy(task, accuracy)
            self.port.details["eval_accuracy"] = f"{accuracy:.4f}"
        if losses:
            self.port.details["train_loss"] = f"{telemetry.mean(losses):.4f}"
        self.page.record_round(
            round_,
            losses,
            self.observer.totals,
            seconds,
            peer_rows(self.view.peers(), self.port.neighbours),
            self.port.topology,
            (self.pacer.last_checkpoint_round, self.pacer.last_checkpoint_unix),
            self.port.details.get("eval_accuracy"),
        )
        log.info(
            "round %d: loss %.4f, %d neighbours, consensus distance %.3g, %.1fs",
            round_,
            telemetry.mean(losses),
            len(self.port.neighbours),
            distance,
            seconds,
        )

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, round_: int) -> None:
        save_snapshot(self.store, self.learner, self.ledger, self.cfg, round_)
        self.pacer.checkpointed(round_)
