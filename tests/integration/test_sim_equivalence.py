"""The simulator and the daemon run one federation core: the same small federation
(tiny model, 4 nodes, 2 tasks, fixed seed) through `sim` and as real `solora-node run`
processes on loopback moves the same bytes per item, agrees on masks the same way and
spreads the experts the same way."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from solora_node.adapter import masks as mask_ops
from solora_node.model import load_base_model
from solora_node.sim.config import SimConfig
from solora_node.sim.devices import build_devices, eval_sets
from solora_node.sim.rounds import SimFederation
from solora_node.sim.solora import SoLoraStrategy
from solora_node.sim.strategy import RunContext
from solora_node.sim.topology import build_topology
from solora_node.testbed.local import LocalFederation
from tests.integration.federation import TINY_BASE, latest_checkpoint, two_by_two

# Long enough that the start (nodes come up one by one, masks are agreed) and the
# routing codes (every 10 rounds) weigh the same in both runs.
ROUNDS = 60
TASKS = tuple(TINY_BASE["federation"]["tasks"])


def _sim() -> dict[str, Any]:
    train = TINY_BASE["train"]
    config = SimConfig(
        tasks=TASKS,
        devices_per_task=(2, 2),
        rounds=ROUNDS,
        rank=TINY_BASE["federation"]["rank"],
        alpha=16.0,  # the daemon's default
        warmup_steps=TINY_BASE["federation"]["warmup_steps"],
        local_steps=train["steps_per_round"],
        batch_size=train["batch_size"],
        lr=train["lr"],
        methods=("solora",),
        ablation_topologies=(),
    )
    config.check()
    devices = build_devices(config)
    topology = build_topology(config.topology, devices, config)
    torch.manual_seed(config.seed)
    loaded = load_base_model("tiny", Path("unused"), seed=config.seed)
    strategy = SoLoraStrategy(RunContext(config, devices, topology, loaded, eval_sets(devices, 2)))
    sim = SimFederation(strategy, topology, config)
    sim.start()
    for round_ in range(1, ROUNDS + 1):
        sim.run_round(round_)
    traffic = sim.traffic
    return {
        "bytes_per_item": traffic.bytes / (traffic.messages + traffic.masks),
        "collision": strategy.collision(),
        "experts": {d.task: sorted(sim.ledgers[d.index].foreign_blocks()) for d in devices},
        "refused": dict(traffic.refused),
    }


def _full_mask(tensors: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    """A node's own-task mask in the whole B space (every task's slot; zeros but its own)."""
    layers = sorted(k.split("/", 2)[2] for k in tensors if k.startswith(f"mask/{task}/"))
    full = {}
    for layer in layers:
        own = tensors[f"mask/{task}/{layer}"].bool()
        full[layer] = torch.cat([own if t == task else torch.zeros_like(own) for t in TASKS], 1)
    return full


def _daemon(tmp_path: Path) -> dict[str, Any]:
    # Its own federation id: mDNS on loopback is shared with any other test run here.
    # Its own id per run: loopback mDNS is shared with any other run on this machine.
    federation = {**TINY_BASE["federation"], "id": f"equivalence-{os.getpid()}"}
    base = {**TINY_BASE, "federation": federation, "rounds": {"max_rounds": ROUNDS}}
    fed = LocalFederation(tmp_path, two_by_two(), base, tls=True)
    with fed:
        fed.start()
        fed.wait_ready()
        deadline = time.monotonic() + 180
        codes = {n: fed.wait_exit(n, max(1.0, deadline - time.monotonic())) for n in fed.nodes}
        assert codes == {n: 0 for n in fed.nodes}, {n: fed.tail(n) for n in fed.nodes}
    summaries = {n: json.loads((tmp_path / n / "summary.json").read_text()) for n in fed.nodes}
    finals = {n: latest_checkpoint(tmp_path / n) for n in fed.nodes}
    tasks = {spec.node_id: spec.task for spec in two_by_two()}
    masks = {n: _full_mask(finals[n][1], tasks[n]) for n in fed.nodes}
    same, cross = [], []
    for a in fed.nodes:
        for b in fed.nodes:
            if a != b:
                rate = mask_ops.collision_rate(masks[a], masks[b])
                (same if tasks[a] == tasks[b] else cross).append(rate)
    sent = sum(s["bytes_sent"]["delta"] for s in summaries.values())
    items = sum(s["items_sent"] for s in summaries.values())
    return {
        "bytes_per_item": sent / items,
        "collision": {"same_task": sum(same) / len(same), "cross_task": sum(cross) / len(cross)},
        "experts": {tasks[n]: sorted(finals[n][2]["foreign"]) for n in fed.nodes},
    }


def test_sim_and_daemon_run_the_same_federation(tmp_path: Path) -> None:
    sim = _sim()
    daemon = _daemon(tmp_path)
    assert sim["refused"] == {}, sim["refused"]
    # Bytes per item on the wire over the whole run: the same codec, block sizes, masks
    # and codes policy. The daemon's count adds the chunk framing (a few bytes per item).
    assert daemon["bytes_per_item"] == pytest.approx(sim["bytes_per_item"], rel=0.05), (
        sim,
        daemon,
    )
    # Mask agreement: same-task nodes train under one mask, tasks never overlap.
    assert sim["collision"] == {"same_task": 1.0, "cross_task": 0.0}
    assert daemon["collision"] == sim["collision"]
    # Expert spread: every node ends up holding the other task's expert.
    assert (
        sim["experts"]
        == daemon["experts"]
        == {
            "arithmetic": ["reverse"],
            "reverse": ["arithmetic"],
        }
    )
