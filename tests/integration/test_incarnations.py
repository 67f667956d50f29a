"""Real node processes with one node id twice, and a node whose data_dir is wiped."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import torch

from solora_node.store import CheckpointStore
from solora_node.testbed.local import LocalFederation, NodeSpec
from tests.integration.federation import (
    TINY_BASE,
    block,
    latest_checkpoint,
    metric,
    wait_until,
)


def _held_copy(data_dir: Path) -> dict[str, Any]:
    """What a node's newest checkpoint says about its copy of arithmetic ({} if none yet;
    the node writes while we read, so an absent checkpoint is retried, not an error)."""
    ckpt = CheckpointStore(data_dir / "checkpoints", keep=2, readonly=True).load_latest()
    return {} if ckpt is None else dict(ckpt.meta["foreign"].get("arithmetic", {}))


def test_a_second_process_with_a_live_node_id_refuses_to_start(tmp_path: Path) -> None:
    base = {**TINY_BASE, "discovery": {"mdns": False}}
    specs = [NodeSpec("a1", "arithmetic"), NodeSpec("copy", "arithmetic")]
    with LocalFederation(tmp_path, specs, base, tls=False) as fed:
        fed.start("a1")
        fed.wait_ready(node_id="a1")
        address = f"127.0.0.1:{fed.nodes['a1'].grpc_port}"
        # The copy: same node.id as a1, its own data_dir and ports, bootstrapping to a1.
        fed.reconfigure("copy", {"node": {"id": "a1"}, "network": {"bootstrap_peers": [address]}})
        fed.start("copy")
        assert fed.wait_exit("copy", 90) == 2, fed.tail("copy")
        last = fed.tail("copy", 1)
        assert "Traceback" not in fed.tail("copy", 200)
        assert last.startswith("solora-node run: error: node.id: 'a1' is live elsewhere")
        assert metric(fed, "a1", "solora_deltas_refused_total{reason=identity_in_use}") >= 1
        assert fed.nodes["a1"].running()
        fed.signal("a1", signal.SIGTERM)
        assert fed.wait_exit("a1", 15) == 0


def test_wiped_node_recovers_its_expert_from_peers_copies(tmp_path: Path) -> None:
    specs = [NodeSpec("a1", "arithmetic"), NodeSpec("r1", "reverse")]
    with LocalFederation(tmp_path, specs, TINY_BASE, tls=False) as fed:
        fed.start()
        fed.wait_ready()

        # r1 holds a1's expert (a foreign block) at a round well past the start.
        def r1_holds_a1_at_round_5() -> bool:
            return int(_held_copy(tmp_path / "r1").get("round", 0)) >= 5

        wait_until(r1_holds_a1_at_round_5, 90, "r1 holds a1's expert of round 5 or later")
        fed.signal("a1", signal.SIGTERM)
        assert fed.wait_exit("a1", 15) == 0
        _, lost, _ = latest_checkpoint(tmp_path / "a1")
        for name in ("checkpoints", "adapter", "node.json", "summary.json"):
            path = tmp_path / "a1" / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        _, held, held_meta = latest_checkpoint(tmp_path / "r1")
        old_life = held_meta["foreign"]["arithmetic"]["incarnation"]
        copy_round = held_meta["foreign"]["arithmetic"]["round"]
        assert copy_round >= 5

        # Paced from here on (1 s a round, not back to back), so that the first checkpoint
        # past the copy is seen a round or two after it, before a1 has trained far from it.
        fed.reconfigure("a1", {"rounds": {"min_interval_s": 1.0}})
        fed.start("a1")
        fed.wait_ready(node_id="a1")
        wait_until(
            lambda: "recovered own expert from a peer's copy" in fed.tail("a1", 400),
            60,
            "a1 recovers from r1's copy",
        )
        # It trains on from the copy's round, not from round 0.
        assert metric(fed, "a1", "solora_round{}") >= copy_round
        first_past_copy: dict[str, torch.Tensor] = {}

        def a1_checkpointed_past_the_copy() -> bool:
            # The wiped node has no checkpoint until its first round after recovery ends;
            # the first one seen is kept (later ones are further from the copy).
            ckpt = CheckpointStore(tmp_path / "a1" / "checkpoints", keep=2, readonly=True)
            latest = ckpt.load_latest()
            if latest is None or latest.round <= copy_round:
                return False
            first_past_copy.update(latest.tensors)
            return True

        wait_until(a1_checkpointed_past_the_copy, 60, "a1 checkpoints on")
        resumed = first_past_copy
        lost_a, held_a, resumed_a = (block(t, "arithmetic") for t in (lost, held, resumed))
        # The recovered expert is the one r1 held (a few local steps later), not a fresh one.
        assert torch.linalg.norm(resumed_a - held_a) < 0.5 * torch.linalg.norm(held_a)
        assert torch.linalg.norm(held_a) > 0 and torch.linalg.norm(lost_a) > 0
        # Peers accept the new life: r1 takes a1's blocks of the new incarnation.
        wait_until(
            lambda: (
                latest_checkpoint(tmp_path / "r1")[2]["foreign"]["arithmetic"]["incarnation"]
                > old_life
            ),
            60,
            "r1 holds a1's expert of its new incarnation",
        )
        assert fed.stop() == {"a1": 0, "r1": 0}
