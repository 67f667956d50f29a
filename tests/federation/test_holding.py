"""The cap on held foreign experts (federation/holding.py), table by table: which tasks a
node holds, that the cap holds across a planned federation, that every task's routing
codes still reach every node, that the held set follows misses, and that an expert
reaches a node that wants it through nodes that had no use for it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from solora_node.benchmarks.scale_rounds import PlannedRounds
from solora_node.federation.cards import code_card
from solora_node.federation.holding import DEMAND_ROUNDS, Holding, validate_cap, want_marker
from solora_node.federation.ledger import Ledger
from solora_node.federation.port import LedgerPort
from solora_node.net.codec import from_float32
from solora_node.net.convert import descriptor_from_proto, descriptor_to_proto
from solora_node.net.session import checked_delta, encode_items
from solora_node.net.validate import check_offered
from solora_node.protocol.reasons import Reason
from tests.federation.blocks import delta, descriptor

TASKS = ("a", "b", "c", "d", "e", "f")


@dataclass(frozen=True)
class HeldCase:
    name: str
    cap: int | None
    used: dict[str, int] = field(default_factory=dict)  # task -> round own routing used it
    asked: dict[str, int] = field(default_factory=dict)  # task -> demand round of a neighbour
    round_: int = 20
    held: frozenset[str] = frozenset()


HELD_CASES = [
    HeldCase("uncapped: every other task", None, held=frozenset("bcdef")),
    HeldCase("cap above T-1: every other task", 9, held=frozenset("bcdef")),
    HeldCase("cap 0: none", 0, used={"e": 20}, held=frozenset()),
    HeldCase("no demand: configured order, own skipped", 2, held=frozenset("bc")),
    HeldCase("own demand first", 2, used={"f": 20}, held=frozenset("fb")),
    HeldCase("most recent demand first", 1, used={"e": 18, "f": 19}, held=frozenset("f")),
    HeldCase(
        "neighbours' demand after own",
        2,
        used={"f": 19},
        asked={"d": 20, "e": 12},
        held=frozenset("fd"),
    ),
    HeldCase(
        "expired demand falls back to defaults",
        2,
        used={"f": 20 - DEMAND_ROUNDS},
        held=frozenset("bc"),
    ),
    HeldCase("own task is never a foreign expert", 2, used={"a": 20}, held=frozenset("bc")),
]


@pytest.mark.parametrize("case", HELD_CASES, ids=lambda c: c.name)
def test_held_set(case: HeldCase) -> None:
    holding = Holding("a", TASKS, case.cap)
    for task, r in case.used.items():
        holding.record_route(task, r, held=False)
    holding.note_wants(want_marker(t, r) for t, r in case.asked.items())
    assert holding.held_set(case.round_) == case.held
    assert len(holding.held_set(case.round_)) <= (case.cap if case.cap is not None else 5)


@pytest.mark.parametrize("bad", [-1, 1.5, "4", True])
def test_cap_must_be_a_count(bad: object) -> None:
    with pytest.raises(ValueError, match="max_foreign_experts must be an integer >= 0 or null"):
        validate_cap(bad)  # type: ignore[arg-type]


def test_misses_counted_and_wants_advertised_with_their_round() -> None:
    holding = Holding("a", TASKS, 1)
    holding.record_route("e", 7, held=False)
    holding.record_route("e", 8, held=True)
    holding.record_route("a", 8, held=False)  # own task: never a miss
    assert holding.misses == {"e": 1}
    assert holding.wants(8) == {"e": 8}
    assert holding.wants(8 + DEMAND_ROUNDS) == {}  # not renewed: the wish is gone
    assert Holding("a", TASKS, None).wants(8) == {}  # uncapped nodes ask for nothing


@dataclass(frozen=True)
class LedgerCase:
    name: str
    task: str
    reason: Reason
    kept: bool


LEDGER_CASES = [
    LedgerCase("held task taken", "b", Reason.OK, True),
    LedgerCase("task outside the held set refused", "e", Reason.REFUSED_BY_STORE, False),
]


@pytest.mark.parametrize("case", LEDGER_CASES, ids=lambda c: c.name)
def test_ledger_takes_only_the_held_set(case: LedgerCase) -> None:
    ledger = Ledger("n1", "a", TASKS, 3, holding=Holding("a", TASKS, 1))
    ledger.advance(10)
    block = delta(case.task, 10, "n7")
    assert ledger.wants([descriptor(0, block)]) == ([0] if case.kept else [])
    assert ledger.accept_delta(block) is case.reason
    assert (case.task in ledger.foreign_blocks()) is case.kept


def test_a_miss_swaps_the_held_expert_at_the_next_boundary() -> None:
    ledger = Ledger("n1", "a", TASKS, 3, holding=Holding("a", TASKS, 1))
    ledger.advance(10)
    assert ledger.accept_delta(delta("b", 10, "n7")) is Reason.OK
    ledger.record_route("e", held=False)
    ledger.advance(11)
    assert ledger.held_set() == {"e"}
    assert "b" not in ledger.foreign_blocks()  # dropped: memory stays within the cap
    assert ledger.wants([descriptor(0, delta("e", 11, "n8"))]) == [0]


def test_code_card_crosses_the_wire_checks() -> None:
    """A card (codes, no values, no mask) passes the receiver's decoding and validation."""
    codes = {"c0": from_float32(np.ones(4, dtype=np.float32), "float32")}
    block = delta("b", 10, "n7")
    card = code_card(type(block)(block.version, block.mask_id, "float32", block.layers, codes))
    receiver = Ledger("n1", "a", TASKS, 3, holding=Holding("a", TASKS, 0))
    receiver.advance(10)
    port = LedgerPort(
        receiver, federation_id="f", fingerprint="", block_shapes={}, code_shapes={"c0": (4,)}
    )
    item = encode_items([card])[0]
    assert descriptor_from_proto(descriptor_to_proto(item.descriptor)) == item.descriptor
    check_offered(item.descriptor, current_round=10, staleness_rounds=3, max_bytes=1 << 20)
    expectation = port.expectation("b", item.descriptor.mask_id)
    assert not isinstance(expectation, Reason)
    got = checked_delta(
        b"".join(item.parts),
        item.descriptor,
        expectation,
        current_round=10,
        staleness_rounds=3,
        norm_bound=1.0,
        max_bytes=1 << 20,
    )
    assert receiver.wants([item.descriptor]) == [0]
    assert receiver.accept_delta(got) is Reason.OK
    assert set(receiver.code_cards()) == {"b"}
    assert receiver.foreign_blocks() == {}  # codes only: no expert held (cap 0)
    assert receiver.accept_delta(card) is Reason.OK  # a second copy: nothing to do


