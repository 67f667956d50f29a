"""The one order of block versions: which copy of a block is the freshest, which is stale.

A version is (task, round, origin). Later rounds win; at equal rounds the lower origin
id wins, only so that every node picks the same copy without coordination. The ledger,
the round step and the simulator all compare versions here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar, cast


class HasRound(Protocol):
    @property
    def round(self) -> int: ...


class Versioned(HasRound, Protocol):
    """What the ordering needs of a version (payload.BlockVersion has it)."""

    @property
    def task(self) -> str: ...

    @property
    def origin(self) -> str: ...


T = TypeVar("T")


def newer(a: Versioned, b: Versioned | None) -> bool:
    """True when `a` replaces `b`: a later round, or the same round from a lower origin id."""
    if b is None:
        return True
    return a.round > b.round or (a.round == b.round and a.origin < b.origin)


def within_staleness(round_: int, current_round: int, k: int) -> bool:
    """Bounded staleness: a copy at most `k` rounds behind `current_round` (ahead is fine).

    Rounds are not globally synchronised: a faster peer's state is not stale.
    """
    if k < 0:
        raise ValueError(f"staleness bound k must be >= 0, got {k}")
    return current_round - round_ <= k


def fresh(
    versions: Iterable[T], current_round: int, k: int, key: Callable[[T], HasRound] | None = None
) -> list[T]:
    """The items whose version is within the staleness bound; `key` maps an item to it."""
    get = key if key is not None else cast(Callable[[T], HasRound], _identity)
    return [item for item in versions if within_staleness(get(item).round, current_round, k)]


def freshest(versions: Iterable[T], key: Callable[[T], Versioned] | None = None) -> dict[str, T]:
    """Per task, the item with the newest version (see `newer`).

    Relayed copies of another task's block are versions of one state, so the newest
    replaces the older: no averaging across them.
    """
    get = key if key is not None else cast(Callable[[T], Versioned], _identity)
    best: dict[str, T] = {}
    for item in versions:
        task = get(item).task
        held = best.get(task)
        if held is None or newer(get(item), get(held)):
            best[task] = item
    return best


def _identity(item: object) -> object:
    return item
