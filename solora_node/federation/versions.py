"""The one order of block versions: which copy of a block is the freshest, which is stale.

A version is (task, round, origin, incarnation). Copies of one origin from different
process lives (incarnations, the process's start time) are ordered by incarnation
whatever their rounds: a node restarted without its state starts again at round 0 and
must still replace its old life's blocks. Otherwise later rounds win; at equal rounds the
lower origin id wins, only so that every node picks the same copy without coordination.
Incarnation 0 means "unknown" (an older peer) and falls back to the round order. The ledger,
the round step and the simulator all compare versions here and nowhere else.
"""

from __future__ import annotations

from typing import Protocol


class HasRound(Protocol):
    @property
    def round(self) -> int: ...


class Versioned(HasRound, Protocol):
    """What the ordering needs of a version (payload.BlockVersion has it)."""

    @property
    def task(self) -> str: ...

    @property
    def origin(self) -> str: ...

    @property
    def incarnation(self) -> int: ...


def newer(a: Versioned, b: Versioned | None) -> bool:
    """True when `a` replaces `b`: a later life of the same origin, else a later round, or
    the same round from a lower origin id."""
    if b is None:
        return True
    if a.origin == b.origin and a.incarnation and b.incarnation and a.incarnation != b.incarnation:
        return a.incarnation > b.incarnation
    return a.round > b.round or (a.round == b.round and a.origin < b.origin)


def within_staleness(round_: int, current_round: int, k: int) -> bool:
    """Bounded staleness: a copy at most `k` rounds behind `current_round` (ahead is fine).

    Rounds are not globally synchronised: a faster peer's state is not stale.
    """
    if k < 0:
        raise ValueError(f"staleness bound k must be >= 0, got {k}")
    return current_round - round_ <= k
