"""Round pacing: the minimum interval and the checkpoint triggers (rounds or seconds)."""

from __future__ import annotations

from solora_node.node.pacing import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rest_fills_the_minimum_interval_and_never_goes_negative() -> None:
    clock = FakeClock()
    pacer = Pacer(min_interval_s=2.0, clock=clock)
    started = clock.now
    clock.now += 0.5
    assert pacer.rest_after(started) == 1.5
    clock.now += 5
    assert pacer.rest_after(started) == 0.0
    assert Pacer(min_interval_s=0.0, clock=clock).rest_after(started) == 0.0


def test_checkpoint_every_n_rounds_or_s_seconds_whichever_first() -> None:
    clock = FakeClock()
    pacer = Pacer(checkpoint_every_rounds=3, checkpoint_every_s=10.0, clock=clock)
    assert pacer.checkpoint_due(5)  # the first round of a run
    pacer.checkpointed(5)
    assert not pacer.checkpoint_due(6) and not pacer.checkpoint_due(7)
    assert pacer.checkpoint_due(8)  # 3 rounds
    clock.now += 10.0
    assert pacer.checkpoint_due(6)  # 10 seconds
    pacer.checkpointed(6)
    assert not pacer.checkpoint_due(7)


def test_a_disabled_trigger_never_fires() -> None:
    clock = FakeClock()
    by_time = Pacer(checkpoint_every_rounds=None, checkpoint_every_s=5.0, clock=clock)
    by_time.checkpointed(1)
    assert not by_time.checkpoint_due(1000)
    clock.now += 5
    assert by_time.checkpoint_due(2)
    by_rounds = Pacer(checkpoint_every_rounds=2, checkpoint_every_s=None, clock=clock)
    by_rounds.checkpointed(1)
    clock.now += 1e6
    assert not by_rounds.checkpoint_due(2) and by_rounds.checkpoint_due(3)
