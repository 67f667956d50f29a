"""The one order of block versions: newer, bounded staleness, freshest per task."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from solora_node.adapter.payload import BlockVersion
from solora_node.federation.versions import fresh, freshest, newer, within_staleness


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (BlockVersion("t", 2, "dev-09"), BlockVersion("t", 1, "dev-00"), True),  # later round
        (BlockVersion("t", 2, "dev-00"), BlockVersion("t", 2, "dev-01"), True),  # lower origin
        (BlockVersion("t", 2, "dev-01"), BlockVersion("t", 2, "dev-00"), False),
        (BlockVersion("t", 2, "a"), BlockVersion("t", 2, "a"), False),  # the same version
        (BlockVersion("t", 2, "a"), BlockVersion("t", 2, "ab"), True),  # a prefix is lower
        (BlockVersion("t", 1, "x"), None, True),
    ],
)
def test_newer_is_later_round_then_lower_origin(
    a: BlockVersion, b: BlockVersion | None, expected: bool
) -> None:
    assert newer(a, b) is expected


def test_newer_and_freshest_agree() -> None:
    versions = [BlockVersion("t", r, o) for r in (1, 2) for o in ("b", "a", "ab")]
    best = freshest(versions)["t"]
    assert all(not newer(v, best) for v in versions)


def test_within_staleness() -> None:
    assert within_staleness(5, current_round=8, k=3)
    assert not within_staleness(4, current_round=8, k=3)
    assert within_staleness(9, current_round=8, k=0)  # a peer ahead is not stale
    with pytest.raises(ValueError):
        within_staleness(1, 1, -1)


def test_fresh_applies_bounded_staleness() -> None:
    versions = [BlockVersion("t", r, "a") for r in (3, 5, 7, 8, 9)]
    assert [v.round for v in fresh(versions, current_round=8, k=2)] == [7, 8, 9]
    assert [v.round for v in fresh(versions, current_round=8, k=0)] == [8, 9]  # ahead is kept
    with pytest.raises(ValueError):
        fresh(versions, 8, -1)


@dataclass(frozen=True)
class Delta:
    version: BlockVersion
    payload: str


def test_fresh_and_freshest_with_key() -> None:
    deltas = [Delta(BlockVersion("t", 4, "b"), "x"), Delta(BlockVersion("t", 1, "a"), "y")]
    assert [d.payload for d in fresh(deltas, 5, 2, key=lambda d: d.version)] == ["x"]
    assert freshest(deltas, key=lambda d: d.version)["t"].payload == "x"


def test_freshest_picks_newest_per_task_with_deterministic_ties() -> None:
    versions = [
        BlockVersion("topic", 4, "n7"),
        BlockVersion("topic", 6, "n9"),
        BlockVersion("topic", 6, "n3"),
        BlockVersion("code", 2, "n1"),
        BlockVersion("code", 1, "n0"),
    ]
    best = freshest(versions)
    assert best == {"topic": BlockVersion("topic", 6, "n3"), "code": BlockVersion("code", 2, "n1")}
    assert freshest(list(reversed(versions))) == best
    assert freshest([]) == {}