@dataclass(frozen=True)
class SpreadCase:
    name: str
    nodes: int
    tasks: int
    cap: int | None
    rounds: int


SPREAD_CASES = [
    SpreadCase("uncapped", 24, 6, None, 8),
    SpreadCase("cap 2 of 5 foreign", 24, 6, 2, 8),
    SpreadCase("cap 0: codes only", 24, 6, 0, 8),
    SpreadCase("cap 1, 10 tasks", 40, 10, 1, 8),
]


@pytest.mark.parametrize("case", SPREAD_CASES, ids=lambda c: c.name)
def test_cap_respected_and_every_code_reaches_every_node(case: SpreadCase) -> None:
    fed = PlannedRounds(case.nodes, case.tasks, layers=1, cap=case.cap)
    limit = case.tasks - 1 if case.cap is None else min(case.cap, case.tasks - 1)
    for round_ in range(1, case.rounds + 1):
        fed.run_round(round_)
        assert max(len(led.foreign_blocks()) for led in fed.ledgers.values()) <= limit
    for ledger in fed.ledgers.values():
        assert set(ledger.code_cards()) == set(fed.tasks), ledger.node_id
        assert len(ledger.foreign_blocks()) == limit, ledger.node_id  # defaults arrived


def _far_node(fed: PlannedRounds, task: str, target: str) -> str:
    """A node of `task` with no link to a node of `target`: the expert must be relayed."""
    tasks = {n: led.task for n, led in fed.ledgers.items()}
    for node, ledger in sorted(fed.ledgers.items()):
        if ledger.task == task and all(tasks[p] != target for p in fed.plan.neighbours(node)):
            return node
    raise AssertionError(f"no node of {task} is away from {target}")


@pytest.mark.parametrize("cap", [1, 2])
def test_wanted_expert_reaches_a_node_through_nodes_without_it(cap: int) -> None:
    fed = PlannedRounds(60, 6, layers=1, cap=cap)
    target = fed.tasks[-1]  # no node holds it by default
    node = _far_node(fed, fed.tasks[2], target)
    wanting = fed.ledgers[node]
    for round_ in range(1, 6):
        fed.run_round(round_)
    assert all(target not in led.foreign_blocks() for led in fed.ledgers.values())
    arrived = None
    for round_ in range(6, 6 + 30):
        held = target in wanting.foreign_blocks()
        wanting.record_route(target, held=held)  # a prompt routed there every round
        if held and arrived is None:
            arrived = round_
        fed.run_round(round_)
    assert arrived is not None, "the wanted expert never arrived"
    assert wanting.holding.misses[target] == arrived - 6
    version = wanting.foreign_blocks()[target].version
    assert version.task == target and version.round >= 6
    # The want stops: after DEMAND_ROUNDS rounds every node is back on its defaults.
    for round_ in range(36, 36 + DEMAND_ROUNDS + 2):
        fed.run_round(round_)
    assert all(target not in led.foreign_blocks() for led in fed.ledgers.values())


def test_wants_and_cards_survive_the_hello_on_the_wire() -> None:
    from solora_node.net.convert import hello_from_proto, hello_to_proto

    ledger = Ledger("n1", "a", TASKS, 3, holding=Holding("a", TASKS, 2))
    ledger.advance(10)
    ledger.record_route("e", held=False)
    codes = {"c0": from_float32(np.ones(4, dtype=np.float32), "float32")}
    block = delta("b", 10, "n7")
    ledger.accept_delta(code_card(type(block)(block.version, "m", "float32", {}, codes)))
    port = LedgerPort(ledger, federation_id="f", fingerprint="", block_shapes={})
    hello = hello_from_proto(hello_to_proto(port.hello()))
    assert hello.held == port.hello().held
    peer = Holding("c", TASKS, 2)
    peer.note_wants(hello.held)
    assert peer.held_set(10) == {"e", "a"}  # the relayed wish first, then a default


@pytest.mark.parametrize(
    ("name", "task", "with_codes", "reason"),
    [
        ("a card of another task is taken", "b", True, Reason.OK),
        ("a card without codes is refused", "b", False, Reason.REFUSED_BY_STORE),
        ("a card of the own task is refused", "a", True, Reason.REFUSED_BY_STORE),
    ],
)
def test_code_card_policy(name: str, task: str, with_codes: bool, reason: Reason) -> None:
    codes = {"c0": from_float32(np.ones(4, dtype=np.float32), "float32")} if with_codes else {}
    block = delta(task, 10, "n7")
    card = code_card(type(block)(block.version, "m", "float32", {}, codes))
    ledger = Ledger("n1", "a", TASKS, 3, holding=Holding("a", TASKS, 1))
    assert ledger.accept_delta(card) is reason
    assert (task in ledger.code_cards()) is (reason is Reason.OK)
