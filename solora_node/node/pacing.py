"""Round pacing: how soon the next round may start and when a round is checkpointed.

Rounds on a small model finish in a fraction of a second; run back to back they keep a
core busy and fsync a checkpoint several times a second with little to learn. A node
therefore waits out a minimum round interval and checkpoints every N rounds or S seconds,
whichever comes first (docs/operations.md, "Pacing"); a graceful stop always checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Pacer:
    """The pacing state of one node; `clock` is injectable for tests."""

    min_interval_s: float = 0.0
    checkpoint_every_rounds: int | None = 1
    checkpoint_every_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    _last_checkpoint_round: int | None = field(default=None, init=False)
    _last_checkpoint_at: float = field(default=0.0, init=False)
    last_checkpoint_unix: float | None = field(default=None, init=False)  # for the node page

    def __post_init__(self) -> None:
        self._last_checkpoint_at = self.clock()

    def describe(self) -> str:
        """The checkpoint policy in words, for the node page."""
        triggers = []
        if self.checkpoint_every_rounds is not None:
            triggers.append(f"every {self.checkpoint_every_rounds} rounds")
        if self.checkpoint_every_s is not None:
            triggers.append(f"every {self.checkpoint_every_s:g} s")
        return " or ".join(triggers) or "only at a graceful stop"

    def rest_after(self, round_started: float) -> float:
        """Seconds to wait before the next round, given when this one started."""
        return max(0.0, self.min_interval_s - (self.clock() - round_started))

    def checkpoint_due(self, round_: int) -> bool:
        """True when enough rounds or seconds passed since the last checkpoint (or none yet)."""
        if self._last_checkpoint_round is None:
            return True  # the first round of a run: a resumable state exists from the start
        rounds = self.checkpoint_every_rounds
        if rounds is not None and round_ - self._last_checkpoint_round >= rounds:
            return True
        seconds = self.checkpoint_every_s
        return seconds is not None and self.clock() - self._last_checkpoint_at >= seconds

    @property
    def last_checkpoint_round(self) -> int | None:
        return self._last_checkpoint_round

    def checkpointed(self, round_: int) -> None:
        self._last_checkpoint_round = round_
        self._last_checkpoint_at = self.clock()
        self.last_checkpoint_unix = time.time()
