"""The compute meter (node/compute.py) and background exchanges (node/exchanges.py)."""

from __future__ import annotations

import asyncio

import pytest

from solora_node.node.compute import ComputeMeter
from solora_node.node.exchanges import BackgroundExchanges
from solora_node.protocol import messages as wire
from solora_node.protocol.reasons import Reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_utilisation_is_training_time_over_the_window() -> None:
    clock = Clock()
    meter = ComputeMeter(window_s=10.0, clock=clock)
    with meter.training():
        clock.now += 3.0
    clock.now += 1.0  # idle
    assert meter.total_s == pytest.approx(3.0)
    assert meter.last_span_s == pytest.approx(3.0)
    assert meter.utilisation() == pytest.approx(3.0 / 4.0)  # since start: shorter than window
    for _ in range(5):
        with meter.training():
            clock.now += 1.5
        clock.now += 0.5
    # The last 10 s hold exactly the five 1.5 s spans (one every 2 s).
    assert meter.utilisation() == pytest.approx(7.5 / 10.0)
    assert meter.total_s == pytest.approx(3.0 + 7.5)


def test_a_running_stretch_counts_before_it_ends() -> None:
    clock = Clock()
    meter = ComputeMeter(window_s=10.0, clock=clock)
    clock.now += 5.0
    with meter.training():
        clock.now += 5.0
        assert meter.utilisation() == pytest.approx(0.5)
        clock.now += 10.0
        assert meter.utilisation() == pytest.approx(1.0)
    assert meter.total_s == pytest.approx(15.0)


def test_a_bad_window_is_refused() -> None:
    with pytest.raises(ValueError, match="compute window must be > 0 seconds"):
        ComputeMeter(window_s=0)


def test_background_exchanges_skip_a_busy_neighbour_and_record_results() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        slow = asyncio.Event()
        recorded: list[str] = []

        async def exchange(address: str, peer: str) -> wire.ExchangeResult:
            if peer == "slow":
                await slow.wait()
            return wire.ExchangeResult(peer=peer, round=1, reason=Reason.OK)

        ex = BackgroundExchanges(exchange, lambda rs: recorded.extend(r.peer for r in rs))
        assert ex.start({"fast": "a:1", "slow": "b:1"}) == 2
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # The slow link is still busy: only the fast neighbour gets a new exchange.
        assert ex.start({"fast": "a:1", "slow": "b:1"}) == 1
        skipped = ex.skipped
        slow.set()
        await ex.finish(cancel=False)
        return recorded, skipped, ex.busy

    recorded, skipped, busy = asyncio.run(scenario())
    assert sorted(recorded) == ["fast", "fast", "slow"]
    assert skipped == 1
    assert busy == 0


def test_background_exchanges_cancel_on_stop() -> None:
    async def scenario() -> list[str]:
        recorded: list[str] = []

        async def exchange(address: str, peer: str) -> wire.ExchangeResult:
            await asyncio.sleep(60)
            return wire.ExchangeResult(peer=peer, round=1, reason=Reason.OK)

        ex = BackgroundExchanges(exchange, lambda rs: recorded.extend(r.peer for r in rs))
        ex.start({"p": "a:1"})
        await asyncio.sleep(0)
        await asyncio.wait_for(ex.finish(cancel=True), 5)
        return recorded

    assert asyncio.run(scenario()) == []
