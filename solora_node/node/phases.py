"""Start-up phases of a node, each logged when it begins and with the time it took.

A node needs 8-18 s on an edge box before it serves (model, adapter, data, ports); an
operator watching `journalctl -f` should see which phase it is in, not silence.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger("solora_node.node.phases")


class StartupPhases:
    """`with phases.phase("loading model"): ...` logs the phase and its duration."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, what: str) -> Iterator[None]:
        log.info("start-up: %s ...", what)
        started = time.monotonic()
        yield
        took = time.monotonic() - started
        self.seconds[what] = took
        log.info("start-up: %s took %.2f s", what, took)

    def finished(self) -> float:
        """Log the total and one line with every phase's time; returns the total seconds."""
        total = time.monotonic() - self.began
        parts = ", ".join(f"{what} {took:.2f} s" for what, took in self.seconds.items())
        log.info("start-up: serving after %.2f s (%s)", total, parts)
        return total
