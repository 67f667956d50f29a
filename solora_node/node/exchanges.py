"""Exchanges that run in the background while the next round trains.

With `rounds.overlap_exchange` (the default) a round boundary starts one exchange per
neighbour and the loop goes straight back to training; what the exchanges bring in is
averaged at the next boundary (one round staler, inside `topology.staleness_rounds`).
A neighbour whose previous exchange is still running (a slow or lossy link) is skipped
until it finishes, so a slow link never makes a node wait, and never piles up streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from solora_node.protocol import messages as wire

Exchange = Callable[[str, str], Awaitable[wire.ExchangeResult]]  # (address, node id)
Record = Callable[[list[wire.ExchangeResult]], None]


class BackgroundExchanges:
    """At most one running exchange per neighbour; results go to `record` as they end."""

    def __init__(self, exchange: Exchange, record: Record) -> None:
        self._exchange = exchange
        self._record = record
        self._running: dict[str, asyncio.Task[None]] = {}
        self.skipped = 0  # boundaries at which a neighbour was still busy (for tests, logs)

    def start(self, neighbours: dict[str, str]) -> int:
        """Start an exchange with each (node id -> address) neighbour not already busy;
        returns how many were started."""
        self._running = {p: t for p, t in self._running.items() if not t.done()}
        started = 0
        for peer_id, address in neighbours.items():
            if peer_id in self._running:
                self.skipped += 1
                continue
            self._running[peer_id] = asyncio.create_task(
                self._one(address, peer_id), name=f"exchange-{peer_id}"
            )
            started += 1
        return started

    async def _one(self, address: str, peer_id: str) -> None:
        result = await self._exchange(address, peer_id)
        self._record([result])

    @property
    def busy(self) -> int:
        return sum(not t.done() for t in self._running.values())

    async def finish(self, *, cancel: bool) -> None:
        """Wait for the running exchanges (each bounded by its deadline) or cancel them."""
        tasks = [t for t in self._running.values() if not t.done()]
        if cancel:
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
