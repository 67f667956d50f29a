"""Pieces of `solora-node sim` that need no model: config, topology, exchange, byte counts."""

from __future__ import annotations

import pytest
import torch

from solora_node.adapter.payload import BlockDelta, BlockVersion
from solora_node.adapter.tensors import encode_values
from solora_node.net.codec import encode_delta
from solora_node.net.topology import Graph
from solora_node.sim.config import PRESETS, SimConfig, SimConfigError, from_mapping
from solora_node.sim.exchange import Mailbox, exchange, newer
from solora_node.sim.topology import SimTopology, build_topology
from solora_node.sim.wire import WireCounter


def _delta(task: str, round_: int, origin: str, n: int = 4) -> BlockDelta:
    layers = {"l0": encode_values(torch.arange(n, dtype=torch.float32), "float16")}
    return BlockDelta(BlockVersion(task, round_, origin), "m-" + task, "float16", layers)


def test_presets_are_valid() -> None:
    for config in PRESETS.values():
        config.check()
    assert PRESETS["paper"].device_count == 10
    assert len(PRESETS["paper"].tasks) == 4


def test_config_from_mapping_overrides_and_rejects() -> None:
    config = from_mapping(
        {"preset": "paper-tiny", "rounds": 5, "tasks": ["topic"], "devices_per_task": [3]}
    )
    assert config.rounds == 5 and config.tasks == ("topic",)
    with pytest.raises(SimConfigError, match="unknown sim config fields"):
        from_mapping({"roundz": 1})
    with pytest.raises(SimConfigError, match="methods"):
        from_mapping({"methods": ["lora", "magic"]})
    with pytest.raises(SimConfigError, match="devices_per_task"):
        from_mapping({"tasks": ["a", "b"], "devices_per_task": [1]})


def test_newer_is_later_round_then_lower_origin() -> None:
    assert newer(BlockVersion("t", 2, "dev-09"), BlockVersion("t", 1, "dev-00"))
    assert newer(BlockVersion("t", 2, "dev-00"), BlockVersion("t", 2, "dev-01"))
    assert not newer(BlockVersion("t", 2, "dev-01"), BlockVersion("t", 2, "dev-00"))
    assert newer(BlockVersion("t", 1, "x"), None)


def test_exchange_relays_foreign_experts_once_and_counts_codec_bytes() -> None:
    # Path a0 - b1 - a2: b takes a's freshest block only (dev-00 beats dev-02 at equal
    # rounds), so dev-02's block is never sent to b.
    boxes = [Mailbox("dev-00", "a"), Mailbox("dev-01", "b"), Mailbox("dev-02", "a")]
    graph = Graph.from_edges(3, [(0, 1), (1, 2)])
    for box in boxes:
        box.own = _delta(box.label, 1, box.node_id)
    wire = WireCounter()
    sent = exchange(boxes, graph.neighbours, wire, lambda d, b: None, lambda d, b: d)
    own = [b.own for b in boxes]
    assert own[0] is not None and own[1] is not None
    assert wire.messages == 3
    assert sent == wire.total == len(encode_delta(own[0])) + 2 * len(encode_delta(own[1]))
    assert boxes[1].foreign["a"].version.origin == "dev-00"  # freshest: lower origin wins
    assert boxes[0].foreign["b"].version.origin == "dev-01"
    # Round 2 without new training: b offers its held copy of a's block to both a's; dev-02
    # takes dev-00's block into its inbox (origin is not itself), dev-00 refuses its own.
    for box in boxes:
        box.own = None
    exchange(boxes, graph.neighbours, wire, lambda d, b: None, lambda d, b: d)
    assert "dev-00" in boxes[2].inbox and "dev-00" not in boxes[0].inbox


def test_topologies_and_cluster_stats() -> None:
    config = SimConfig(tasks=("a", "b"), devices_per_task=(3, 2), task_dirs={})
    from solora_node.data.examples import TaskData
    from solora_node.sim.devices import Device

    data = TaskData("a", "label", ("x",), [], [])
    devices = [Device(i, f"dev-{i:02d}", "a" if i < 3 else "b", 0, data) for i in range(5)]
    cluster = build_topology("cluster", devices, config)
    stats = cluster.cluster_stats()
    assert stats["a"]["edges"] == 3 and stats["a"]["spectral_gap"] > 0
    # The cluster mixing never averages across tasks.
    mixing = cluster.cluster_mixing()
    assert all(mixing[i, j] == 0 for i in range(3) for j in range(3, 5))
    ring = build_topology("ring", devices, config)
    assert isinstance(ring, SimTopology) and ring.edge_count() == 5
    rgg = build_topology("random", devices, config)
    assert rgg.positions is not None and rgg.graph.is_connected()
