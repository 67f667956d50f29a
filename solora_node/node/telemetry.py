"""The daemon's telemetry: wire events and each round's outcome into Prometheus metrics
(docs/operations.md) and the status details peers and operators read."""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Mapping

import torch

from solora_node.adapter import collision_rate, record_masks
from solora_node.federation.port import LedgerPort
from solora_node.federation.topology import TopologyPlan
from solora_node.metrics import NodeMetrics
from solora_node.protocol import messages as wire
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.reasons import Reason

log = logging.getLogger("solora_node.node")


class WireMetrics:
    """net.observe.WireObserver -> Prometheus counters, and byte totals for summary.json."""

    def __init__(self, metrics: NodeMetrics, port: LedgerPort) -> None:
        self.metrics = metrics
        self.port = port
        self.totals: collections.Counter[tuple[str, str]] = collections.Counter()
        # Items (blocks and masks) this node transferred to peers: accepted, and refused
        # after the transfer; with totals["delta", "sent"] they give bytes per item.
        self.items_sent = 0

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
        self.port.exchanges.append(result)
        self.items_sent += result.items_sent + sum(result.refused_by_peer.values())
        if not result.ok:
            self.metrics.exchange_failed(result.reason)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def report_training(metrics: NodeMetrics, round_: int, losses: list[float], seconds: float) -> None:
    metrics.rounds.inc()
    metrics.round.set(round_)
    metrics.local_steps.inc(len(losses))
    if losses:
        metrics.train_loss.set(mean(losses))
    metrics.round_duration.observe(seconds)


def report_mask(
    metrics: NodeMetrics,
    masks: Mapping[str, torch.Tensor],
    neighbour_blocks: Iterable[BlockDelta],
    mask_of: Mapping[str, MaskRecord],
) -> None:
    """Mask density, and the mean overlap of our mask with the masks our cluster
    neighbours' blocks arrived under (1.0 when none are held)."""
    metrics.mask_density.set(
        sum(int(v.sum()) for v in masks.values()) / sum(v.numel() for v in masks.values())
    )
    rates = [
        collision_rate(dict(masks), record_masks(mask_of[d.mask_id]))
        for d in neighbour_blocks
        if d.mask_id in mask_of
    ]
    metrics.collision_rate.set(mean(rates) if rates else 1.0)


def report_topology(metrics: NodeMetrics, plan: TopologyPlan | None, task: str) -> None:
    if plan is not None:
        cluster = plan.cluster(task)
        metrics.set_topology(cluster.size, cluster.degree, cluster.spectral_gap)
