"""Operator-facing metrics of one node: skipped checkpoints, TLS handshake failures and
certificate expiry. Registered on the node's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from solora_node.metrics import OTHER

CHECKPOINT_SKIP_REASONS = ("no_space", "io_error", OTHER)
# Why a TLS handshake failed, as far as gRPC's messages tell (net/tls_reasons.py).
TLS_FAILURE_REASONS = ("expired", "not_yet_valid", "unknown_ca", "name_mismatch", "no_certificate",
                       OTHER)  # fmt: skip


def _bounded(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else OTHER


class OperatorMetrics:
    """solora_checkpoints_skipped_total, solora_tls_handshake_failures_total and
    solora_certificate_expiry_timestamp_seconds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._skipped = Counter(
            "solora_checkpoints_skipped",
            "Checkpoints not written (full disk, I/O error); training went on",
            ["reason"],
            registry=registry,
        )
        self._tls_failures = Counter(
            "solora_tls_handshake_failures",
            "TLS handshakes with peers that failed, by reason",
            ["reason"],
            registry=registry,
        )
        self.certificate_expiry = Gauge(
            "solora_certificate_expiry_timestamp_seconds",
            "Unix time at which this node's own certificate expires",
            registry=registry,
        )
        for reason in CHECKPOINT_SKIP_REASONS:
            self._skipped.labels(reason=reason)
        for reason in TLS_FAILURE_REASONS:
            self._tls_failures.labels(reason=reason)

    def checkpoint_skipped(self, reason: str) -> None:
        self._skipped.labels(reason=_bounded(reason, CHECKPOINT_SKIP_REASONS)).inc()

    def tls_handshake_failed(self, reason: str) -> None:
        self._tls_failures.labels(reason=_bounded(reason, TLS_FAILURE_REASONS)).inc()
