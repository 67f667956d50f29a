"""The daemon end to end: real processes on loopback, mDNS pinned to 127.0.0.1, TLS on."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from solora_node.testbed.local import LocalFederation, NodeSpec
from tests.integration.federation import (
    TINY_BASE,
    block,
    latest_checkpoint,
    metric,
    scrape,
    two_by_two,
    wait_until,
)

pytestmark = pytest.mark.slow
ROUNDS_WANTED = 12


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / (a.norm() + b.norm()).clamp_min(1e-12))


def test_four_nodes_two_tasks_discover_exchange_converge_and_stop(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path, two_by_two(), TINY_BASE, tls=True)
    with fed:
        fed.start()
        fed.wait_ready()

        def progressed() -> bool:
            return all(
                metric(fed, n, "solora_round{}") >= ROUNDS_WANTED
                and metric(fed, n, "solora_blocks_held{}") >= 2
                for n in fed.nodes
            )

        wait_until(progressed, 120, f"every node at round {ROUNDS_WANTED} holding both tasks")

        samples = {n: scrape(fed.nodes[n].metrics_port) for n in fed.nodes}
        for node_id, s in samples.items():
            # Rounds done here; the round number can be higher: a node that starts late
            # jumps to its cluster's round.
            assert 0 < s["solora_rounds_total{}"] <= s["solora_round{}"], node_id
            assert s["solora_peers{state=live}"] == 3, node_id  # found by mDNS alone
            assert s["solora_bytes_sent_total{kind=delta}"] > 0, node_id
            assert s["solora_bytes_received_total{kind=delta}"] > 0, node_id
            assert s["solora_cluster_size{}"] == 2, node_id
            assert s["solora_spectral_gap{}"] == pytest.approx(1.0)  # 2-node cluster: K2
        sent = sum(s["solora_bytes_sent_total{kind=delta}"] for s in samples.values())
        received = sum(s["solora_bytes_received_total{kind=delta}"] for s in samples.values())
        # Every byte received was sent by a peer; nodes are scraped moments apart, so the
        # two totals agree up to what moved in between.
        assert abs(sent - received) <= 0.1 * sent, (sent, received)

        codes = fed.stop(timeout=15)
        assert codes == {n: 0 for n in fed.nodes}, {n: fed.tail(n) for n in fed.nodes}

    finals = {n: latest_checkpoint(tmp_path / n) for n in fed.nodes}
    for node_id, (round_, _, meta) in finals.items():
        assert round_ >= ROUNDS_WANTED
        other = "reverse" if node_id.startswith("a") else "arithmetic"
        assert other in meta["foreign"], f"{node_id} never received the {other} expert"
        # Same-task nodes trained under one agreed mask.
    assert finals["a1"][2]["masks"]["arithmetic"] == finals["a2"][2]["masks"]["arithmetic"]
    assert finals["r1"][2]["masks"]["reverse"] == finals["r2"][2]["masks"]["reverse"]

    for task, (x, y) in {"arithmetic": ("a1", "a2"), "reverse": ("r1", "r2")}.items():
        bx, by = block(finals[x][1], task), block(finals[y][1], task)
        assert bx.norm() > 0
        # Gossip keeps same-task nodes close; their shards differ, so they are not equal.
        # Exchanges overlap the next round's training, so a node averages in its
        # neighbour's block of the round before: the last blocks differ by up to two
        # rounds of local steps (and nodes stop at slightly different rounds).
        assert _relative(bx, by) < 0.1, (task, _relative(bx, by))
        # Every other node's copy of this expert is one of the cluster's recent blocks: at
        # most a few rounds behind (relays lag, and nodes stop at slightly different
        # rounds), so it is close to, though not always within 5% of, the final block.
        for holder in fed.nodes:
            if holder in (x, y):
                continue
            copy = block(finals[holder][1], task)
            lag = finals[x][0] - finals[holder][2]["foreign"][task]["round"]
            assert lag <= 8, (holder, task, lag)
            assert _relative(copy, bx) < 0.15, (holder, task, lag, _relative(copy, bx))


def test_sigterm_checkpoints_and_kill9_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    specs = [NodeSpec("solo", "arithmetic")]
    base = {**TINY_BASE, "discovery": {"mdns": False}}
    fed = LocalFederation(tmp_path, specs, base, tls=False)
    with fed:
        fed.start()
        fed.wait_ready()
        wait_until(lambda: metric(fed, "solo", "solora_round{}") >= 5, 60, "round 5")
        fed.signal("solo", signal.SIGKILL)
        fed.wait_exit("solo", 10)
        killed_at, _, _ = latest_checkpoint(tmp_path / "solo")
        assert killed_at >= 4

        fed.start("solo")
        fed.wait_ready(node_id="solo")
        resumed = metric(fed, "solo", "solora_round{}")
        # It goes on from its checkpoint, losing at most the round in progress.
        assert resumed >= killed_at
        assert f"resumed from checkpoint round {killed_at}" in fed.tail("solo", 200)

        fed.signal("solo", signal.SIGTERM)
        assert fed.wait_exit("solo", 10) == 0, fed.tail("solo")
    final_round, _, _ = latest_checkpoint(tmp_path / "solo")
    assert final_round >= resumed


def test_without_mdns_one_bootstrap_list_reaches_everyone_by_peer_exchange(
    tmp_path: Path,
) -> None:
    """Only `a2` knows anyone (a bootstrap list); the others learn each other from it."""
    base = {**TINY_BASE, "discovery": {"mdns": False}}
    fed = LocalFederation(tmp_path, two_by_two(), base, tls=True)
    with fed:
        others = ["a1", "r1", "r2"]
        for node_id in others:
            fed.start(node_id)
        for node_id in others:
            fed.wait_ready(node_id=node_id)
        addresses = [fed.nodes[n].address for n in others]
        fed.reconfigure("a2", {"network": {"bootstrap_peers": addresses}})
        fed.start("a2")
        fed.wait_ready(node_id="a2")

        def everyone_knows_everyone() -> bool:
            return all(metric(fed, n, "solora_peers{state=live}") == 3 for n in fed.nodes)

        wait_until(everyone_knows_everyone, 90, "3 live peers on every node")
        # Same membership -> same plan: r1 and r2 form the reverse cluster without mDNS.
        # The plan (and its gauge) is recomputed at a round's start, after membership.
        wait_until(lambda: metric(fed, "r1", "solora_cluster_size{}") == 2, 60, "r1's cluster of 2")
        wait_until(
            lambda: all(metric(fed, n, "solora_blocks_held{}") >= 2 for n in fed.nodes),
            90,
            "both experts on every node",
        )
        assert fed.stop(timeout=15) == {n: 0 for n in fed.nodes}
