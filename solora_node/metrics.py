"""Prometheus metrics of one node (listed in docs/operations.md) and the /metrics HTTP endpoint.

Each `NodeMetrics` owns a private CollectorRegistry, never the global one:
several nodes can live in one process (tests, the in-process simulator).

Labels have bounded cardinality: every label value is one of the constants
below (tasks: the federation's task list); anything else is counted as
"other", so a misbehaving peer cannot make a node grow new time series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from solora_node.node_http import node_http_app, start_http

OTHER = "other"

BYTE_KINDS = ("delta", "mask", "control")
PEER_STATES = ("live", "suspect", "dead")
APPLIED_KINDS = ("own", "foreign")
# The `reason` label of exchange failures and refused deltas: the lowercase
# names of the wire's refusal vocabulary (solora_node.protocol.reasons.Reason, a
# test keeps them equal; copied, not imported, so that metrics do not need the
# generated protobuf modules), plus "other".
REASONS = (
    "incompatible_version",
    "other_federation",
    "fingerprint_mismatch",
    "not_authorised",
    "identity_mismatch",
    "busy",
    "unknown_task",
    "shutting_down",
    "protocol_error",
    "identity_in_use",
    "wrong_shape",
    "wrong_dtype",
    "mask_mismatch",
    "mask_unknown",
    "not_finite",
    "norm_too_large",
    "too_large",
    "stale_round",
    "checksum_mismatch",
    "truncated",
    "malformed",
    "bad_chunk",
    "timeout",
    "refused_by_store",
    "unavailable",
    "unknown_ca",
    "cert_expired",
    OTHER,
)

# Seconds; rounds run from about a second (tiny model, loopback) to minutes (edge CPU).
ROUND_DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

# Exposed names, as a PromQL query or a dashboard spells them.
METRIC_NAMES: tuple[str, ...] = (
    "solora_rounds_total",
    "solora_round",
    "solora_local_steps_total",
    "solora_train_seconds_total",
    "solora_compute_utilization",
    "solora_eval_seconds_total",
    "solora_train_loss",
    "solora_eval_accuracy",
    "solora_bytes_sent_total",
    "solora_bytes_received_total",
    "solora_peers",
    "solora_cluster_size",
    "solora_cluster_degree",
    "solora_spectral_gap",
    "solora_round_duration_seconds",
    "solora_exchange_failures_total",
    "solora_deltas_refused_total",
    "solora_deltas_applied_total",
    "solora_collision_rate",
    "solora_mask_density",
    "solora_consensus_distance",
    "solora_blocks_held",
    "solora_expert_misses_total",
    "solora_node_info",
)


def _bounded(value: object, allowed: Iterable[str]) -> str:
    """The label value for `value`: itself if allowed, else "other".

    str-valued enums (protocol.reasons.Reason) are read by their value, since
    str() of a (str, Enum) member is "Reason.TIMEOUT", not "timeout".
    """
    text = str(getattr(value, "value", value))
    return text if text in allowed else OTHER


class NodeMetrics:
    """All metrics of one node; labelled ones are updated through methods that bound labels."""

    def __init__(self, tasks: Sequence[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tasks = tuple(tasks)
        r = self.registry
        self.rounds = Counter("solora_rounds", "Rounds completed", registry=r)
        self.round = Gauge("solora_round", "Current round of this node", registry=r)
        self.local_steps = Counter("solora_local_steps", "Local training steps", registry=r)
        self.train_seconds = Counter(
            "solora_train_seconds", "Wall time spent in local training steps", registry=r
        )
        self.eval_seconds = Counter(
            "solora_eval_seconds", "Wall time spent evaluating the own task", registry=r
        )
        # Set to a function by the daemon (node/compute.py): read at scrape time.
        self.compute_utilization = Gauge(
            "solora_compute_utilization",
            "Share of wall time in local training steps over the last 60 s (or since start)",
            registry=r,
        )
        self.train_loss = Gauge(
            "solora_train_loss", "Mean train loss of the last round", registry=r
        )
        self._eval_accuracy = Gauge(
            "solora_eval_accuracy", "Evaluation accuracy per task", ["task"], registry=r
        )
        self._bytes_sent = Counter(
            "solora_bytes_sent", "Bytes sent to peers by kind", ["kind"], registry=r
        )
        self._bytes_received = Counter(
            "solora_bytes_received", "Bytes received from peers by kind", ["kind"], registry=r
        )
        self._peers = Gauge("solora_peers", "Known peers by liveness state", ["state"], registry=r)
        self.cluster_size = Gauge(
            "solora_cluster_size", "Members of this node's cluster", registry=r
        )
        self.cluster_degree = Gauge(
            "solora_cluster_degree", "Max degree of this node's cluster graph", registry=r
        )
        self.spectral_gap = Gauge(
            "solora_spectral_gap", "1 - |lambda_2| of this cluster's mixing matrix", registry=r
        )
        self.round_duration = Histogram(
            "solora_round_duration_seconds",
            "Wall time of a round (train, exchange, aggregate, checkpoint)",
            buckets=ROUND_DURATION_BUCKETS,
            registry=r,
        )
        self._exchange_failures = Counter(
            "solora_exchange_failures", "Failed exchanges by reason", ["reason"], registry=r
        )
        self._deltas_refused = Counter(
            "solora_deltas_refused", "Received deltas refused by reason", ["reason"], registry=r
        )
        self._deltas_applied = Counter(
            "solora_deltas_applied", "Deltas applied: own task or foreign", ["kind"], registry=r
        )
        self.collision_rate = Gauge(
            "solora_collision_rate", "Mask overlap |M_i ∩ M_j|/|M_i| with peers", registry=r
        )
        self.mask_density = Gauge(
            "solora_mask_density", "Fraction of B entries trained", registry=r
        )
        self.consensus_distance = Gauge(
            "solora_consensus_distance",
            "Mean squared distance of own-task blocks to their average, over own and neighbours",
            registry=r,
        )
        self.blocks_held = Gauge(
            "solora_blocks_held", "Task blocks held (own + foreign)", registry=r
        )
        self._expert_misses = Counter(
            "solora_expert_misses",
            "Prompts routed to a task whose expert this node does not hold (then wanted)",
            ["task"],
            registry=r,
        )
        self.info = Info("solora_node", "Identity of this node", registry=r)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        # Zero-valued series from the start: dashboards and rate() see them before the first event.
        for kind in BYTE_KINDS:
            self._bytes_sent.labels(kind=kind)
            self._bytes_received.labels(kind=kind)
        for state in PEER_STATES:
            self._peers.labels(state=state)
        for task in self.tasks:
            self._expert_misses.labels(task=task)
        for reason in REASONS:
            self._exchange_failures.labels(reason=reason)
        for reason in REASONS:
            self._deltas_refused.labels(reason=reason)
        for kind in APPLIED_KINDS:
            self._deltas_applied.labels(kind=kind)

    # -- labelled updates (label values bounded here) ------------------------

    def set_info(self, node_id: str, task: str, federation: str, version: str) -> None:
        self.info.info(
            {"node_id": node_id, "task": task, "federation": federation, "version": version}
        )

    def set_eval_accuracy(self, task: str, value: float) -> None:
        self._eval_accuracy.labels(task=_bounded(task, self.tasks)).set(value)

    def expert_missed(self, task: str) -> None:
        self._expert_misses.labels(task=_bounded(task, self.tasks)).inc()

    def add_bytes_sent(self, kind: object, count: int) -> None:
        self._bytes_sent.labels(kind=_bounded(kind, BYTE_KINDS)).inc(count)

    def add_bytes_received(self, kind: object, count: int) -> None:
        self._bytes_received.labels(kind=_bounded(kind, BYTE_KINDS)).inc(count)

    def set_peers(self, live: int, suspect: int, dead: int) -> None:
        for state, count in zip(PEER_STATES, (live, suspect, dead), strict=True):
            self._peers.labels(state=state).set(count)

    def exchange_failed(self, reason: object) -> None:
        self._exchange_failures.labels(reason=_bounded(reason, REASONS)).inc()

    def delta_refused(self, reason: object) -> None:
        self._deltas_refused.labels(reason=_bounded(reason, REASONS)).inc()

    def delta_applied(self, kind: str, count: int = 1) -> None:
        if kind not in APPLIED_KINDS:
            # Only two kinds exist; anything else is a caller bug, not peer input.
            raise ValueError(f"delta kind must be one of {APPLIED_KINDS}, got {kind!r}")
        self._deltas_applied.labels(kind=kind).inc(count)

    def set_topology(self, cluster_size: int, cluster_degree: int, spectral_gap: float) -> None:
        self.cluster_size.set(cluster_size)
        self.cluster_degree.set(cluster_degree)
        self.spectral_gap.set(spectral_gap)

    # -- exposition ----------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format /metrics serves (for status commands and tests)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int, page: Callable[[], str] | None = None) -> int:
        """Start /metrics, /healthz and (given `page`) the node page at / on (host, port) in a
        daemon thread; returns the bound port (0 = any)."""
        if self._server is not None:
            raise RuntimeError("metrics endpoint already running")
        server, thread = start_http(host, port, node_http_app(self.registry, page))
        self._server, self._thread = server, thread
        return int(server.server_port)

    @property
    def port(self) -> int | None:
        return int(self._server.server_port) if self._server is not None else None

    def stop(self) -> None:
        """Stop the endpoint and release its port; safe to call when not serving."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)


def parse_exposition(text: str) -> dict[str, float]:
    """Every sample of a /metrics page keyed 'name{label=value,...}' (labels sorted; '{}'
    for none): the one flat form the demo, testbeds and tests read metrics in."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples
