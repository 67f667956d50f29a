"""The one order of block versions: which copy is newer, which is stale."""

from __future__ import annotations

import pytest

from solora_node.federation.versions import newer, within_staleness
from solora_node.protocol.blocks import BlockVersion


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


def test_newer_is_a_strict_total_order_on_versions_of_a_task() -> None:
    versions = [BlockVersion("t", r, o) for r in (1, 2) for o in ("b", "a", "ab")]
    for a in versions:
        for b in versions:
            assert newer(a, b) + newer(b, a) + (a == b) == 1, (a, b)


def test_within_staleness() -> None:
    assert within_staleness(5, current_round=8, k=3)
    assert not within_staleness(4, current_round=8, k=3)
    assert within_staleness(9, current_round=8, k=0)  # a peer ahead is not stale
    with pytest.raises(ValueError):
        within_staleness(1, 1, -1)
