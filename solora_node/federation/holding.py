"""Which other tasks' experts a node holds when their number is capped (docs/scale.md).

`federation.max_foreign_experts` bounds the foreign experts a node holds, wants, accepts
and relays, so its bytes per round and its memory stop growing with the number of tasks.
This module is the one place that decides which ones; the ledger asks it, and the daemon
and the simulator both drive a ledger. Pure: rounds are passed in, nothing is read.

The held set, at most `cap` tasks other than the node's own, in this order of priority:

1. its own demand: tasks its routing sent prompts to within the last `demand_rounds`
   rounds (most recent first), whether it held them (a hit) or not (a miss: the node
   wants that expert from the next exchange on);
2. its neighbours' demand: tasks a neighbour asked for (a want in its Hello, below)
   within the last `demand_rounds` rounds. Taking these is what carries an expert to a
   node that wants it across nodes that have no use for it themselves: each node on the
   way holds it while the demand lasts;
3. defaults while there is room: the federation's tasks in their configured order (own
   task skipped). Every node picks the same ones without coordination (a node of a
   default task takes the next one instead of its own), so each default expert is held
   by every other node and spreads through any path without anyone asking for it.

Wants travel in the Hello's list of held blocks as markers with no origin and no mask
(`want_marker`); their round is the round of the demand, so peers can tell how fresh it
is. Defaults are not advertised: every node holds the same ones. A demand is relayed with
its original round, never a newer one, so a want nobody renews dies out after
`demand_rounds` rounds wherever it went (no two nodes can keep each other's wish alive).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

from solora_node.protocol.blocks import BlockVersion
from solora_node.protocol.messages import HeldBlock

DEMAND_ROUNDS = 10  # a prompt's wish for an expert lasts this many rounds unless renewed

WANT_ORIGIN = ""  # no node id is empty (config NODE_ID_PATTERN): marks a want, not a block
# (federation/cards.py relies on it: a code card always names its origin)


def want_marker(task: str, round_: int) -> HeldBlock:
    """A want for `task` in a Hello: demand of round `round_` (>= 1)."""
    return HeldBlock(version=BlockVersion(task=task, round=round_, origin=WANT_ORIGIN), mask_id="")


def is_want(entry: HeldBlock) -> bool:
    return entry.version.origin == WANT_ORIGIN


def validate_cap(cap: int | None) -> int | None:
    """The configured cap, or a one-line error naming what is expected."""
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
        raise ValueError(f"max_foreign_experts must be an integer >= 0 or null, got {cap!r}")
    return cap


class Holding:
    """The held set of one node of `task` among `tasks`, and the demand it follows."""

    def __init__(
        self,
        task: str,
        tasks: Sequence[str],
        cap: int | None,
        *,
        demand_rounds: int = DEMAND_ROUNDS,
    ) -> None:
        if demand_rounds < 1:
            raise ValueError(f"demand_rounds must be >= 1, got {demand_rounds}")
        self.task = task
        self.foreign = [t for t in dict.fromkeys(tasks) if t != task]  # configured order
        self.cap = validate_cap(cap)
        self.demand_rounds = demand_rounds
        self._used: dict[str, int] = {}  # task -> last round own routing sent a prompt to it
        self._asked: dict[str, int] = {}  # task -> freshest demand round a neighbour relayed
        self.misses: collections.Counter[str] = collections.Counter()

    @property
    def capped(self) -> bool:
        return self.cap is not None and self.cap < len(self.foreign)

    # ------------------------------------------------------------------ demand

    def record_route(self, task: str, round_: int, *, held: bool) -> None:
        """Own routing sent a prompt to `task` at `round_`; a miss if its expert is not held."""
        if task not in self.foreign:
            return  # own task, or one the federation does not have
        self._used[task] = max(self._used.get(task, 0), max(round_, 1))
        if not held:
            self.misses[task] += 1

    def note_wants(self, entries: Iterable[HeldBlock]) -> None:
        """A neighbour's Hello: keep the freshest demand round of each task it wants."""
        for entry in entries:
            v = entry.version
            if is_want(entry) and v.round >= 1 and v.task in self.foreign:
                self._asked[v.task] = max(self._asked.get(v.task, 0), v.round)

    def _live(self, demand: Mapping[str, int], round_: int) -> list[str]:
        """Tasks with demand no older than demand_rounds, most recent first, then by id."""
        live = [t for t, r in demand.items() if round_ - r < self.demand_rounds]
        return sorted(live, key=lambda t: (-demand[t], t))

    def held_set(self, round_: int) -> frozenset[str]:
        """The foreign tasks this node holds at `round_` (all of them when uncapped)."""
        if not self.capped:
            return frozenset(self.foreign)
        assert self.cap is not None
        ranked = [*self._live(self._used, round_), *self._live(self._asked, round_), *self.foreign]
        return frozenset(list(dict.fromkeys(ranked))[: self.cap])

    def wants(self, round_: int) -> dict[str, int]:
        """The demand to advertise: per held task with live demand, its freshest round.

        Only capped nodes ask (an uncapped node holds everything and asks nothing); held
        defaults are not advertised (every node holds the same ones: nothing to relay)."""
        if not self.capped:
            return {}
        held = self.held_set(round_)
        out: dict[str, int] = {}
        for demand in (self._asked, self._used):
            for task, r in demand.items():
                if task in held and round_ - r < self.demand_rounds:
                    out[task] = max(out.get(task, 0), r)
        return out

    def forget(self, round_: int) -> None:
        """Drop demand too old to matter (keeps the maps bounded by the task count anyway)."""
        for demand in (self._used, self._asked):
            for task in [t for t, r in demand.items() if round_ - r >= self.demand_rounds]:
                del demand[task]
