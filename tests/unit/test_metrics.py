"""Node metrics: exact names, bounded labels, private registries and the /metrics endpoint."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from solora_node.metrics import METRIC_NAMES, OTHER, REASONS, NodeMetrics


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_documented_name_is_exposed() -> None:
    metrics = NodeMetrics(tasks=["arithmetic", "topic"])
    metrics.set_eval_accuracy("arithmetic", 0.5)
    metrics.set_info("n0", "arithmetic", "fed", "0.1.0")
    names = {name for name, _ in samples(metrics)}
    for name in METRIC_NAMES:
        # A histogram is exposed as _bucket/_count/_sum series under its name.
        assert name in names or f"{name}_count" in names, name
    assert all(name.startswith("solora_") for name in names)


def test_updates_show_up_with_bounded_labels() -> None:
    metrics = NodeMetrics(tasks=["arithmetic"])
    metrics.rounds.inc()
    metrics.round.set(7)
    metrics.local_steps.inc(5)
    metrics.add_bytes_sent("delta", 1000)
    metrics.add_bytes_sent("gossip-v2", 10)  # unknown kind -> other
    metrics.add_bytes_received("mask", 64)
    metrics.set_peers(live=3, suspect=1, dead=0)
    metrics.exchange_failed("timeout")
    metrics.exchange_failed("a peer-chosen string")  # never a new series
    metrics.delta_refused("stale_round")
    metrics.delta_applied("own", 2)
    metrics.set_eval_accuracy("poetry", 0.9)  # not a federation task
    metrics.set_topology(cluster_size=4, cluster_degree=3, spectral_gap=0.5)
    metrics.round_duration.observe(3.0)
    metrics.expert_missed("arithmetic")
    metrics.expert_missed("poetry")  # not a federation task
    got = samples(metrics)
    assert got[("solora_rounds_total", ())] == 1
    assert got[("solora_round", ())] == 7
    assert got[("solora_local_steps_total", ())] == 5
    assert got[("solora_bytes_sent_total", (("kind", "delta"),))] == 1000
    assert got[("solora_bytes_sent_total", (("kind", OTHER),))] == 10
    assert got[("solora_bytes_received_total", (("kind", "mask"),))] == 64
    assert got[("solora_peers", (("state", "suspect"),))] == 1
    assert got[("solora_exchange_failures_total", (("reason", "timeout"),))] == 1
    assert got[("solora_exchange_failures_total", (("reason", OTHER),))] == 1
    assert got[("solora_deltas_refused_total", (("reason", "stale_round"),))] == 1
    assert got[("solora_deltas_applied_total", (("kind", "own"),))] == 2
    assert got[("solora_eval_accuracy", (("task", OTHER),))] == 0.9
    assert got[("solora_spectral_gap", ())] == 0.5
    assert got[("solora_round_duration_seconds_count", ())] == 1
    assert got[("solora_expert_misses_total", (("task", "arithmetic"),))] == 1
    assert got[("solora_expert_misses_total", (("task", OTHER),))] == 1
    with pytest.raises(ValueError):
        metrics.delta_applied("someone-else")


def test_label_series_exist_before_first_event() -> None:
    got = samples(NodeMetrics())
    assert got[("solora_bytes_sent_total", (("kind", "control"),))] == 0
    assert got[("solora_deltas_refused_total", (("reason", "norm_too_large"),))] == 0


def test_registries_are_private() -> None:
    a, b = NodeMetrics(), NodeMetrics()  # same names twice in one process: no clash
    a.rounds.inc()
    assert samples(b)[("solora_rounds_total", ())] == 0


def test_reason_labels_match_the_wire_vocabulary() -> None:
    reasons = pytest.importorskip("solora_node.protocol.reasons")
    wire = {r.value for r in reasons.Reason if r.value != "ok"}
    assert wire == set(REASONS) - {OTHER}
    metrics = NodeMetrics()
    metrics.delta_refused(reasons.Reason.CHECKSUM_MISMATCH)
    assert (
        samples(metrics)[("solora_deltas_refused_total", (("reason", "checksum_mismatch"),))] == 1
    )


def test_http_endpoint_on_an_ephemeral_loopback_port() -> None:
    metrics = NodeMetrics()
    port = metrics.serve("127.0.0.1", 0)
    try:
        assert port > 0 and metrics.port == port
        metrics.rounds.inc(3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            text = response.read().decode()
        families = {f.name for f in text_string_to_metric_families(text)}
        assert "solora_rounds" in families
        assert "solora_rounds_total 3.0" in text
        with pytest.raises(RuntimeError):
            metrics.serve("127.0.0.1", 0)
    finally:
        metrics.stop()
    assert metrics.port is None
    metrics.stop()  # idempotent


def test_parse_exposition_keys_samples_by_name_and_sorted_labels() -> None:
    from solora_node.metrics import parse_exposition

    metrics = NodeMetrics(tasks=["arithmetic"])
    metrics.round.set(7)
    metrics.add_bytes_sent("delta", 1000)
    flat = parse_exposition(metrics.exposition().decode())
    assert flat["solora_round{}"] == 7
    assert flat["solora_bytes_sent_total{kind=delta}"] == 1000
