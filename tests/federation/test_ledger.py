"""The ledger's policy, table by table: what it accepts or refuses and why, what it wants
from an offer, what it offers and relays, stale and replayed versions, restarts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from solora_node.federation.ledger import MAX_MASKS, Ledger
from solora_node.federation.round import next_round
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord
from solora_node.protocol.reasons import Reason
from tests.federation.blocks import TASKS, delta, descriptor, mask

# Node "n2" trains task "a" under mask "m" at round 10 (staleness 3); "n1" is its head.
STALENESS = 3


def member(*, agreement: bool = True, head: str = "n1", round_: int = 10) -> Ledger:
    ledger = Ledger("n2", "a", TASKS, STALENESS, mask_agreement=agreement)
    ledger.set_head(head)
    ledger.train_under(mask("a", "m"))
    ledger.remember_mask(mask("a", "other"))
    ledger.publish(delta("a", round_, "n2"), mask("a", "m"))
    return ledger


@dataclass(frozen=True)
class Case:
    name: str
    block: BlockDelta
    reason: Reason
    held: bool  # the block is in the ledger afterwards
    setup: Callable[[Ledger], object] = lambda ledger: None
    agreement: bool = True
    head: str = "n1"


CASES = [
    Case("fresh neighbour block", delta("a", 10, "n3"), Reason.OK, True),
    Case("a neighbour ahead of us", delta("a", 14, "n3"), Reason.OK, True),
    Case("oldest round still fresh", delta("a", 7, "n3"), Reason.OK, True),
    Case("stale: beyond the bound", delta("a", 6, "n3"), Reason.STALE_ROUND, False),
    Case("unknown task", delta("zzz", 10, "n3"), Reason.UNKNOWN_TASK, False),
    Case("own block echoed back", delta("a", 11, "n2"), Reason.REFUSED_BY_STORE, False),
    Case(
        "replay of an older version than held",
        delta("a", 8, "n3"),
        Reason.STALE_ROUND,
        False,
        setup=lambda ledger: ledger.accept_delta(delta("a", 9, "n3")),
    ),
    Case(
        "replay of a version already averaged in",
        delta("a", 9, "n3"),
        Reason.STALE_ROUND,
        False,
        setup=lambda ledger: (ledger.accept_delta(delta("a", 9, "n3")), ledger.merged(["n3"])),
    ),
    Case(
        "the same version again through another path",
        delta("a", 9, "n3"),
        Reason.OK,
        True,
        setup=lambda ledger: ledger.accept_delta(delta("a", 9, "n3")),
    ),
    Case(
        "non-head under a foreign mask", delta("a", 10, "n3", "other"), Reason.MASK_MISMATCH, False
    ),
    Case(
        "head under a foreign mask: held, adopted later",
        delta("a", 10, "n1", "other"),
        Reason.OK,
        True,
    ),
    Case(
        "head under a mask never received",
        delta("a", 10, "n1", "nope"),
        Reason.MASK_MISMATCH,
        False,
    ),
    Case("we are the head", delta("a", 10, "n3", "other"), Reason.MASK_MISMATCH, False, head="n2"),
    Case("no agreement: any mask", delta("a", 10, "n3", "other"), Reason.OK, True, agreement=False),
    Case("foreign expert", delta("b", 10, "n5"), Reason.OK, True),
    Case("foreign expert from far behind (no staleness)", delta("b", 1, "n5"), Reason.OK, True),
    Case(
        "foreign expert older than held: kept the held one",
        delta("b", 4, "n5"),
        Reason.OK,
        False,
        setup=lambda ledger: ledger.accept_delta(delta("b", 5, "n6")),
    ),
    Case(
        "foreign expert, same round, lower origin: replaces",
        delta("b", 5, "n0"),
        Reason.OK,
        True,
        setup=lambda ledger: ledger.accept_delta(delta("b", 5, "n6")),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_accept_or_refuse(case: Case) -> None:
    ledger = member(agreement=case.agreement, head=case.head)
    case.setup(ledger)
    assert ledger.accept_delta(case.block) is case.reason
    held = {(b.version, b.mask_id) for b in ledger.held()}
    assert ((case.block.version, case.block.mask_id) in held) is case.held


def test_head_block_under_another_mask_makes_it_pending_once() -> None:
    ledger = member()
    assert ledger.take_pending_mask() is None
    assert ledger.accept_delta(delta("a", 10, "n1", "other")) is Reason.OK
    pending = ledger.take_pending_mask()
    assert pending is not None and pending.mask_id == "other"
    assert ledger.take_pending_mask() is None


def test_foreign_installer_refusal_keeps_nothing() -> None:
    seen: list[tuple[BlockDelta, MaskRecord | None]] = []

    def refuse(block: BlockDelta, record: MaskRecord | None) -> Reason:
        seen.append((block, record))
        return Reason.REFUSED_BY_STORE

    ledger = Ledger("n2", "a", TASKS, STALENESS, installer=refuse)
    ledger.remember_mask(mask("b", "mb"))
    assert ledger.accept_delta(delta("b", 3, "n5", "mb")) is Reason.REFUSED_BY_STORE
    assert ledger.foreign_blocks() == {}
    assert seen[0][1] is not None and seen[0][1].mask_id == "mb"  # the installer got the mask


def test_accept_mask_of_unknown_task() -> None:
    ledger = member()
    assert ledger.accept_mask(mask("zzz", "q")) is Reason.UNKNOWN_TASK
    assert ledger.accept_mask(mask("b", "q")) is Reason.OK and ledger.mask("q") is not None


def test_masks_are_bounded() -> None:
    ledger = member()
    for k in range(MAX_MASKS + 5):
        ledger.remember_mask(mask("a", f"x{k}"))
    assert ledger.mask("x0") is None and ledger.mask(f"x{MAX_MASKS + 4}") is not None


# -- wants ---------------------------------------------------------------------------------

WANTS = [
    (
        "new neighbour block and its unknown mask",
        [mask("a", "q"), delta("a", 10, "n3", "q")],
        [0, 1],
    ),
    ("known mask is not asked for again", [mask("a", "m"), delta("a", 10, "n3")], [1]),
    ("mask without a wanted block", [mask("a", "q"), delta("a", 2, "n3", "q")], []),
    ("own block", [delta("a", 10, "n2")], []),
    ("unknown task", [delta("zzz", 10, "n3")], []),
    ("foreign expert", [delta("b", 1, "n5")], [0]),
]


@pytest.mark.parametrize(("name", "items", "wanted"), WANTS, ids=[w[0] for w in WANTS])
def test_wants(name: str, items: list[BlockDelta | MaskRecord], wanted: list[int]) -> None:
    ledger = member()
    assert list(ledger.wants([descriptor(k, item) for k, item in enumerate(items)])) == wanted


def test_wants_nothing_it_holds_or_averaged_in() -> None:
    ledger = member()
    ledger.accept_delta(delta("a", 9, "n3"))
    ledger.accept_delta(delta("b", 9, "n5"))
    assert not ledger.wants_delta(BlockVersion("a", 9, "n3"))  # held
    assert ledger.wants_delta(BlockVersion("a", 10, "n3"))  # newer
    assert not ledger.wants_delta(BlockVersion("b", 8, "n5"))  # older foreign
    assert not ledger.wants_delta(BlockVersion("b", 9, "n6"))  # same round, higher origin
    ledger.merged(["n3"])
    assert not ledger.wants_delta(BlockVersion("a", 9, "n3"))  # relayed back after averaging


# -- offers and relays ---------------------------------------------------------------------


def test_offer_skips_what_the_peer_holds_and_staler_foreign_copies() -> None:
    ledger = member()
    ledger.accept_delta(delta("b", 9, "n5"))
    own = BlockVersion("a", 10, "n2")
    assert [d.version for d in ledger.offer("c", [])] == [own, BlockVersion("b", 9, "n5")]
    assert [d.version for d in ledger.offer("c", [own])] == [BlockVersion("b", 9, "n5")]
    # The peer holds a fresher "b" expert: not offered; a staler one: offered.
    assert [d.version for d in ledger.offer("c", [own, BlockVersion("b", 9, "n4")])] == []
    assert len(ledger.offer("c", [own, BlockVersion("b", 8, "n0")])) == 1
    # A peer of task "b" gets its own task's block even if it holds a fresher one of it:
    # it decides (per origin) itself.
    assert len(ledger.offer("b", [own, BlockVersion("b", 12, "n4")])) == 1


def test_freshest_foreign_expert_is_relayed_along_a_chain() -> None:
    # x(a) -- y(b) -- z(c): z learns x's expert through y, and the freshest copy wins.
    x, y, z = (Ledger(n, t, TASKS, STALENESS) for n, t in (("x", "a"), ("y", "b"), ("z", "c")))
    x.publish(delta("a", 4, "x"))
    for sender, receiver in ((x, y), (y, z)):
        for block in sender.offer(receiver.task, [v for v, _ in receiver.held_versions()]):
            assert receiver.accept_delta(block) is Reason.OK
    assert z.foreign_blocks()["a"].version == BlockVersion("a", 4, "x")
    # An older copy arriving later does not replace it; z offers y nothing it holds.
    assert z.accept_delta(delta("a", 3, "w")) is Reason.OK
    assert z.foreign_blocks()["a"].version.round == 4
    assert z.offer("b", [v for v, _ in y.held_versions()]) == []


# -- rounds and restarts -------------------------------------------------------------------


def test_a_restarted_peer_catches_up_and_its_replays_are_refused() -> None:
    ledger = member(round_=10)
    assert ledger.accept_delta(delta("a", 9, "n3")) is Reason.OK
    ledger.merged(["n3"])
    # n3 restarts from an older checkpoint (round 8) and republishes round 9: a replay.
    assert ledger.accept_delta(delta("a", 9, "n3")) is Reason.STALE_ROUND
    restarted = Ledger("n3", "a", TASKS, STALENESS)
    restarted.train_under(mask("a", "m"))
    restarted.advance(8)
    # It hears our round-10 block and jumps to our round instead of lagging behind.
    assert restarted.accept_delta(delta("a", 10, "n2")) is Reason.OK
    assert next_round(restarted) == 10
    assert ledger.accept_delta(delta("a", 11, "n3")) is Reason.OK


def test_mask_candidate_prefers_the_head_then_lowest_origin() -> None:
    ledger = Ledger("n9", "a", TASKS, STALENESS)  # not calibrated yet: takes any mask
    ledger.set_head("n5")
    for origin, mask_id in (("n1", "m1"), ("n5", "m5"), ("n3", "m3")):
        ledger.remember_mask(mask("a", mask_id))
        assert ledger.accept_delta(delta("a", 1, origin, mask_id)) is Reason.OK
    assert ledger.fresh_cluster_blocks(1) == {}  # nothing to average before a mask
    candidate = ledger.cluster_mask_candidate()
    assert candidate is not None and candidate.mask_id == "m5"
    ledger.set_head("n7")  # the head sent nothing yet: the lowest origin's mask
    candidate = ledger.cluster_mask_candidate()
    assert candidate is not None and candidate.mask_id == "m1"


def test_fresh_cluster_blocks_filter_mask_and_staleness() -> None:
    ledger = member(head="n3")
    ledger.accept_delta(delta("a", 10, "n3", "other"))  # the head's: pending, held
    ledger.accept_delta(delta("a", 8, "n4"))
    assert set(ledger.fresh_cluster_blocks(10)) == {"n4"}  # n3 is under another mask
    assert set(ledger.fresh_cluster_blocks(12)) == set()  # n4 is now stale
