"""The round step both the daemon and the simulator run: mask adoption from the head,
which blocks are averaged in (and only once), Metropolis weights, robust rules."""

from __future__ import annotations

import pytest
import torch

from solora_node.adapter.tensors import decode_values
from solora_node.federation.aggregate import AggregationRule, Block
from solora_node.federation.ledger import Ledger
from solora_node.federation.round import (
    CODES_EVERY,
    CodesSchedule,
    aggregate_round,
    choose_blocks,
    cluster_mask,
    next_round,
)
from solora_node.federation.topology import Member, plan_topology
from solora_node.protocol.blocks import BlockDelta, MaskRecord
from solora_node.protocol.reasons import Reason
from tests.federation.blocks import TASKS, delta, mask


class Model:
    """A participant whose block is one 1-d layer; records the masks it adopted."""

    def __init__(self, *values: float) -> None:
        self.block: dict[str, torch.Tensor] = {"l0": torch.tensor(values)}
        self.adopted: list[str] = []

    def adopt_mask(self, record: MaskRecord) -> None:
        self.adopted.append(record.mask_id)

    def own_block(self) -> Block:
        return dict(self.block)

    def set_own_block(self, block: Block) -> None:
        self.block = dict(block)

    def dense(self, delta: BlockDelta) -> Block:
        return {name: decode_values(raw) for name, raw in delta.layers.items()}


def ledger(node_id: str = "n2", head: str = "n1", round_: int = 5) -> Ledger:
    result = Ledger(node_id, "a", TASKS, 3)
    result.set_head(head)
    result.train_under(mask("a", "m"))
    result.advance(round_)
    return result


MEAN = AggregationRule()


def test_metropolis_step_over_the_chosen_neighbours_then_each_block_once() -> None:
    node, model = ledger(), Model(0.0)
    for origin, value in (("n1", 4.0), ("n3", 8.0), ("n9", 100.0)):
        assert node.accept_delta(delta("a", 5, origin, "m", value)) is Reason.OK
    weights = {"n2": 0.5, "n1": 0.25, "n3": 0.25}  # n9 is not a gossip neighbour
    assert list(choose_blocks(node, 5, weights)) == ["n1", "n3"]
    outcome = aggregate_round(node, model, 5, weights, MEAN)
    assert outcome.peers == ("n1", "n3")
    assert model.block["l0"].item() == pytest.approx(0.25 * 4 + 0.25 * 8)
    assert outcome.distance > 0
    again = aggregate_round(node, model, 5, weights, MEAN)
    assert again.peers == () and model.block["l0"].item() == pytest.approx(3.0)
    assert "n9" in node.cluster_blocks()  # held, never averaged


def test_absent_neighbour_weight_goes_to_self() -> None:
    node, model = ledger(), Model(0.0)
    node.accept_delta(delta("a", 5, "n1", "m", 4.0))
    aggregate_round(node, model, 5, {"n2": 0.5, "n1": 0.25, "n3": 0.25}, MEAN)
    assert model.block["l0"].item() == pytest.approx(1.0)  # 0.75 * 0 + 0.25 * 4


def test_stale_and_other_mask_blocks_are_not_chosen() -> None:
    node = ledger(head="n7")
    node.accept_delta(delta("a", 3, "n1", "m", 1.0))
    node.remember_mask(mask("a", "x"))
    node.accept_delta(delta("a", 5, "n3", "x", 1.0))  # refused: not the head's
    weights = {"n1": 0.3, "n3": 0.3}
    assert list(choose_blocks(node, 5, weights)) == ["n1"]
    assert list(choose_blocks(node, 7, weights)) == []  # round 3 is now beyond k = 3


def test_head_mask_is_adopted_at_the_round_boundary_and_its_block_averaged() -> None:
    node, model = ledger(), Model(0.0)
    node.remember_mask(mask("a", "head-mask"))
    assert node.accept_delta(delta("a", 5, "n1", "head-mask", 2.0)) is Reason.OK
    outcome = aggregate_round(node, model, 5, {"n1": 0.5}, MEAN)
    assert outcome.adopted is not None and outcome.adopted.mask_id == "head-mask"
    assert model.adopted == ["head-mask"] and node.mask_id == "head-mask"
    assert outcome.peers == ("n1",) and model.block["l0"].item() == pytest.approx(1.0)


def test_mask_agreement_after_warm_up() -> None:
    lonely = ledger()
    assert cluster_mask(lonely) is None  # nothing heard: calibrate its own
    late = Ledger("n3", "a", TASKS, 3)
    late.set_head("n1")
    late.remember_mask(mask("a", "head-mask"))
    late.accept_delta(delta("a", 2, "n1", "head-mask"))
    record = cluster_mask(late)
    assert record is not None and record.mask_id == "head-mask"


@pytest.mark.parametrize(
    ("rule", "close_to_honest"),
    [
        (AggregationRule("mean"), False),
        (AggregationRule("median"), True),
        (AggregationRule("trimmed_mean", trim_fraction=0.2), True),
        (AggregationRule("mean", clip_norm=1.0), True),
    ],
)
def test_robust_rules_with_a_poisoned_block(rule: AggregationRule, close_to_honest: bool) -> None:
    node, model = ledger(), Model(1.0, 1.0)
    origins = ["n1", "n3", "n4", "n5"]
    for origin in origins[:3]:
        node.accept_delta(delta("a", 5, origin, "m", 1.1, 0.9))
    node.accept_delta(delta("a", 5, "n5", "m", -50.0, -50.0))  # poisoned
    aggregate_round(node, model, 5, dict.fromkeys(origins, 0.2), rule)
    moved = float((model.block["l0"] - torch.tensor([1.0, 1.0])).norm())
    assert (moved < 1.0) is close_to_honest, (rule, moved)


def test_weights_come_from_the_topology_plan() -> None:
    plan = plan_topology([Member(f"n{i}", "a") for i in (1, 2, 3)], ["a"], max_degree=3)
    weights = plan.mixing_weights("n2")
    node, model = ledger(), Model(0.0)
    for origin in ("n1", "n3"):
        node.accept_delta(delta("a", 5, origin, "m", 3.0))
    aggregate_round(node, model, 5, weights, MEAN)
    assert model.block["l0"].item() == pytest.approx(3.0 * (weights["n1"] + weights["n3"]))


def test_next_round_and_codes() -> None:
    node = ledger(round_=4)
    assert next_round(node) == 5
    node.accept_delta(delta("a", 7, "n1", "m"))
    assert next_round(node) == 7  # the cluster is ahead: jump
    codes = CodesSchedule()
    assert codes.due(0, settling=True)  # the block published when the mask is settled
    assert codes.due(1)  # and the first of the round loop
    due = [r for r in range(2, 3 * CODES_EVERY) if codes.due(r)]
    assert due == [1 + CODES_EVERY, 1 + 2 * CODES_EVERY]
